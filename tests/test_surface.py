"""The CLI and rule surface that no other test drove: `meshwrap rules
explain`, `--admin-read-only` on an ordinary jail run, `match.cidr` in a
run, and UDP (pass-out through the gateway, and the events of dropped
datagrams).

Every test asserts what meshwrap answers (exact texts, decisions, status
codes and event fields), not only that it exits 0.

Network safety: UDP and HTTP servers listen on the host's loopback
(127.0.0.1, ::1) only; the jail reaches them through the gateway
(10.0.2.2, fd00:6d77::2, host.meshwrap.internal). Every other address the
SUT dials is a fake address (198.18.0.0/15, 2001:2::/48) or an address of
the jail's own subnet, which never leave meshwrap; names are under .test.
"""
import json
import os
import select
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from conftest import GW4, GW6, GW_NAME, PYTHON, SUT4, SUT6, assert_flow_schema, jail_env, wait_for


def line_of(text, needle):
    """The 1-based line of the first line of `text` that contains `needle`."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in the rules text")


def origin(path, text, name):
    """`FILE:LINE` of service `name`, as meshwrap cites it (its `- name:` line)."""
    return f"{path}:{line_of(text, f'- name: {name}')}"


# ==========================================================================
# meshwrap rules explain

EXPLAIN_RULES = """\
# rules for test_surface.py's `rules explain` tests
unmatched: refuse
hosts:
  db.explain.test: 127.0.0.1
services:
  - name: api
    match: { host: "*.api.explain.test" }
    http:
      routes:
        - when: { path: /hello }
          respond: { body: "hi\\n" }
  - name: outbound
    match: { host: pass.explain.test, port: 8443 }
    pass: {}
  - name: db-admin-closed
    match: { host: db.explain.test, port: 6379 }
    refuse: {}
  - name: no-mail
    match: { port: 25 }
    refuse: {}
  - name: gateway-closed
    match: { cidr: [10.0.2.2, "fd00:6d77::2"], port: 9999 }
    refuse: {}
  - name: lab
    match: { cidr: 192.168.0.0/16 }
    refuse: {}
"""

# A second file: appended after the first, and it turns `unmatched` to pass.
EXPLAIN_MORE = """\
unmatched: pass
services:
  - name: late-mail
    match: { port: [25, 2525] }
    pass: {}
"""


@pytest.fixture
def explain(meshwrap_bin, tmp_path):
    """Runs `meshwrap rules explain` on the test's rule files."""
    a = tmp_path / "explain.yaml"
    a.write_text(EXPLAIN_RULES)
    b = tmp_path / "more.yaml"
    b.write_text(EXPLAIN_MORE)

    def run(*args, files=(a,)):
        cmd = [meshwrap_bin, "rules", "explain"]
        for f in files:
            cmd += ["--rules", str(f)]
        res = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=30)
        return res

    run.a, run.b = a, b
    run.o = lambda name: origin(a, EXPLAIN_RULES, name)
    run.ob = lambda name: origin(b, EXPLAIN_MORE, name)
    return run


def explained(res):
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert res.stderr == "", res.stderr
    return res.stdout.splitlines()


def test_explain_mocked_host(explain):
    """A name a service with `http:` claims: decision `mock` with the
    service, its file:line and the matching pattern; where `fallback: pass`
    would send unanswered requests (the name, resolved on the host); then
    every service in order with ✓/✗ and the exact reason why (not)."""
    o = explain.o
    out = explained(explain("--host", "v1.api.explain.test", "--port", "443"))
    assert out == [
        f"v1.api.explain.test:443 → mock: service `api` ({o('api')}): "
        "host v1.api.explain.test matches `*.api.explain.test`",
        "  requests no route answers go, with `fallback: pass`, to v1.api.explain.test:443 "
        "(resolved on the host)",
        "services, in order:",
        f"  ✓ api [http] ({o('api')}): host v1.api.explain.test matches `*.api.explain.test`",
        f"  ✗ outbound [pass] ({o('outbound')}): "
        "host v1.api.explain.test matches none of its host patterns",
        f"  ✗ db-admin-closed [refuse] ({o('db-admin-closed')}): "
        "host v1.api.explain.test matches none of its host patterns",
        f"  ✗ no-mail [refuse] ({o('no-mail')}): port 443 is not among its ports",
        f"  ✗ gateway-closed [refuse] ({o('gateway-closed')}): port 443 is not among its ports",
        f"  ✗ lab [refuse] ({o('lab')}): address 198.18.0.1 is in none of its CIDRs",
    ]
    # `*.api.explain.test` needs a label before the dot: the bare name is
    # not claimed and falls to `unmatched: refuse`.
    out = explained(explain("--host", "api.explain.test", "--port", "443"))
    assert out[0] == "api.explain.test:443 → refuse: unmatched: refuse (no rule claims this flow)"
    assert out[2] == (f"  ✗ api [http] ({o('api')}): "
                      "host api.explain.test matches none of its host patterns")


def test_explain_passed_hosts(explain):
    """Passes, with where they connect from the host: a `pass` service for a
    name (resolved on the host), a `hosts:` entry (its address), and the
    gateway (the host's loopback, IPv4 and IPv6)."""
    o = explain.o
    out = explained(explain("--host", "pass.explain.test", "--port", "8443"))
    assert out[:3] == [
        f"pass.explain.test:8443 → pass: service `outbound` ({o('outbound')}): "
        "host pass.explain.test matches `pass.explain.test`, port 8443",
        "  connects from the host to pass.explain.test:8443 (resolved on the host)",
        "services, in order:",
    ]
    assert f"  ✓ outbound [pass] ({o('outbound')}): host pass.explain.test matches " \
           "`pass.explain.test`, port 8443" in out
    # The same name on another port: the service's port condition fails.
    out = explained(explain("--host", "pass.explain.test", "--port", "443"))
    assert out[0] == "pass.explain.test:443 → refuse: unmatched: refuse (no rule claims this flow)"
    assert f"  ✗ outbound [pass] ({o('outbound')}): port 443 is not among its ports" in out

    out = explained(explain("--host", "db.explain.test", "--port", "5432"))
    assert out[:2] == [
        "db.explain.test:5432 → pass: hosts: db.explain.test → 127.0.0.1",
        "  connects from the host to 127.0.0.1:5432",
    ]
    assert f"  ✗ db-admin-closed [refuse] ({o('db-admin-closed')}): " \
           "port 5432 is not among its ports" in out

    out = explained(explain("--host", GW_NAME, "--port", "8000"))
    assert out[:2] == [
        f"{GW_NAME}:8000 → pass: gateway: the host's loopback",
        "  connects from the host to 127.0.0.1:8000",
    ]
    assert f"  ✗ lab [refuse] ({o('lab')}): address 10.0.2.2 is in none of its CIDRs" in out
    out = explained(explain("--addr", GW6, "--port", "8000"))
    assert out[:2] == [
        f"[{GW6}]:8000 → pass: gateway: the host's loopback",
        "  connects from the host to [::1]:8000",
    ]
    assert f"  ✗ api [http] ({o('api')}): the flow has no hostname" in out


def test_explain_unmatched(explain):
    """A name no rule claims: `unmatched: refuse` from the file (no
    "connects" line, every service ✗); `--unmatched pass` wins over the file
    and passes to the name resolved on the host; with a later file setting
    `unmatched: pass`, the last file wins, and the flag still wins over it."""
    o = explain.o
    out = explained(explain("--host", "other.explain.test", "--port", "80"))
    assert out == [
        "other.explain.test:80 → refuse: unmatched: refuse (no rule claims this flow)",
        "services, in order:",
        f"  ✗ api [http] ({o('api')}): host other.explain.test matches none of its host patterns",
        f"  ✗ outbound [pass] ({o('outbound')}): "
        "host other.explain.test matches none of its host patterns",
        f"  ✗ db-admin-closed [refuse] ({o('db-admin-closed')}): "
        "host other.explain.test matches none of its host patterns",
        f"  ✗ no-mail [refuse] ({o('no-mail')}): port 80 is not among its ports",
        f"  ✗ gateway-closed [refuse] ({o('gateway-closed')}): port 80 is not among its ports",
        f"  ✗ lab [refuse] ({o('lab')}): address 198.18.0.1 is in none of its CIDRs",
    ]
    out = explained(explain("--host", "other.explain.test", "--port", "80", "--unmatched", "pass"))
    assert out[:3] == [
        "other.explain.test:80 → pass: unmatched: pass",
        "  connects from the host to other.explain.test:80 (resolved on the host)",
        "services, in order:",
    ]
    both = (explain.a, explain.b)
    out = explained(explain("--host", "other.explain.test", "--port", "80", files=both))
    assert out[0] == "other.explain.test:80 → pass: unmatched: pass"
    assert out[-1] == (f"  ✗ late-mail [pass] ({explain.ob('late-mail')}): "
                       "port 80 is not among its ports")
    out = explained(explain("--host", "other.explain.test", "--port", "80", "--unmatched",
                            "refuse", files=both))
    assert out[0] == "other.explain.test:80 → refuse: unmatched: refuse (no rule claims this flow)"
    # A literal address no rule covers, in pass mode: the address itself.
    out = explained(explain("--addr", "203.0.113.9", "--port", "80", "--unmatched", "pass"))
    assert out[:2] == ["203.0.113.9:80 → pass: unmatched: pass",
                       "  connects from the host to 203.0.113.9:80"]
    # A fake address no name was given is never dialled from the host,
    # anywhere in 198.18.0.0/15 or 2001:2::/48 (not only the pool's /96).
    for fake in ("198.18.201.7", "2001:2::c9:7", "2001:2:0:c9::7"):
        out = explained(explain("--addr", fake, "--port", "80", "--unmatched", "pass"))
        shown = f"[{fake}]" if ":" in fake else fake
        assert out[:2] == [f"{shown}:80 → pass: unmatched: pass", "services, in order:"], out


def test_explain_precedence(explain):
    """The order `explain` reports: services come before `hosts:` and the
    gateway; the first service that holds claims the flow although a later
    one holds too (both ✓); across files, the earlier file's service wins."""
    o = explain.o
    # A service refuses a `hosts:` name on one port.
    out = explained(explain("--host", "db.explain.test", "--port", "6379"))
    assert out[0] == (f"db.explain.test:6379 → refuse: service `db-admin-closed` "
                      f"({o('db-admin-closed')}): host db.explain.test matches "
                      "`db.explain.test`, port 6379")
    assert out[1] == "services, in order:"
    # A `cidr` service closes one port of the gateway (IPv4 and IPv6).
    out = explained(explain("--host", GW_NAME, "--port", "9999"))
    assert out[0] == (f"{GW_NAME}:9999 → refuse: service `gateway-closed` "
                      f"({o('gateway-closed')}): port 9999, address 10.0.2.2 in 10.0.2.2/32")
    out = explained(explain("--addr", GW6, "--port", "9999"))
    assert out[0] == (f"[{GW6}]:9999 → refuse: service `gateway-closed` "
                      f"({o('gateway-closed')}): port 9999, address {GW6} in {GW6}/128")
    # Two services hold; the first in order claims.
    out = explained(explain("--addr", "192.168.1.20", "--port", "25"))
    assert out == [
        f"192.168.1.20:25 → refuse: service `no-mail` ({o('no-mail')}): port 25",
        "services, in order:",
        f"  ✗ api [http] ({o('api')}): the flow has no hostname",
        f"  ✗ outbound [pass] ({o('outbound')}): the flow has no hostname",
        f"  ✗ db-admin-closed [refuse] ({o('db-admin-closed')}): the flow has no hostname",
        f"  ✓ no-mail [refuse] ({o('no-mail')}): port 25",
        f"  ✗ gateway-closed [refuse] ({o('gateway-closed')}): port 25 is not among its ports",
        f"  ✓ lab [refuse] ({o('lab')}): address 192.168.1.20 in 192.168.0.0/16",
    ]
    # Across files: the first file's `no-mail` beats the second's `late-mail`,
    # which only claims what the first file leaves (port 2525).
    both = (explain.a, explain.b)
    out = explained(explain("--host", "mx.explain.test", "--port", "25", files=both))
    assert out[0] == f"mx.explain.test:25 → refuse: service `no-mail` ({o('no-mail')}): port 25"
    assert out[-1] == f"  ✓ late-mail [pass] ({explain.ob('late-mail')}): port 25"
    out = explained(explain("--host", "mx.explain.test", "--port", "2525", files=both))
    assert out[:2] == [
        f"mx.explain.test:2525 → pass: service `late-mail` ({explain.ob('late-mail')}): port 2525",
        "  connects from the host to mx.explain.test:2525 (resolved on the host)",
    ]


def test_explain_without_services_and_errors(explain, tmp_path):
    """Rules with only `hosts:` print no "services, in order:" header; rules
    that do not load exit 2 with the file:line:column error; a missing
    `--port` is a usage error (exit 2)."""
    only_hosts = tmp_path / "hosts.yaml"
    only_hosts.write_text("hosts:\n  web.explain.test: 127.0.0.1\n")
    out = explained(explain("--host", "web.explain.test", "--port", "8000",
                            files=(only_hosts,)))
    assert out == ["web.explain.test:8000 → pass: hosts: web.explain.test → 127.0.0.1",
                   "  connects from the host to 127.0.0.1:8000"]
    out = explained(explain("--host", "nothing.explain.test", "--port", "8000",
                            files=(only_hosts,)))
    assert out == ["nothing.explain.test:8000 → refuse: unmatched: refuse "
                   "(no rule claims this flow)"]

    bad = tmp_path / "bad.yaml"
    bad_line = "    match: { host: a.test, prot: 80 }"
    bad.write_text(f"services:\n  - name: x\n{bad_line}\n    pass: {{}}\n")
    res = explain("--host", "a.test", "--port", "80", files=(bad,))
    assert res.returncode == 2, res
    assert res.stdout == ""
    col = bad_line.index("prot") + 1
    assert res.stderr == (f"meshwrap: {bad}:3:{col}: services[0].match.prot: unknown field "
                          "`prot`, expected one of `host`, `port`, `cidr`\n"), res.stderr

    res = explain("--host", "a.test", files=(explain.a,))
    assert res.returncode == 2, res
    assert "--port <PORT>" in res.stderr, res.stderr


# ==========================================================================
# --admin-read-only on an ordinary run

RO_RULES = """\
services:
  - name: api
    match: { host: api.ro.test }
    http:
      routes:
        - name: steps
          when: { method: GET, path: /steps }
          sequence: [ { body: first }, { body: second }, { body: third } ]
"""

# Inside the jail: one call, wait for the test's "go", a second call, wait
# for "stop". Results go to files in the spool folder the jail shares.
RO_SUT = r'''
import http.client, json, os, sys, time
D = sys.argv[1]
def call(n):
    c = http.client.HTTPConnection("api.ro.test", 80, timeout=10)
    c.request("GET", "/steps")
    r = c.getresponse()
    out = {"status": r.status, "body": r.read().decode()}
    c.close()
    with open(os.path.join(D, f"call-{n}.tmp"), "w") as f:
        json.dump(out, f)
    os.rename(os.path.join(D, f"call-{n}.tmp"), os.path.join(D, f"call-{n}.json"))
def wait(name):
    end = time.time() + 60
    while not os.path.exists(os.path.join(D, name)) and time.time() < end:
        time.sleep(0.02)
call(1)
wait("go")
call(2)
wait("stop")
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Background:
    """meshwrap running a SUT in the background while the test talks to its
    admin API."""

    def __init__(self, binary, workdir, rules_text, sut, extra=()):
        self.workdir = Path(workdir)
        self.spool = self.workdir / "spool"
        self.spool.mkdir(exist_ok=True)
        os.chmod(self.spool, 0o777)
        self.rules = self.workdir / "rules.yaml"
        self.rules.write_text(rules_text)
        (self.workdir / "sut.py").write_text(sut)
        self.events = self.workdir / "events.jsonl"
        self.binary, self.extra = binary, list(extra)
        self.proc = None

    def start(self):
        for _ in range(3):  # the free port may be taken in between
            self.port = free_port()
            self.base = f"http://127.0.0.1:{self.port}"
            self.args = [self.binary, "--rules", str(self.rules), "--events", str(self.events),
                         "--admin", f"127.0.0.1:{self.port}", *self.extra, "--",
                         PYTHON, str(self.workdir / "sut.py"), str(self.spool)]
            self.err = open(self.workdir / "meshwrap.err", "w+")
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=self.err,
                                         env=jail_env(), cwd=str(self.workdir),
                                         start_new_session=True)
            if wait_for(lambda: self._ready() or self.proc.poll() is not None, 20) \
                    and self.proc.poll() is None:
                return self
            self.kill()
            if "cannot listen" not in self.stderr():
                break
        raise AssertionError(f"meshwrap did not become ready\n{self.describe()}")

    def _ready(self):
        try:
            return requests.get(self.base + "/readyz", timeout=1).text == "ready\n"
        except requests.RequestException:
            return False

    def stderr(self):
        self.err.flush()
        self.err.seek(0)
        return self.err.read()

    def describe(self):
        return f"command: {' '.join(map(str, self.args))}\n--- stderr ---\n{self.stderr()[-4000:]}"

    def spool_json(self, name, timeout=30):
        p = self.spool / name
        assert wait_for(p.exists, timeout), f"the SUT wrote no {name}\n{self.describe()}"
        return json.loads(p.read_text())

    def api(self, method, path, **kw):
        return requests.request(method, self.base + path, timeout=10, **kw)

    def stop(self):
        (self.spool / "stop").touch()
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"meshwrap did not exit\n{self.describe()}")
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


@pytest.fixture
def background(meshwrap_bin, tmp_path):
    made = []

    def make(*a, **kw):
        b = Background(meshwrap_bin, tmp_path, *a, **kw)
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.kill()


READ_ONLY_ERROR = {"error": "this admin API is read-only (--admin-read-only)"}


def test_admin_read_only_serves_reads_and_refuses_writes(background):
    """`--admin 127.0.0.1:PORT --admin-read-only` on a jail run: every GET
    answers (healthz, readyz, metrics, flows, events, requests, rules,
    expectations, ui/info with read_only true), and every mutating call
    (POST /reset, /reload, /verify, PUT /rules, DELETE) is refused with 403
    and the documented error, without effect: the rules keep generation 0,
    no reload event is written, the journal keeps its entry and the
    responder's sequence is not reset (the SUT's second call gets `second`)."""
    mesh = background(RO_RULES, RO_SUT, extra=["--admin-read-only"])
    first = mesh.spool_json("call-1.json")
    assert first == {"status": 200, "body": "first"}
    # The flow's event is written when meshwrap has seen the connection
    # close, which may come just after the SUT has its answer.
    assert wait_for(lambda: mesh.api("GET", "/flows").json()["recent"], 10), mesh.describe()

    r = mesh.api("GET", "/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")
    r = mesh.api("GET", "/readyz")
    assert (r.status_code, r.text) == (200, "ready\n")
    r = mesh.api("GET", "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4"
    lines = r.text.splitlines()
    assert 'meshwrap_responder_requests_total{outcome="2xx",protocol="http",service="api"} 1' \
        in lines, r.text
    assert 'meshwrap_flows_total{decision="mock",protocol="http1",service="api",transport="tcp"} 1' \
        in lines, r.text
    r = mesh.api("GET", "/ui/info")
    assert r.status_code == 200 and r.json()["read_only"] is True, r.text
    r = mesh.api("GET", "/rules")
    assert r.status_code == 200
    rules = r.json()
    assert rules["generation"] == 0
    assert rules["services"] == [{"name": "api", "action": "http"}]
    r = mesh.api("GET", "/requests", params={"service": "api"})
    assert r.status_code == 200
    journal = r.json()["requests"]
    assert [(e["method"], e["path"], e["status"], e["route"]) for e in journal] == \
        [("GET", "/steps", 200, "steps")], journal
    r = mesh.api("GET", "/flows", params={"host": "api.ro.test"})
    assert r.status_code == 200
    recent = r.json()["recent"]
    assert len(recent) == 1, recent
    assert (recent[0]["decision"], recent[0]["service"], recent[0]["dst_port"]) == \
        ("mock", "api", 80)
    r = mesh.api("GET", "/events")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    kinds = [json.loads(l)["kind"] for l in r.text.splitlines()]
    assert "http" in kinds and "flow" in kinds, kinds
    r = mesh.api("GET", "/expectations")
    assert r.status_code == 200 and r.json() == {"ok": True, "failed": 0, "results": []}, r.text

    writes = [
        ("POST", "/reset", {}),
        ("POST", "/reset", {"params": {"service": "api"}}),
        ("POST", "/reload", {}),
        ("POST", "/verify", {"data": "- { service: api, route: steps, times: 1 }\n"}),
        ("PUT", "/rules", {"data": "services: []\n"}),
        ("DELETE", "/rules", {}),
    ]
    for method, path, kw in writes:
        r = mesh.api(method, path, **kw)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert r.json() == READ_ONLY_ERROR, (method, path, r.text)

    # Nothing changed: the rules, the journal, and the responder's state.
    assert mesh.api("GET", "/rules").json()["generation"] == 0
    assert len(mesh.api("GET", "/requests").json()["requests"]) == 1
    (mesh.spool / "go").touch()
    assert mesh.spool_json("call-2.json") == {"status": 200, "body": "second"}
    metrics = mesh.api("GET", "/metrics").text.splitlines()
    assert 'meshwrap_rule_reloads_total{result="ok"} 0' in metrics
    assert 'meshwrap_rule_reloads_total{result="error"} 0' in metrics

    assert mesh.stop() == 0, mesh.describe()
    events = [json.loads(l) for l in mesh.events.read_text().splitlines() if l.strip()]
    assert [e for e in events if e["kind"] == "reload"] == []
    assert [e["response_body"] for e in events if e["kind"] == "http"] == ["first", "second"]


def test_admin_read_only_wins_over_a_token(background, tmp_path):
    """With both `--admin-token-file` and `--admin-read-only`, a mutating
    call that brings the right bearer token is still refused with 403 (not
    401, not 200), while GETs need no token."""
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    mesh = background(RO_RULES, RO_SUT,
                      extra=["--admin-read-only", "--admin-token-file", str(token)])
    assert mesh.spool_json("call-1.json") == {"status": 200, "body": "first"}
    r = mesh.api("POST", "/reset", headers={"Authorization": "Bearer s3cret-token"})
    assert (r.status_code, r.json()) == (403, READ_ONLY_ERROR)
    r = mesh.api("POST", "/reset")
    assert (r.status_code, r.json()) == (403, READ_ONLY_ERROR)
    r = mesh.api("GET", "/ui/info")
    assert r.status_code == 200
    assert (r.json()["read_only"], r.json()["token_required"]) == (True, True)
    (mesh.spool / "go").touch()
    assert mesh.spool_json("call-2.json") == {"status": 200, "body": "second"}
    assert mesh.stop() == 0, mesh.describe()


# ==========================================================================
# match.cidr in a run

CIDR_SUT = r'''
import http.client, json, socket, sys
port = int(sys.argv[1])
def get(host, p, path="/who"):
    try:
        c = http.client.HTTPConnection(host, p, timeout=10)
        c.request("GET", path)
        r = c.getresponse()
        return {"status": r.status, "body": r.read().decode()}
    except OSError as e:
        return {"errno": e.errno}
out = {
    "in4": get("198.18.200.7", 80),
    "out4": get("198.18.201.7", 80),
    "in6": get("2001:2::c8:7", 80),
    "out6": get("2001:2::c9:7", 80),
    "gw4": get("10.0.2.2", port, "/hello"),
    "gw6": get("fd00:6d77::2", port, "/hello"),
}
print(json.dumps(out))
'''


def test_match_cidr_claims_literal_addresses(jail, http_server):
    """A service with `match.cidr` claims connections to literal addresses
    in its prefixes (IPv4 and IPv6, here inside the fake ranges) and answers
    them; an address just outside the prefixes is not claimed and falls to
    `unmatched: refuse` (ECONNREFUSED). A `cidr` service also beats the
    gateway rule: 10.0.2.2 on the HTTP server's port is refused by it, while
    fd00:6d77::2 (not in its CIDRs) still passes to the host's ::1."""
    port = http_server.port
    rules = f"""\
services:
  - name: literal-api
    match: {{ cidr: [198.18.200.0/24, "2001:2::c8:0/112"] }}
    http:
      routes:
        - when: {{ path: /who }}
          respond: {{ body: "claimed by cidr\\n" }}
  - name: gateway-v4-closed
    match: {{ cidr: 10.0.2.2, port: {port} }}
    refuse: {{}}
"""
    res = jail.run([PYTHON, "-c", CIDR_SUT, str(port)], rules=rules)
    assert res.returncode == 0, res.describe()
    out = res.json_out()
    path = next(a for a in res.args if a.endswith(".yaml"))
    o = lambda name: origin(path, rules, name)  # noqa: E731
    assert out["in4"] == {"status": 200, "body": "claimed by cidr\n"}, res.describe()
    assert out["in6"] == {"status": 200, "body": "claimed by cidr\n"}, res.describe()
    assert out["out4"] == {"errno": 111}, res.describe()
    assert out["out6"] == {"errno": 111}, res.describe()
    assert out["gw4"] == {"errno": 111}, res.describe()
    assert out["gw6"] == {"status": 200, "body": "hello from host ::1\n"}, res.describe()

    def one(dst, dst_port):
        f = res.flows(dst=dst, dst_port=dst_port)
        assert len(f) == 1, res.describe()
        assert_flow_schema(f[0])
        return f[0]

    f = one("198.18.200.7", 80)
    assert (f["decision"], f["service"], f["protocol"], f["transport"]) == \
        ("mock", "literal-api", "http1", "tcp")
    assert f["reason"] == f"service `literal-api` ({o('literal-api')}): " \
                          "address 198.18.200.7 in 198.18.200.0/24"
    assert (f["host"], f["upstream"]) == ("198.18.200.7", None)  # the Host header
    f = one("2001:2::c8:7", 80)
    assert (f["decision"], f["service"], f["protocol"], f["src"]) == \
        ("mock", "literal-api", "http1", "fd00:6d77::100")
    assert f["reason"] == f"service `literal-api` ({o('literal-api')}): " \
                          "address 2001:2::c8:7 in 2001:2::c8:0/112"
    assert (f["host"], f["upstream"]) == ("2001:2::c8:7", None)
    for dst in ("198.18.201.7", "2001:2::c9:7"):
        f = one(dst, 80)
        assert (f["decision"], f["service"], f["host"], f["protocol"]) == \
            ("refuse", None, None, "none")
        assert f["reason"] == "unmatched: refuse (no rule claims this flow)"
    f = one(GW4, port)
    assert (f["decision"], f["service"], f["host"]) == ("refuse", "gateway-v4-closed", GW_NAME)
    assert f["reason"] == f"service `gateway-v4-closed` ({o('gateway-v4-closed')}): " \
                          f"port {port}, address 10.0.2.2 in 10.0.2.2/32"
    f = one(GW6, port)
    assert (f["decision"], f["service"], f["upstream"]) == ("pass", None, f"[::1]:{port}")
    assert f["reason"] == "gateway: the host's loopback"


# ==========================================================================
# UDP


class UdpEcho:
    """A UDP echo server on 127.0.0.1:PORT and [::1]:PORT (the same port):
    answers `echo:` + the datagram and remembers who sent what."""

    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()
        self.stopping = False
        for _ in range(20):
            s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s4.bind(("127.0.0.1", 0))
            self.port = s4.getsockname()[1]
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s6.bind(("::1", self.port))
            except OSError:
                s4.close()
                s6.close()
                continue
            self.socks = [s4, s6]
            break
        else:
            raise RuntimeError("no UDP port free on both loopbacks")
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            ready, _, _ = select.select(self.socks, [], [], 0.1)
            for s in ready:
                data, peer = s.recvfrom(65536)
                with self.lock:
                    self.seen.append((peer[0], data))
                s.sendto(b"echo:" + data, peer)

    def received(self):
        with self.lock:
            return list(self.seen)

    def close(self):
        self.stopping = True
        self.thread.join(5)
        for s in self.socks:
            s.close()


@pytest.fixture
def udp_echo():
    e = UdpEcho()
    yield e
    e.close()


UDP_PASS_SUT = r'''
import json, socket, sys
port = int(sys.argv[1])
out = {}
for label, fam, host in (("gw4", socket.AF_INET, "10.0.2.2"),
                         ("name", socket.AF_INET, "host.meshwrap.internal"),
                         ("gw6", socket.AF_INET6, "fd00:6d77::2")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(10)
    addr = socket.getaddrinfo(host, port, fam, socket.SOCK_DGRAM)[0][4]
    replies = []
    for i in (1, 2):  # two datagrams: the second rides the same association
        s.sendto(f"{label}-{i}".encode(), addr)
        data, peer = s.recvfrom(65536)
        replies.append([data.decode(), peer[0], peer[1]])
    out[label] = replies
    s.close()
print(json.dumps(out))
'''


def test_udp_pass_out_through_the_gateway(jail, udp_echo):
    """UDP datagrams to the gateway (10.0.2.2, host.meshwrap.internal,
    fd00:6d77::2) are passed out to the host's loopback of the same family
    on the same port: the echo server receives each datagram, from 127.0.0.1
    or ::1, and its replies come back into the jail as if from the address
    the SUT sent to."""
    port = udp_echo.port
    res = jail.run([PYTHON, "-c", UDP_PASS_SUT, str(port)])
    assert res.returncode == 0, res.describe()
    out = res.json_out()
    assert out == {
        "gw4": [["echo:gw4-1", GW4, port], ["echo:gw4-2", GW4, port]],
        "name": [["echo:name-1", GW4, port], ["echo:name-2", GW4, port]],
        "gw6": [["echo:gw6-1", GW6, port], ["echo:gw6-2", GW6, port]],
    }, res.describe()
    assert sorted(udp_echo.received()) == sorted([
        ("127.0.0.1", b"gw4-1"), ("127.0.0.1", b"gw4-2"),
        ("127.0.0.1", b"name-1"), ("127.0.0.1", b"name-2"),
        ("::1", b"gw6-1"), ("::1", b"gw6-2")])
    # The name was answered by meshwrap's resolver, with the gateway.
    dns = res.dns(name=GW_NAME, qtype="A")
    assert dns and dns[0]["answers"] == [GW4] and dns[0]["source"] == "gateway", res.describe()
    # No UDP datagram was refused; each of the three sockets is one passed
    # pair, recorded (with its bytes) when meshwrap stopped.
    udp = [f for f in res.flows() if f.get("transport") == "udp"]
    assert sorted((f["decision"], f["dst"], f["dst_port"], f["upstream"], f["bytes_up"],
                   f["bytes_down"], f["error"]) for f in udp) == sorted([
        ("pass", GW4, port, f"127.0.0.1:{port}", 10, 20, None),
        ("pass", GW4, port, f"127.0.0.1:{port}", 12, 22, None),
        ("pass", GW6, port, f"[::1]:{port}", 10, 20, None),
    ]), res.describe()
    assert all(f["src"] in (SUT4, SUT6) and f["protocol"] == "none" for f in udp), res.describe()


UDP_DROP_SUT = r'''
import json, socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
for _ in range(3):  # three datagrams to one destination: one event
    s.sendto(b"closed", ("10.0.2.2", port))
for host in ("blocked.udp.test", "web.udp.test"):
    addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
    s.sendto(b"x", addr)
    s.sendto(b"y", addr)
s.sendto(b"subnet", ("10.0.2.50", port))
s.settimeout(2)
try:
    data = s.recvfrom(65536)
    got = repr(data)
except socket.timeout:
    got = None
print(json.dumps({"src_port": s.getsockname()[1], "reply": got,
                  "blocked": socket.getaddrinfo("blocked.udp.test", 1, socket.AF_INET)[0][4][0],
                  "web": socket.getaddrinfo("web.udp.test", 1, socket.AF_INET)[0][4][0]}))
'''


def test_udp_drop_events(jail, udp_echo):
    """Datagrams whose decision is not pass are dropped and recorded as one
    `flow` event per (source, destination) pair, however many datagrams:
    a `cidr`+port service refusing the gateway port (although a server
    listens there, it receives nothing), a name no rule claims
    (`unmatched: refuse`), a name an `http:` service claims (UDP is not
    mocked: refused, reason suffixed), and an address of the jail's own
    subnet. Every field of each event is asserted."""
    port = udp_echo.port
    rules = f"""\
services:
  - name: udp-closed
    match: {{ cidr: 10.0.2.2, port: {port} }}
    refuse: {{}}
  - name: web
    match: {{ host: web.udp.test }}
    http:
      routes:
        - when: {{ path: / }}
          respond: {{ body: ok }}
"""
    res = jail.run([PYTHON, "-c", UDP_DROP_SUT, str(port)], rules=rules)
    assert res.returncode == 0, res.describe()
    out = res.json_out()
    assert out["reply"] is None, out
    assert udp_echo.received() == []
    path = next(a for a in res.args if a.endswith(".yaml"))
    o = lambda name: origin(path, rules, name)  # noqa: E731
    udp = [f for f in res.flows() if f.get("transport") == "udp"]
    by_dst = {}
    for f in udp:
        assert f["dst"] not in by_dst, f"two events for one pair:\n{res.describe()}"
        by_dst[f["dst"]] = f
    assert sorted(by_dst) == sorted([GW4, out["blocked"], out["web"], "10.0.2.50"]), res.describe()
    expected = {
        GW4: (GW_NAME, f"service `udp-closed` ({o('udp-closed')}): "
                       f"port {port}, address 10.0.2.2 in 10.0.2.2/32", "udp-closed"),
        out["blocked"]: ("blocked.udp.test", "unmatched: refuse (no rule claims this flow)", None),
        out["web"]: ("web.udp.test", f"service `web` ({o('web')}): "
                                     "host web.udp.test matches `web.udp.test` (UDP is not mocked)",
                     "web"),
        "10.0.2.50": (None, "nothing listens at this address of the jail's own subnet", None),
    }
    ids = set()
    for dst, (host, reason, service) in expected.items():
        f = dict(by_dst[dst])
        assert isinstance(f.pop("time"), str)
        duration = f.pop("duration_ms")
        assert isinstance(duration, (int, float)) and duration >= 0, f
        flow_id = f.pop("flow_id")
        assert isinstance(flow_id, int) and flow_id not in ids, f
        ids.add(flow_id)
        assert f == {
            "kind": "flow", "transport": "udp",
            "src": SUT4, "src_port": out["src_port"],
            "dst": dst, "dst_port": port,
            "host": host, "protocol": "none",
            "decision": "refuse", "reason": reason, "service": service,
            "upstream": None, "bytes_up": 0, "bytes_down": 0, "error": None,
        }, res.describe()
    # The names were resolved by meshwrap to fake addresses.
    for name in ("blocked.udp.test", "web.udp.test"):
        assert any(d["source"] == "fake" for d in res.dns(name=name, qtype="A")), res.describe()
    # The exit summary lists each refused pair as a destination.
    rows = {line.split()[0]: line.split()[1:] for line in res.stderr.splitlines()
            if line.startswith("  ") and f":{port} " in line}
    assert rows == {
        f"{name}:{port}": ["refuse", "none", "1", "0", "0", "0"]
        for name in (GW_NAME, "blocked.udp.test", "web.udp.test", "10.0.2.50")
    }, res.describe()
