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
import sys
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
    # (dig is installed by CI, dnsutils: no tool, no pass.)
    assert shutil.which("dig"), "dig is not installed (Debian dnsutils)"
    ans = netns.ns("dig", "+tcp", "+short", "+time=3", "@10.96.0.10", "api.side.test", "A")
    assert ans.stdout.strip().startswith("198.18."), ans.stdout
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


# --------------------------------------------------------------------------
# sidecar --ca-export, --table, --group


def wait_ready(netns, port, proc, err_path, timeout=20):
    """Waits for the sidecar's /readyz on 127.0.0.1:PORT in the namespace."""
    deadline = time.time() + timeout
    while True:
        r = netns.ns("curl", "-sS", "-m", "2", f"http://127.0.0.1:{port}/readyz", check=False)
        if r.stdout == "ready\n":
            return
        assert proc.poll() is None, f"the sidecar exited {proc.returncode}:\n{err_path.read_text()}"
        assert time.time() < deadline, f"the sidecar never became ready:\n{err_path.read_text()}"
        time.sleep(0.2)


def stop(proc, err_path):
    proc.terminate()
    proc.wait(timeout=10)
    assert proc.returncode == 0, err_path.read_text()


def served_leaf(netns, host, port=443):
    """The certificate the sidecar serves for `host` (PEM), fetched without
    verification from inside the namespace (so through the TUN)."""
    code = ("import ssl, sys; "
            f"sys.stdout.write(ssl.get_server_certificate(({host!r}, {port}), timeout=10))")
    return netns.ns(sys.executable, "-c", code).stdout


def test_sidecar_ca_export_writes_the_ca_that_verifies_its_leaves(netns, rules_file, tmp_path):
    """`meshwrap sidecar --ca-export PATH` writes the interception CA's
    certificate (one PEM CA certificate, written before serving): curl in
    the pod verifies the mocked HTTPS service with `--cacert PATH` (and
    fails without it, exit 60: the CA is nowhere else), and the leaf it
    serves is signed by that certificate. With `--ca-dir DIR` the exported
    file is the persistent CA, byte for byte DIR/meshwrap-ca.pem."""
    from cryptography import x509

    netns.ns(BIN, "sidecar-init")
    ca_pem = tmp_path / "exported-ca.pem"
    err_path = tmp_path / "sidecar.err"
    proc = netns.spawn(BIN, "sidecar", "--rules", str(rules_file), "--ca-export", str(ca_pem),
                       "--admin", "127.0.0.1:9921", as_user=OWNER, stdout=subprocess.DEVNULL,
                       stderr=open(err_path, "w"))
    wait_ready(netns, 9921, proc, err_path)
    text = ca_pem.read_text()
    assert text.startswith("-----BEGIN CERTIFICATE-----\n"), text
    assert text.count("-----BEGIN CERTIFICATE-----") == 1, text
    assert os.stat(ca_pem).st_uid == OWNER  # written by the sidecar, as its uid
    ca = x509.load_pem_x509_certificate(text.encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True

    ok = netns.ns("curl", "-sS", "-m", "10", "--cacert", str(ca_pem), "https://api.side.test/hello")
    assert ok.stdout == "hello from the sidecar\n", ok.stderr
    bad = netns.ns("curl", "-sS", "-m", "10", "https://api.side.test/hello", check=False)
    assert bad.returncode == 60, (bad.returncode, bad.stderr)  # certificate not trusted

    leaf = x509.load_pem_x509_certificate(served_leaf(netns, "api.side.test").encode())
    assert leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)  # raises if the signature does not verify
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "api.side.test" in san.get_values_for_type(x509.DNSName)
    stop(proc, err_path)

    # With --ca-dir: the exported certificate is the persistent CA's.
    ca_dir = tmp_path / "ca"
    again = tmp_path / "again.pem"
    proc = netns.spawn(BIN, "sidecar", "--rules", str(rules_file), "--ca-dir", str(ca_dir),
                       "--ca-export", str(again), "--admin", "127.0.0.1:9921", as_user=OWNER,
                       stdout=subprocess.DEVNULL, stderr=open(err_path, "w"))
    wait_ready(netns, 9921, proc, err_path)
    assert again.read_bytes() == (ca_dir / "meshwrap-ca.pem").read_bytes()
    assert again.read_text() != text  # a new CA: the first run's was ephemeral
    ok = netns.ns("curl", "-sS", "-m", "10", "--cacert", str(again), "https://api.side.test/hello")
    assert ok.stdout == "hello from the sidecar\n", ok.stderr
    stop(proc, err_path)


def test_sidecar_ca_export_to_an_unwritable_path_fails(netns, rules_file, tmp_path):
    """A `--ca-export` path the sidecar cannot write stops it with exit 2
    and the path in the error, before it serves anything."""
    netns.ns(BIN, "sidecar-init")
    target = tmp_path / "no-such-dir" / "ca.pem"
    r = netns.ns(BIN, "sidecar", "--rules", str(rules_file), "--ca-export", str(target),
                 check=False, as_user=OWNER)
    assert r.returncode == 2, r
    assert f"meshwrap: cannot write the CA certificate to {target}" in r.stderr, r.stderr


def test_sidecar_init_table_and_group(netns, rules_file, tmp_path):
    """The single-container form with `--table 123 --group 2345`: the
    preference-200 rule (IPv4 and IPv6) looks up table 123, whose default
    route is mw0 (table 100 stays empty); the TUN is owned by uid 1337 AND
    group 2345; the process drops to uid 1337, gid 2345 with no
    supplementary groups; and the pod's traffic reaches the sidecar."""
    err_path = tmp_path / "sidecar.err"
    proc = subprocess.Popen(["ip", "netns", "exec", netns.name, BIN, "sidecar", "--init",
                             "--table", "123", "--group", "2345", "--rules", str(rules_file),
                             "--admin", "127.0.0.1:9922"],
                            stdout=subprocess.DEVNULL, stderr=open(err_path, "w"))
    netns.procs.append(proc)
    wait_ready(netns, 9922, proc, err_path)
    for family in ("-4", "-6"):
        rules = rules_of(netns, family)
        assert "200:\tfrom all lookup 123 proto 109" in rules, rules
        assert not any("lookup 100" in r for r in rules), rules
        routes = netns.ns("ip", family, "route", "show", "table", "123").stdout
        assert routes.startswith("default dev mw0 proto static"), routes
    assert netns.ns("ip", "route", "show", "table", "100", check=False).stdout == ""
    link = netns.ns("ip", "-d", "link", "show", "mw0").stdout
    assert "persist on user 1337 group 2345 addrgenmode" in link, link
    status = Path(f"/proc/{proc.pid}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split() == ["1337"] * 4
    assert fields["Gid"].split() == ["2345"] * 4
    assert fields["Groups"].strip() == ""
    assert fields["CapEff"].strip() == "0000000000000000"
    route = netns.ns("ip", "route", "get", "198.18.0.9").stdout
    assert "table 123" in route and "dev mw0" in route, route
    out = netns.ns("curl", "-sS", "-m", "10", "http://api.side.test/hello")
    assert out.stdout == "hello from the sidecar\n"
    stop(proc, err_path)
    err = err_path.read_text()
    assert "meshwrap sidecar-init: mw0 ready for uid 1337" in err, err
    assert "meshwrap sidecar: serving mw0 as uid 1337" in err, err


def test_sidecar_group_is_required_to_attach(netns, rules_file, tmp_path):
    """After `sidecar-init --group 2345`, uid 1337 alone may not attach
    (exit 2, naming its uid and gid); uid 1337 with gid 2345 attaches and
    serves the pod."""
    r = netns.ns(BIN, "sidecar-init", "--group", "2345")
    assert "mw0 ready for uid 1337" in r.stderr, r.stderr
    r = netns.ns(BIN, "sidecar", "--rules", str(rules_file), check=False, as_user=OWNER)
    assert r.returncode == 2, r
    assert r.stderr == ("meshwrap: not allowed to attach to TUN device mw0: it belongs to another "
                        "user (or group). Run the sidecar as the uid given to `sidecar-init "
                        "--owner`, and with the gid of its `--group` if one was given (now uid "
                        "1337, gid 1337)\n"), r.stderr
    err_path = tmp_path / "sidecar.err"
    proc = subprocess.Popen(["ip", "netns", "exec", netns.name, "setpriv", f"--reuid={OWNER}",
                             "--regid=2345", "--clear-groups", "--inh-caps=-all",
                             "--bounding-set=-all", BIN, "sidecar", "--rules", str(rules_file),
                             "--admin", "127.0.0.1:9923"],
                            stdout=subprocess.DEVNULL, stderr=open(err_path, "w"))
    netns.procs.append(proc)
    wait_ready(netns, 9923, proc, err_path)
    out = netns.ns("curl", "-sS", "-m", "10", "http://api.side.test/hello")
    assert out.stdout == "hello from the sidecar\n"
    stop(proc, err_path)
