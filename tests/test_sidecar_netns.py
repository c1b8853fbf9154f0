"""`meshwrap sidecar-init` and `meshwrap sidecar` in a network namespace the
test makes (`ip netns add`), standing in for a pod's: no container engine
needed, so this runs wherever the tests run as root. The podman pod test
(test_sidecar_pod.py) covers the same front door as a real pod.

Network safety: the namespace has only loopback and the TUN; every address
used is inside it (fake addresses, 127.0.0.1).
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import _default_bin

BIN = _default_bin()
OWNER = 1337

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="needs root and iproute2 to make a network namespace")

RULES = """\
unmatched: refuse
services:
  - name: api
    match: { host: api.side.test }
    http:
      routes:
        - when: { path: /hello }
          respond: { body: "hello from the sidecar\\n" }
"""


def sh(*cmd, check=True, timeout=30, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


class Netns:
    def __init__(self):
        self.name = f"mwside-{uuid.uuid4().hex[:6]}"
        sh("ip", "netns", "add", self.name)
        self.ns("ip", "link", "set", "lo", "up")
        self.procs = []

    def _prefix(self, as_user):
        """Enters the namespace, as root or as `as_user` with no capabilities."""
        prefix = ["ip", "netns", "exec", self.name]
        if as_user is not None:
            prefix += ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups",
                       "--inh-caps=-all", "--bounding-set=-all"]
        return prefix

    def ns(self, *cmd, check=True, timeout=30, as_user=None):
        return sh(*self._prefix(as_user), *cmd, check=check, timeout=timeout)

    def spawn(self, *cmd, as_user, stdout, stderr):
        p = subprocess.Popen([*self._prefix(as_user), *cmd], stdout=stdout, stderr=stderr)
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def netns():
    n = Netns()
    yield n
    n.close()


@pytest.fixture
def tmp_path():
    """A directory the sidecar's uid may read and write (pytest's own
    tmp_path lies under a 0700 directory of root's)."""
    d = Path(tempfile.mkdtemp(prefix="mwside-"))
    os.chown(d, OWNER, OWNER)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def rules_file(tmp_path):
    p = tmp_path / "rules.yaml"
    p.write_text(RULES)
    p.chmod(0o644)
    return p


def rules_of(netns, family="-4"):
    return [line for line in netns.ns("ip", family, "rule").stdout.splitlines() if line.strip()]


def test_init_installs_routing_and_is_idempotent(netns):
    # A pod's own interface and default route: one end of a veth pair whose
    # other end is in the same namespace (nothing leaves it; only route
    # lookups are made here).
    netns.ns("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer")
    netns.ns("ip", "addr", "add", "192.0.2.7/24", "dev", "eth0")
    netns.ns("ip", "link", "set", "eth0", "up")
    netns.ns("ip", "link", "set", "eth0peer", "up")
    netns.ns("ip", "route", "add", "default", "dev", "eth0")
    r = netns.ns(BIN, "sidecar-init", "--exclude-cidr", "10.96.0.0/12", "--exclude-port", "5432",
                 "--exclude-port", "15000-15010")
    assert "mw0 ready for uid 1337" in r.stderr
    first = rules_of(netns)
    text = "\n".join(first)
    assert "100:\tfrom all uidrange 1337-1337 lookup main" in text
    assert "101:\tfrom all uidrange 1337-1337 unreachable" in text
    assert "120:\tfrom all to 10.96.0.0/12 lookup main" in text
    assert "130:\tfrom all ipproto tcp dport 5432 lookup main" in text
    assert "130:\tfrom all ipproto udp dport 15000-15010 lookup main" in text
    assert "200:\tfrom all lookup 100" in text
    assert "default dev mw0" in netns.ns("ip", "route", "show", "table", "100").stdout
    link = netns.ns("ip", "-d", "link", "show", "mw0").stdout
    assert "persist on user 1337 addrgenmode" in link  # no --group: the uid alone
    assert "mtu 65520" in link
    # A second run (an init container restarted in the same pod) replaces
    # meshwrap's rules instead of adding copies.
    netns.ns(BIN, "sidecar-init", "--exclude-cidr", "10.96.0.0/12", "--exclude-port", "5432",
             "--exclude-port", "15000-15010")
    assert rules_of(netns) == first
    first6 = rules_of(netns, "-6")
    # ... and leaves rules that are not its own alone, even in its range.
    netns.ns("ip", "rule", "add", "pref", "150", "lookup", "main")
    netns.ns(BIN, "sidecar-init", "--exclude-cidr", "10.96.0.0/12", "--exclude-port", "5432",
             "--exclude-port", "15000-15010")
    again = rules_of(netns)
    assert "150:\tfrom all lookup main" in again
    assert [r for r in again if not r.startswith("150:")] == first
    assert rules_of(netns, "-6") == first6
    assert all("proto 109" in r for r in first if r.split(":")[0] in ("100", "101", "110", "120", "130", "200"))
    netns.ns("ip", "rule", "del", "pref", "150")
    assert "110:\tfrom 192.0.2.7 lookup main" in text
    # Excluded destinations, replies from the pod's address and uid 1337
    # keep the main table (the pod's interface); the rest goes to the TUN.
    assert "dev mw0" in netns.ns("ip", "route", "get", "198.18.0.9").stdout
    assert "dev mw0" in netns.ns("ip", "route", "get", "198.18.0.9", "ipproto", "tcp", "dport", "5433").stdout
    for bypass in (["10.96.0.5"], ["198.18.0.9", "ipproto", "tcp", "dport", "5432"],
                   ["198.18.0.9", "ipproto", "udp", "dport", "15005"],
                   ["198.18.0.9", "from", "192.0.2.7"], ["198.18.0.9", "uid", "1337"]):
        r = netns.ns("ip", "route", "get", *bypass)
        assert "dev eth0" in r.stdout, (bypass, r.stdout)


def test_sidecar_serves_the_pod_with_no_capabilities(netns, rules_file, tmp_path):
    netns.ns(BIN, "sidecar-init")
    events = tmp_path / "events.jsonl"
    err = open(tmp_path / "sidecar.err", "w")
    proc = netns.spawn(BIN, "sidecar", "--rules", str(rules_file), "--events", str(events),
                       "--admin", "127.0.0.1:9911", as_user=OWNER, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 20
    while True:
        r = netns.ns("curl", "-sS", "-m", "2", "http://127.0.0.1:9911/readyz", check=False)
        if r.stdout.strip() == "ready":
            break
        assert time.time() < deadline, (tmp_path / "sidecar.err").read_text()
        assert proc.poll() is None, (tmp_path / "sidecar.err").read_text()
        time.sleep(0.2)
    status = Path(f"/proc/{proc.pid}/status").read_text()
    # The Popen pid is setpriv's, which exec'd meshwrap in place.
    assert "CapEff:\t0000000000000000" in status
    # Any process of the namespace other than uid 1337 goes through the TUN.
    out = netns.ns("curl", "-sS", "-m", "10", "http://api.side.test/hello")
    assert out.stdout == "hello from the sidecar\n"
    # IPv6 too: the fake AAAA answer and the TUN's IPv6 address.
    out = netns.ns("curl", "-6", "-sS", "-m", "10", "http://api.side.test/hello")
    assert out.stdout == "hello from the sidecar\n"
    assert "nodad" in netns.ns("ip", "-6", "addr", "show", "dev", "mw0").stdout
    refused = netns.ns("curl", "-sS", "-m", "10", "http://other.side.test/", check=False)
    assert refused.returncode == 7
    # DNS over TCP to an arbitrary resolver address is answered too (a pod
    # asks kube-dns's address, not meshwrap's).
    if shutil.which("dig"):
        ans = netns.ns("dig", "+tcp", "+short", "+time=3", "@10.96.0.10", "api.side.test", "A")
        assert ans.stdout.strip().startswith("198.18.")
    proc.terminate()
    proc.wait(timeout=10)
    assert proc.returncode == 0
    summary = (tmp_path / "sidecar.err").read_text()
    assert "api.side.test:80" in summary and "refused destinations" in summary
    kinds = [json.loads(l)["kind"] for l in events.read_text().splitlines()]
    assert "http" in kinds and "flow" in kinds


def test_sidecar_traffic_of_its_own_uid_cannot_loop(netns):
    """uid 1337's packets use the main table, which has no route here: they
    fail at once ("Network is unreachable") instead of entering the TUN."""
    netns.ns(BIN, "sidecar-init")
    r = netns.ns("curl", "-sS", "-m", "3", "http://198.18.0.9/", check=False, as_user=OWNER)
    assert r.returncode == 7
    assert "unreachable" in r.stderr.lower() or "couldn't connect" in r.stderr.lower()
    route = netns.ns("ip", "route", "get", "198.18.0.9", "uid", str(OWNER), check=False)
    assert "unreachable" in (route.stdout + route.stderr).lower()


def test_sidecar_errors_name_the_fix(netns, rules_file):
    # No TUN yet: the sidecar says to run sidecar-init first.
    r = netns.ns(BIN, "sidecar", "--rules", str(rules_file), check=False, as_user=OWNER)
    assert r.returncode == 2
    assert "does not exist: run `meshwrap sidecar-init --tun mw0` first" in r.stderr
    netns.ns(BIN, "sidecar-init")
    # Another uid may not attach to the TUN.
    r = netns.ns(BIN, "sidecar", "--rules", str(rules_file), check=False, as_user=4242)
    assert r.returncode == 2
    assert "belongs to another user" in r.stderr and "uid 4242" in r.stderr
    # sidecar-init without NET_ADMIN.
    r = netns.ns(BIN, "sidecar-init", "--tun", "mw1", check=False, as_user=OWNER)
    assert r.returncode == 2
    assert "needs CAP_NET_ADMIN" in r.stderr
    # A non-loopback admin address without a token or --admin-read-only.
    r = netns.ns(BIN, "sidecar", "--rules", str(rules_file), "--admin", "0.0.0.0:9912",
                 check=False, as_user=OWNER)
    assert r.returncode == 2
    assert "--admin-read-only" in r.stderr
    # Root as the owner would bypass the TUN and keep every capability.
    r = netns.ns(BIN, "sidecar-init", "--owner", "0", check=False)
    assert r.returncode == 2 and "--owner 0" in r.stderr
    # Bad exclusions are rejected before anything is changed.
    r = netns.ns(BIN, "sidecar-init", "--exclude-cidr", "10.0.0.0/40", check=False)
    assert r.returncode == 2 and "prefix length" in r.stderr


def test_single_container_form_drops_to_the_owner(netns, rules_file, tmp_path):
    err = open(tmp_path / "sidecar.err", "w")
    proc = subprocess.Popen(["ip", "netns", "exec", netns.name, BIN, "sidecar", "--init",
                             "--rules", str(rules_file), "--admin", "127.0.0.1:9913"],
                            stdout=subprocess.DEVNULL, stderr=err)
    netns.procs.append(proc)
    deadline = time.time() + 20
    while True:
        r = netns.ns("curl", "-sS", "-m", "2", "http://127.0.0.1:9913/readyz", check=False)
        if r.stdout.strip() == "ready":
            break
        assert time.time() < deadline and proc.poll() is None, (tmp_path / "sidecar.err").read_text()
        time.sleep(0.2)
    status = Path(f"/proc/{proc.pid}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split() == ["1337"] * 4
    assert fields["Gid"].split() == ["1337"] * 4
    assert fields["Groups"].strip() == ""
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["CapPrm"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    out = netns.ns("curl", "-sS", "-m", "10", "http://api.side.test/hello")
    assert out.stdout == "hello from the sidecar\n"
