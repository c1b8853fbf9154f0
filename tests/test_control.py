"""Integration tests for meshwrap's control plane: the admin API (`--admin`),
`--watch`, live rule reloads and `meshwrap verify`.

The SUT is a long-running python loop inside the jail (SUT below). It calls
the mocked `api.ctl.test` (tests/control_rules/api.yaml) every few
milliseconds on a fresh connection, and runs the batches of requests a test
drops into its spool directory (the jail shares the file system). The test
talks to the admin API from the host with python `requests` (curl for the
unix socket), as a test harness beside a SUT would.

Network safety: the admin API listens on 127.0.0.1, ::1 or a unix socket;
the SUT only calls names under .test and the gateway (the host's loopback).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import PYTHON, assert_flow_schema, closed_port, jail_env, wait_for

RULES = Path(__file__).resolve().parent / "control_rules"
API_RULES = (RULES / "api.yaml").read_text()
API_V2 = API_RULES.replace("version: 1", "version: 2").replace('X-Version: "1"', 'X-Version: "2"')
assert API_V2 != API_RULES

API = "http://api.ctl.test"
HTTP_TIMEOUT = 10

# An invalid rules text with the error at a known place: line 3, column 34
# (the misspelt `prot`).
BAD_RULES = """services:
  - name: api
    match: { host: api.ctl.test, prot: 80 }
    pass: {}
"""
BAD_AT = "3:34"

# --------------------------------------------------------------------------
# the SUT: runs inside the jail

SUT = r'''
import http.client, json, os, socket, subprocess, sys, time
import requests

D = sys.argv[1]


def p(name):
    return os.path.join(D, name)


def put(name, obj):
    with open(p(name + ".tmp"), "w") as f:
        json.dump(obj, f)
    os.rename(p(name + ".tmp"), p(name))


def one(session, r):
    t0 = time.time()
    try:
        resp = session.request(r.get("method", "GET"), r["url"], headers=r.get("headers"),
                               data=r.get("data"), json=r.get("json"),
                               timeout=r.get("timeout", 10), allow_redirects=False)
        return {"t": t0, "status": resp.status_code, "text": resp.text,
                "headers": {k.lower(): v for k, v in resp.headers.items()}}
    except Exception as e:
        return {"t": t0, "exc": type(e).__name__, "error": str(e)}


def session():
    s = requests.Session()
    s.trust_env = False
    return s


held = []
ka = None


def storm(spec):
    """GET /mix and /n in turn until `min` requests are done and the test
    says stop; a new connection for half of them, a kept-alive one (10
    requests each) for the others."""
    out, keep, kept, i = [], None, 0, 0
    end = time.time() + spec.get("max_seconds", 60)
    while (i < spec["min"] or not os.path.exists(p(spec["until"]))) and time.time() < end:
        path = "/mix" if i % 2 == 0 else "/n"
        fresh = (i // 2) % 2 == 0
        try:
            if fresh:
                c = http.client.HTTPConnection(spec["host"], 80, timeout=10)
            else:
                if keep is None or kept >= 10:
                    if keep is not None:
                        keep.close()
                    keep, kept = http.client.HTTPConnection(spec["host"], 80, timeout=10), 0
                c, kept = keep, kept + 1
            c.request("GET", path)
            r = c.getresponse()
            body = r.read().decode()
            out.append([path, r.status, r.getheader("X-Set"), body, fresh])
            if fresh:
                c.close()
        except Exception as e:
            out.append([path, None, None, f"{type(e).__name__}: {e}", fresh])
            if not fresh:
                keep = None
        i += 1
        if i % 10 == 0:
            put("progress", i)
    if keep is not None:
        keep.close()
    put("progress", i)
    return out


def command(spec):
    if "requests" in spec:
        s = session()
        try:
            return [one(s, r) for r in spec["requests"]]
        finally:
            s.close()
    if "run" in spec:
        r = subprocess.run(spec["run"], capture_output=True, text=True, timeout=30)
        return {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
    if "open" in spec:  # a connection held open until "close_all"
        held.append(socket.create_connection(tuple(spec["open"]), timeout=5))
        return {"port": held[-1].getsockname()[1]}
    if "close_all" in spec:
        while held:
            held.pop().close()
        return {"ok": True}
    if "storm" in spec:
        return storm(spec["storm"])
    if "keepalive" in spec:  # one request on a connection kept between commands
        global ka
        if ka is None:
            ka = http.client.HTTPConnection(spec["keepalive"]["host"], 80, timeout=10)
        ka.request("GET", spec["keepalive"]["path"])
        r = ka.getresponse()
        return {"status": r.status, "text": r.read().decode(),
                "x-version": r.getheader("X-Version")}
    raise SystemExit(f"unknown command {spec}")


n = 0
last = 0.0
loop_log = open(p("loop.jsonl"), "a")
put("started", True)
while not os.path.exists(p("stop")):
    cmd = p(f"cmd-{n}.json")
    if os.path.exists(cmd):
        with open(cmd) as f:
            spec = json.load(f)
        put(f"out-{n}.json", command(spec))
        n += 1
        continue
    try:
        with open(p("loop.json")) as f:
            loop = json.load(f)
    except (OSError, ValueError):
        loop = None
    if loop and time.time() - last >= loop["interval"]:
        last = time.time()
        s = session()  # a new connection each time: it sees the rules in force now
        r = one(s, {"url": loop["url"], "timeout": 5})
        s.close()
        loop_log.write(json.dumps(r) + "\n")
        loop_log.flush()
    time.sleep(0.005)
'''


def free_port(host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Mesh:
    """meshwrap running the SUT loop with --admin; the test drives both."""

    def __init__(self, binary, workdir, rules=(RULES / "api.yaml",), admin="127.0.0.1",
                 opts=(), loop=API + "/hello", interval=0.02):
        self.binary = binary
        self.workdir = Path(workdir)
        self.rules = [str(r) for r in rules]
        self.admin_host = admin  # "127.0.0.1", "::1" or "unix"
        self.opts = list(opts)
        self.loop = loop
        self.interval = interval
        self.spool = self.workdir / "spool"
        self.n = 0
        self.proc = None
        self.port = None
        self.sock = None
        self.sockdir = None

    # ---- lifecycle

    def start(self):
        self.spool.mkdir(parents=True, exist_ok=True)
        os.chmod(self.spool, 0o777)
        if self.loop:
            (self.spool / "loop.json").write_text(
                json.dumps({"url": self.loop, "interval": self.interval}))
        sut = self.workdir / "sut.py"
        sut.write_text(SUT)
        self.events_path = self.workdir / "events.jsonl"
        last = ""
        for _ in range(3):  # the free port may be taken in between; retry
            if self.admin_host == "unix":
                self.sockdir = tempfile.mkdtemp(prefix="mw-admin-", dir="/tmp")
                self.sock = os.path.join(self.sockdir, "admin.sock")
                self.admin = f"unix:{self.sock}"
            else:
                self.port = free_port(self.admin_host)
                self.admin = (f"[{self.admin_host}]:{self.port}" if ":" in self.admin_host
                              else f"{self.admin_host}:{self.port}")
                self.base = (f"http://[{self.admin_host}]:{self.port}" if ":" in self.admin_host
                             else f"http://{self.admin_host}:{self.port}")
            args = [self.binary]
            for r in self.rules:
                args += ["--rules", r]
            args += ["--events", str(self.events_path), "--admin", self.admin, *self.opts,
                     "--", PYTHON, str(sut), str(self.spool)]
            self.args = args
            self.stdout = open(self.workdir / "meshwrap.out", "w+")
            self.stderr = open(self.workdir / "meshwrap.err", "w+")
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.stdout,
                                         stderr=self.stderr, env=jail_env(),
                                         cwd=str(self.workdir), start_new_session=True)
            if wait_for(lambda: self._ready() or self.proc.poll() is not None, 15) \
                    and self.proc.poll() is None:
                assert wait_for(lambda: (self.spool / "started").exists(), 15), \
                    f"the SUT did not start\n{self.describe()}"
                return self
            last = self.describe()
            self.stop(check=False)
            if "cannot listen" not in last:
                break
        raise AssertionError(f"meshwrap with --admin did not become ready\n{last}")

    def _ready(self):
        try:
            if self.sock:
                r = self.curl("/readyz")
                return r.returncode == 0 and r.stdout == "ready\n"
            return requests.get(self.base + "/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, check=True):
        if self.proc is None:
            return None
        (self.spool / "stop").touch()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        rc = self.proc.returncode
        desc = self.describe()
        self.proc = None
        if self.sockdir:
            shutil.rmtree(self.sockdir, ignore_errors=True)
        if check:
            assert rc == 0, f"meshwrap exited {rc}\n{desc}"
        return rc

    def describe(self):
        out = []
        for name, f in (("stdout", self.stdout), ("stderr", self.stderr)):
            f.flush()
            f.seek(0)
            out.append(f"--- meshwrap {name} ---\n{f.read()[-4000:]}")
        return f"command: {' '.join(map(str, self.args))}\n" + "\n".join(out)

    def err_text(self):
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    # ---- the admin API

    def api(self, method, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return requests.request(method, self.base + path, **kw)

    def get(self, path, **kw):
        r = self.api("GET", path, **kw)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        return r

    def json(self, path, **kw):
        return self.get(path, **kw).json()

    def curl(self, path, *args):
        """curl over the unix socket."""
        return subprocess.run(["curl", "-sS", "--max-time", "10", "--unix-socket", self.sock,
                               *args, f"http://meshwrap{path}"],
                              capture_output=True, text=True, timeout=20)

    def events(self):
        return [json.loads(l) for l in self.get("/events").text.splitlines() if l.strip()]

    def metrics(self):
        return metric_samples(self.get("/metrics").text)

    # ---- the SUT

    def run(self, spec, timeout=30):
        """Hands the SUT one command (see SUT.command) and returns its output."""
        n = self.n
        self.n += 1
        tmp = self.spool / f"cmd-{n}.json.tmp"
        tmp.write_text(json.dumps(spec))
        tmp.rename(self.spool / f"cmd-{n}.json")
        out = self.spool / f"out-{n}.json"
        if not wait_for(out.exists, timeout, 0.01):
            raise AssertionError(f"the SUT did not answer command {spec!r:.200} "
                                 f"within {timeout}s\n{self.describe()}")
        return json.loads(out.read_text())

    def requests(self, *reqs):
        return self.run({"requests": list(reqs)})

    def loop_lines(self):
        p = self.spool / "loop.jsonl"
        if not p.exists():
            return []
        return [json.loads(l) for l in p.read_text().splitlines() if l.endswith("}")]

    def loop_after(self, t):
        return [l for l in self.loop_lines() if l["t"] > t]


def version_of(line):
    assert "exc" not in line, f"the SUT's loop request failed: {line}"
    assert line["status"] == 200, line
    v = json.loads(line["text"])["version"]
    assert line["headers"].get("x-version") == str(v), f"header and body disagree: {line}"
    return v


def wait_loop_version(mesh, t, want, timeout=5):
    """Waits for a loop request started after t that answered `want`."""
    got = wait_for(lambda: any(version_of(l) == want for l in mesh.loop_after(t)), timeout)
    assert got, (f"the SUT's loop never saw version {want} after the change; saw "
                 f"{[version_of(l) for l in mesh.loop_after(t)][-10:]}\n{mesh.describe()}")


def metric_samples(text):
    """{family name: (type, [(sample name, labels, value)])} as prometheus_client parses it."""
    fams = {}
    for fam in text_string_to_metric_families(text):
        fams[fam.name] = (fam.type, [(s.name, s.labels, s.value) for s in fam.samples])
    return fams


def sample(fams, family, name=None, **labels):
    """The value of one sample (0 when the labelled child does not exist yet)."""
    _, samples = fams.get(family, (None, []))
    name = name or family
    for n, l, v in samples:
        if n == name and all(l.get(k) == v2 for k, v2 in labels.items()):
            return v
    return 0.0


def tagged(entries, tag):
    return [e for e in entries if tag in (e.get("query") or "")]


@pytest.fixture(scope="module")
def mesh(meshwrap_bin, tmp_path_factory):
    m = Mesh(meshwrap_bin, tmp_path_factory.mktemp("control")).start()
    yield m
    m.stop()


@pytest.fixture
def new_mesh(meshwrap_bin, tmp_path):
    """A meshwrap of the test's own: new_mesh(rules=..., opts=..., ...)."""
    made = []

    def make(**kw):
        m = Mesh(meshwrap_bin, tmp_path / f"m{len(made)}", **kw)
        made.append(m)
        return m.start()

    yield make
    for m in made:
        m.stop(check=False)


# ==========================================================================
# health, routing of the API itself


def test_healthz_readyz_and_unknown_endpoints(mesh):
    r = mesh.get("/healthz")
    assert r.text == "ok\n" and r.headers["content-type"].startswith("text/plain"), r.text
    assert mesh.get("/readyz").text == "ready\n"
    assert mesh.get("/healthz/").text == "ok\n"  # a trailing slash is the same endpoint

    r = mesh.api("GET", "/nope")
    assert r.status_code == 404 and "/metrics" in r.json()["error"], r.text
    for method, path in (("DELETE", "/rules"), ("GET", "/verify"), ("POST", "/healthz"),
                         ("GET", "/reset"), ("POST", "/flows")):
        r = mesh.api(method, path)
        assert r.status_code == 405, f"{method} {path}: {r.status_code} {r.text}"
        assert method in r.json()["error"], r.text


# ==========================================================================
# /metrics

# family -> (type, the labels of its samples)
FAMILIES = {
    "meshwrap_flows": ("counter", {"decision", "protocol", "service", "transport"}),
    "meshwrap_flow_bytes": ("counter", {"direction", "decision"}),
    "meshwrap_flow_duration_seconds": ("histogram", {"decision"}),
    "meshwrap_unmatched_flows": ("counter", {"decision"}),
    "meshwrap_dns_queries": ("counter", {"outcome"}),
    "meshwrap_responder_requests": ("counter", {"service", "protocol", "outcome"}),
    "meshwrap_responder_latency_seconds": ("histogram", {"service", "protocol"}),
    "meshwrap_expectations_failed": ("counter", set()),
    "meshwrap_rule_reloads": ("counter", {"result"}),
    "meshwrap_flows_active": ("gauge", set()),
    "meshwrap_tun_packets": ("counter", {"direction"}),
    "meshwrap_tun_dropped_packets": ("counter", set()),
}


def some_traffic(mesh, tag):
    """A mocked 200, a 404 fallback, a flow refused by a service and an
    unmatched one (both refused)."""
    out = mesh.requests(
        {"url": f"{API}/hello?tag={tag}"},
        {"method": "POST", "url": f"{API}/submit?tag={tag}", "data": "x"},
        {"url": "http://blocked.ctl.test/", "timeout": 5},
        {"url": "http://unclaimed.ctl.test/", "timeout": 5},
    )
    assert out[0]["status"] == 200 and out[1]["status"] == 404, out
    assert "exc" in out[2] and "exc" in out[3], out
    return out


def test_metrics_families_labels_and_counters(mesh):
    some_traffic(mesh, uuid.uuid4().hex)
    r = mesh.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers

    def has_all():
        f = mesh.metrics()
        return (sample(f, "meshwrap_flows", "meshwrap_flows_total", decision="refuse",
                       service="blocked") > 0
                and sample(f, "meshwrap_unmatched_flows", "meshwrap_unmatched_flows_total",
                           decision="refuse") > 0
                and sample(f, "meshwrap_flows", "meshwrap_flows_total", decision="mock",
                           service="api") > 0) and f

    fams = wait_for(has_all, 10)
    assert fams, f"the flows of the traffic never showed in /metrics:\n{mesh.get('/metrics').text}"

    for family, (typ, labels) in FAMILIES.items():
        assert family in fams, f"/metrics lacks {family}; has {sorted(fams)}"
        got_type, samples = fams[family]
        assert got_type == typ, f"{family} is a {got_type}, expected {typ}"
        assert samples, f"{family} has no samples"
        for name, l, v in samples:
            extra = {"le"} if name.endswith("_bucket") else set()
            assert set(l) == labels | extra, f"{name} has labels {sorted(l)}, expected {sorted(labels)}"
            assert v >= 0, (name, l, v)
            # label values are bounded: never a hostname or a path
            assert not any(".test" in x or x.startswith("/") for x in l.values()), (name, l)

    total = "meshwrap_flows_total"
    assert sample(fams, "meshwrap_flows", total, decision="mock", protocol="http1",
                  service="api", transport="tcp") > 0
    assert sample(fams, "meshwrap_flows", total, decision="refuse", protocol="none",
                  service="blocked", transport="tcp") > 0
    assert sample(fams, "meshwrap_flows", total, decision="refuse", service="") > 0
    req = "meshwrap_responder_requests_total"
    assert sample(fams, "meshwrap_responder_requests", req, service="api", protocol="http",
                  outcome="2xx") > 0
    assert sample(fams, "meshwrap_responder_requests", req, service="api", protocol="http",
                  outcome="4xx") > 0
    assert sample(fams, "meshwrap_dns_queries", "meshwrap_dns_queries_total", outcome="fake") > 0
    assert sample(fams, "meshwrap_responder_latency_seconds",
                  "meshwrap_responder_latency_seconds_count", service="api", protocol="http") > 0
    assert sample(fams, "meshwrap_responder_latency_seconds",
                  "meshwrap_responder_latency_seconds_bucket", service="api", protocol="http",
                  le="+Inf") > 0
    assert sample(fams, "meshwrap_flow_bytes", "meshwrap_flow_bytes_total", direction="up",
                  decision="mock") > 0
    assert sample(fams, "meshwrap_flow_bytes", "meshwrap_flow_bytes_total", direction="down",
                  decision="mock") > 0
    for result in ("ok", "error"):  # present before any reload
        assert any(l == {"result": result} for _, l, _ in fams["meshwrap_rule_reloads"][1])
    for direction in ("in", "out"):
        assert sample(fams, "meshwrap_tun_packets", "meshwrap_tun_packets_total",
                      direction=direction) > 0

    # counters go up with traffic
    before = fams
    out = mesh.requests(*[{"url": f"{API}/hello"}] * 5)
    assert all(o["status"] == 200 for o in out), out

    def grown():
        after = mesh.metrics()
        checks = [
            ("meshwrap_responder_requests", req, {"service": "api", "outcome": "2xx"}, 5),
            ("meshwrap_responder_latency_seconds", "meshwrap_responder_latency_seconds_count",
             {"service": "api"}, 5),
            ("meshwrap_flows", total, {"decision": "mock", "service": "api"}, 1),
            ("meshwrap_dns_queries", "meshwrap_dns_queries_total", {"outcome": "fake"}, 1),
            ("meshwrap_tun_packets", "meshwrap_tun_packets_total", {"direction": "in"}, 10),
            ("meshwrap_tun_packets", "meshwrap_tun_packets_total", {"direction": "out"}, 10),
            ("meshwrap_flow_bytes", "meshwrap_flow_bytes_total",
             {"direction": "down", "decision": "mock"}, 100),
        ]
        bad = [(fam, name, l, sample(before, fam, name, **l), sample(after, fam, name, **l))
               for fam, name, l, d in checks
               if sample(after, fam, name, **l) < sample(before, fam, name, **l) + d]
        return bad

    bad = grown()
    if bad:
        time.sleep(1)
        bad = grown()
    assert not bad, f"counters that did not grow with 5 more requests (before, after): {bad}"


def test_promtool_accepts_the_metrics(mesh, tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (.ci/run installs it)"
    some_traffic(mesh, uuid.uuid4().hex)
    text = mesh.get("/metrics").text
    (tmp_path / "metrics.txt").write_text(text)
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, (f"promtool check metrics: exit {r.returncode}\n{r.stdout}"
                               f"{r.stderr}\n--- metrics ---\n{text}")


# ==========================================================================
# /flows


def test_flows_with_filters(mesh):
    out = mesh.requests(
        {"url": f"{API}/hello"},
        {"url": "http://blocked.ctl.test:8080/", "timeout": 5},
        {"url": "http://unclaimed.ctl.test:81/", "timeout": 5},
    )
    assert out[0]["status"] == 200 and "exc" in out[1] and "exc" in out[2], out
    assert wait_for(lambda: mesh.json("/flows?port=8080")["recent"]
                    and mesh.json("/flows?port=81")["recent"], 5), mesh.json("/flows?limit=20")

    every = mesh.json("/flows")
    assert set(every) == {"live", "recent"}, every.keys()
    for f in every["recent"]:
        assert_flow_schema(f)

    refused = mesh.json("/flows?decision=refuse")["recent"]
    assert refused and all(f["decision"] == "refuse" for f in refused), refused
    assert {"blocked.ctl.test", "unclaimed.ctl.test"} <= {f["host"] for f in refused}, refused

    api = mesh.json("/flows?host=api.ctl.test&port=80&protocol=http1&decision=mock")["recent"]
    assert api, mesh.json("/flows?host=api.ctl.test")
    assert all((f["host"], f["dst_port"], f["protocol"], f["decision"], f["service"])
               == ("api.ctl.test", 80, "http1", "mock", "api") for f in api), api[:3]

    by_port = mesh.json("/flows?port=8080")["recent"]
    assert by_port and all(f["dst_port"] == 8080 and f["host"] == "blocked.ctl.test"
                           and f["service"] == "blocked" for f in by_port), by_port

    glob = mesh.json("/flows?host=*.ctl.test&decision=refuse")["recent"]
    assert {"blocked.ctl.test", "unclaimed.ctl.test"} <= {f["host"] for f in glob}, glob
    assert not mesh.json("/flows?host=*.nowhere.test")["recent"]
    assert not mesh.json("/flows?protocol=kafka")["recent"]

    # the last `limit` to end, newest first
    last3 = mesh.json("/flows?limit=3")["recent"]
    assert len(last3) == 3, last3
    times = [f["time"] for f in last3]
    assert times == sorted(times, reverse=True), times
    assert len(mesh.json("/flows?limit=1")["recent"]) == 1
    two = mesh.json("/flows?decision=refuse&limit=2")["recent"]
    assert len(two) == 2 and all(f["decision"] == "refuse" for f in two), two

    # a flow still open is live, then recent once closed
    port = mesh.run({"open": ["api.ctl.test", 80]})["port"]
    try:
        def held():
            return [f for f in mesh.json("/flows?host=api.ctl.test")["live"]
                    if f["src"].endswith(f":{port}")]
        live = wait_for(held, 5)
        assert len(live) == 1, mesh.json("/flows")
        f = live[0]
        assert (f["decision"], f["service"], f["host"]) == ("mock", "api", "api.ctl.test"), f
        assert f["dst"].endswith(":80") and isinstance(f["flow_id"], int), f
        assert not mesh.json("/flows?host=api.ctl.test&decision=refuse")["live"]
        assert not mesh.json("/flows?host=blocked.ctl.test")["live"]
    finally:
        mesh.run({"close_all": True})
    gone = wait_for(lambda: f["flow_id"] not in
                    [x["flow_id"] for x in mesh.json("/flows")["live"]], 5)
    assert gone, mesh.json("/flows")
    assert wait_for(lambda: f["flow_id"] in
                    [x["flow_id"] for x in mesh.json("/flows?host=api.ctl.test")["recent"]], 5)


# ==========================================================================
# /events


def test_events_snapshot_and_follow(mesh):
    tag = uuid.uuid4().hex
    mesh.requests({"url": f"{API}/hello?tag={tag}"})
    r = mesh.get("/events")
    assert r.headers["content-type"] == "application/x-ndjson", r.headers
    evs = [json.loads(l) for l in r.text.splitlines()]
    assert evs and all(isinstance(e, dict) and "kind" in e for e in evs)
    assert {"dns", "flow", "http"} <= {e["kind"] for e in evs}, {e["kind"] for e in evs}
    assert tagged([e for e in evs if e["kind"] == "http"], tag), "the tagged request is missing"

    # follow: what is recorded after the call starts streams in
    tag2 = uuid.uuid4().hex
    with requests.get(mesh.base + "/events?follow=1", stream=True, timeout=(5, 10)) as s:
        assert s.status_code == 200, s.text
        lines = s.iter_lines()
        json.loads(next(lines))  # the backlog comes first
        t0 = time.monotonic()
        threading.Thread(target=mesh.requests, args=({"url": f"{API}/hello?tag={tag2}"},),
                         daemon=True).start()
        seen = []
        for line in lines:
            if not line:
                continue
            ev = json.loads(line)
            seen.append(ev["kind"])
            if ev["kind"] == "http" and tag2 in (ev.get("query") or ""):
                break
            assert time.monotonic() - t0 < 10, f"no event for the new request; saw {seen[-20:]}"
        assert ev["service"] == "api" and ev["route"] == "hello" and ev["status"] == 200, ev
    # a closed follower does not disturb the rest
    assert mesh.get("/healthz").text == "ok\n"
    out = mesh.requests({"url": f"{API}/hello"})
    assert out[0]["status"] == 200, out


# ==========================================================================
# /requests and /requests/unmatched


def test_requests_journal_shows_method_path_headers_body(mesh):
    tag = uuid.uuid4().hex
    out = mesh.requests({"method": "POST", "url": f"{API}/submit?tag={tag}",
                         "headers": {"X-Api-Key": "k1", "X-Tenant": "t1", "X-Extra": "e-" + tag},
                         "json": {"order": tag, "qty": 3}})
    assert out[0]["status"] == 201, out

    def mine():
        return tagged(mesh.json("/requests?service=api")["requests"], tag)

    entries = wait_for(mine, 5)
    assert len(entries) == 1, entries
    e = entries[0]
    assert (e["service"], e["method"], e["path"], e["route"], e["answered_by"], e["status"]) == \
        ("api", "POST", "/submit", "submit", "route", 201), e
    assert e["query"] == f"tag={tag}" and e["host"] == "api.ctl.test", e
    h = {k.lower(): v for k, v in e["request_headers"].items()}
    assert h["x-api-key"] == "[redacted]" and h["x-tenant"] == "t1" and h["x-extra"] == "e-" + tag, h
    assert h["content-type"] == "application/json", h
    assert json.loads(e["request_body"]) == {"order": tag, "qty": 3}, e
    assert json.loads(e["response_body"]) == {"accepted": True}, e
    assert "near_misses" not in e or not e["near_misses"], e

    assert tagged(mesh.json("/requests")["requests"], tag) == entries
    assert mesh.json("/requests?service=blocked")["requests"] == []
    assert mesh.json("/requests?service=nope")["requests"] == []
    assert not tagged(mesh.json("/requests/unmatched")["requests"], tag)


def test_unmatched_requests_name_the_header_that_differed(mesh):
    tag = uuid.uuid4().hex
    out = mesh.requests(
        {"method": "POST", "url": f"{API}/submit?tag={tag}&case=missing",
         "headers": {"X-Api-Key": "k1"}, "data": "x"},
        {"method": "POST", "url": f"{API}/submit?tag={tag}&case=wrong",
         "headers": {"X-Api-Key": "k1", "X-Tenant": "t2"}, "data": "x"},
        {"url": f"{API}/hello?tag={tag}&case=matched"},
    )
    assert [o["status"] for o in out] == [404, 404, 200], out

    entries = wait_for(lambda: len(tagged(mesh.json("/requests/unmatched")["requests"], tag)) >= 2, 5)
    entries = tagged(mesh.json("/requests/unmatched")["requests"], tag)
    assert [e["query"].split("case=")[1] for e in entries] == ["missing", "wrong"], entries
    for e in mesh.json("/requests/unmatched")["requests"]:
        assert e["route"] is None and e["answered_by"] in ("fallback", "pass"), e
    missing, wrong = entries
    assert (missing["status"], missing["answered_by"], missing["path"]) == (404, "fallback", "/submit")

    def submit_miss(e):
        misses = {m["route"]: m["differences"] for m in e.get("near_misses", [])}
        assert "submit" in misses, f"no near miss for route `submit`: {e.get('near_misses')}"
        return misses["submit"]

    d = submit_miss(missing)
    assert len(d) == 1 and "x-tenant" in d[0].lower() and "missing" in d[0], d
    d = submit_miss(wrong)
    assert len(d) == 1 and "x-tenant" in d[0].lower() and "t2" in d[0] and "t1" in d[0], d
    # the closest routes come first: `submit` differs in one thing only
    assert len(missing["near_misses"][0]["differences"]) == 1, missing["near_misses"]

    only_api = mesh.json("/requests/unmatched?service=api")["requests"]
    assert tagged(only_api, tag) == entries
    assert mesh.json("/requests/unmatched?service=nope")["requests"] == []


# ==========================================================================
# PUT /rules


def test_put_rules_swaps_the_rules_while_the_sut_loops(mesh):
    t = time.time()
    wait_loop_version(mesh, t, 1)
    before = mesh.json("/rules")
    g = before["generation"]
    assert [s["name"] for s in before["services"]] == ["api", "blocked"], before
    assert {"name": "api", "action": "http"} in before["services"], before
    assert before["unmatched"] == "refuse", before
    reloads0 = mesh.metrics()
    kept = {"keepalive": {"host": "api.ctl.test", "path": "/hello"}}
    assert mesh.run(kept)["text"] == '{"version":1}'

    try:
        r = mesh.api("PUT", "/rules", data=API_V2, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 200, r.text
        assert r.json() == {"ok": True, "generation": g + 1, "services": ["api", "blocked"]}, r.json()
        t_put = time.time()
        wait_loop_version(mesh, t_put, 2)
        # a connection opened before the reload keeps the rules it started with
        again = mesh.run(kept)
        assert (again["status"], again["x-version"]) == (200, "1"), again
        time.sleep(0.3)
        after = mesh.loop_after(t_put)
        assert after and all(version_of(l) == 2 for l in after), \
            f"requests made after PUT /rules answered by the old rules: {after}"
        now = mesh.json("/rules")
        assert now["generation"] == g + 1, now
        assert [s["text"] for s in now["sources"]] == [API_V2], now["sources"]
        assert now["sources"][0]["name"] == "admin:PUT /rules", now["sources"]

        # an invalid body: 400 with FILE:LINE:COLUMN, the rules in force stay
        for bad, where in ((BAD_RULES, BAD_AT), ("services:\n  - name: x\n    match: { host: *.ctl.test }\n    pass: {}\n", "3:21")):
            r = mesh.api("PUT", "/rules", data=bad)
            assert r.status_code == 400, r.text
            body = r.json()
            assert body["ok"] is False, body
            assert re.match(r"^admin:PUT /rules:\d+:\d+: ", body["error"]), body
            assert body["error"].startswith(f"admin:PUT /rules:{where}: "), body
        t_bad = time.time()
        assert mesh.json("/rules")["generation"] == g + 1
        assert wait_for(lambda: len(mesh.loop_after(t_bad)) >= 5, 5), mesh.describe()
        assert all(version_of(l) == 2 for l in mesh.loop_after(t_bad))
        out = mesh.requests({"url": f"{API}/hello"})
        assert json.loads(out[0]["text"]) == {"version": 2}, out

        # each reload is an event and a metric
        reloads = [e for e in mesh.events() if e["kind"] == "reload"]
        ok = [e for e in reloads if e["generation"] == g + 1 and e["ok"]]
        assert ok and ok[-1]["source"] == "admin" and ok[-1]["services"] == ["api", "blocked"], reloads
        assert ok[-1]["error"] is None, ok
        failed = [e for e in reloads if not e["ok"]]
        assert len(failed) >= 2 and failed[-2]["error"].startswith(f"admin:PUT /rules:{BAD_AT}:"), failed
        assert all(e["source"] == "admin" and e["generation"] == g + 1 for e in failed[-2:]), failed
        m = mesh.metrics()
        for result, d in (("ok", 1), ("error", 2)):
            assert sample(m, "meshwrap_rule_reloads", "meshwrap_rule_reloads_total", result=result) \
                == sample(reloads0, "meshwrap_rule_reloads", "meshwrap_rule_reloads_total",
                          result=result) + d, result
    finally:
        r = mesh.api("PUT", "/rules", data=API_RULES)
    assert r.status_code == 200, r.text
    wait_loop_version(mesh, time.time(), 1)


def test_put_rules_empty_body_and_json_are_rules_too(mesh):
    """An empty rules text is valid (no services); the SUT's next call is
    refused. JSON is YAML."""
    try:
        r = mesh.api("PUT", "/rules", data="")
        assert r.status_code == 200 and r.json()["services"] == [], r.text
        out = mesh.requests({"url": f"{API}/hello", "timeout": 5})
        assert "exc" in out[0], f"no service claims api.ctl.test any more: {out}"
        doc = {"services": [{"name": "api", "match": {"host": "api.ctl.test"},
                             "http": {"routes": [{"name": "hello", "when": {"path": "/hello"},
                                                  "respond": {"headers": {"X-Version": "7"},
                                                              "json": {"version": 7}}}]}}]}
        r = mesh.api("PUT", "/rules", data=json.dumps(doc))
        assert r.status_code == 200 and r.json()["services"] == ["api"], r.text
        out = mesh.requests({"url": f"{API}/hello"})
        assert out[0].get("status") == 200 and json.loads(out[0]["text"]) == {"version": 7}, out
    finally:
        r = mesh.api("PUT", "/rules", data=API_RULES)
        assert r.status_code == 200, r.text


def test_exit_summary_lists_each_route_once_after_reloads(new_mesh):
    m = new_mesh()
    assert wait_for(lambda: len(m.loop_lines()) >= 3, 5)
    for text in (API_V2, API_RULES):
        assert m.api("PUT", "/rules", data=text).status_code == 200
    wait_loop_version(m, time.time(), 1)
    m.stop()
    err = m.err_text()
    assert "HTTP calls per route:" in err, err
    routes = [l.strip().split(":")[0] for l in err.splitlines() if l.strip().startswith("api / ")]
    assert sorted(set(routes)) == ["api / hello", "api / steps", "api / submit"], err
    assert len(routes) == len(set(routes)), f"routes listed more than once after 2 reloads:\n{err}"


# ==========================================================================
# POST /reset


def test_reset_puts_sequences_and_the_journal_back(mesh):
    assert mesh.api("POST", "/reset?service=api").status_code == 200
    tag = uuid.uuid4().hex
    out = mesh.requests(*[{"url": f"{API}/steps?tag={tag}"}] * 2)
    assert [o["text"] for o in out] == ["first", "second"], out
    assert wait_for(lambda: len(tagged(mesh.json("/requests?service=api")["requests"], tag)) == 2, 5)

    r = mesh.api("POST", "/reset?service=api")
    assert r.status_code == 200 and r.json() == {"ok": True, "reset": ["api"]}, r.text
    assert not tagged(mesh.json("/requests?service=api")["requests"], tag), "the journal was not reset"
    assert not tagged(mesh.json("/requests")["requests"], tag)
    out = mesh.requests(*[{"url": f"{API}/steps?tag={tag}"}] * 2)
    assert [o["text"] for o in out] == ["first", "second"], f"the sequence was not reset: {out}"

    # all services
    r = mesh.api("POST", "/reset")
    assert r.status_code == 200 and r.json()["ok"] is True and "api" in r.json()["reset"], r.text
    assert not tagged(mesh.json("/requests")["requests"], tag)
    out = mesh.requests({"url": f"{API}/steps"})
    assert out[0]["text"] == "first", out

    r = mesh.api("POST", "/reset?service=nope")
    assert r.status_code == 404 and "nope" in r.json()["error"], r.text


# ==========================================================================
# POST /verify and `meshwrap verify`


def fresh_calls(mesh):
    """After a reset: 2 matched POST /submit and 1 GET /steps."""
    assert mesh.api("POST", "/reset?service=api").status_code == 200
    ok = {"method": "POST", "url": f"{API}/submit", "headers": {"X-Api-Key": "k1", "X-Tenant": "t1"},
          "data": "x"}
    out = mesh.requests(ok, ok, {"url": f"{API}/steps"})
    assert [o["status"] for o in out] == [201, 201, 200], out
    assert wait_for(lambda: len([e for e in mesh.json("/requests?service=api")["requests"]
                                 if e["route"] in ("submit", "steps")]) == 3, 5)


PASSING = """\
- { service: api, route: submit, times: 2 }
- { service: api, route: steps, at_least: 1, at_most: 1 }
- { service: api, route: nonexistent-route, never: true }
"""
FAILING = {"expect": [{"service": "api", "route": "submit", "times": 3},
                      {"service": "api", "route": "steps", "never": True},
                      {"service": "api", "route": "submit", "at_least": 1}]}


def test_verify_endpoint(mesh):
    fresh_calls(mesh)
    failed0 = sample(mesh.metrics(), "meshwrap_expectations_failed",
                     "meshwrap_expectations_failed_total")

    r = mesh.api("POST", "/verify", data=PASSING)
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["ok"] is True and v["failed"] == 0, v
    assert [(x["route"], x["calls"], x["ok"]) for x in v["results"]] == \
        [("submit", 2, True), ("steps", 1, True), ("nonexistent-route", 0, True)], v
    assert v["results"][0]["expected"] == "exactly 2 times", v

    r = mesh.api("POST", "/verify", json=FAILING)  # JSON, `{expect: [...]}`
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["ok"] is False and v["failed"] == 2, v
    sub, steps, fine = v["results"]
    assert (sub["ok"], sub["calls"], sub["expected"]) == (False, 2, "exactly 3 times"), sub
    assert "FAIL" in sub["report"] and "api / submit" in sub["report"], sub["report"]
    assert "POST /submit -> 201 (submit)" in sub["report"], sub["report"]
    assert any("POST /submit -> 201 (submit)" == c for c in sub["entries"]), sub["entries"]
    assert (steps["ok"], steps["calls"], steps["expected"]) == (False, 1, "never"), steps
    assert fine["ok"] is True, fine
    assert sample(mesh.metrics(), "meshwrap_expectations_failed",
                  "meshwrap_expectations_failed_total") == failed0 + 2

    # verifying changes nothing: same answer again
    assert mesh.api("POST", "/verify", data=PASSING).json()["ok"] is True

    r = mesh.api("POST", "/verify", data="- { service: nope }\n")
    assert r.status_code == 400 and "nope" in r.json()["error"], r.text
    r = mesh.api("POST", "/verify", data="- { service: api, times: 1, never: true }\n")
    assert r.status_code == 400 and "expectations" in r.json()["error"], r.text
    r = mesh.api("POST", "/verify", data="not: [a list")
    assert r.status_code == 400, r.text


def test_verify_subcommand_exit_codes(mesh, meshwrap_bin, tmp_path):
    fresh_calls(mesh)
    good = tmp_path / "good.yaml"
    good.write_text(PASSING)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(FAILING))

    def verify(*args):
        return subprocess.run([meshwrap_bin, "verify", *args], capture_output=True, text=True,
                              timeout=30, env=jail_env())

    r = verify("--admin", mesh.admin, str(good))
    assert r.returncode == 0, f"{r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "ok   api / submit: expected exactly 2 times, called 2 times" in r.stdout, r.stdout
    assert "FAIL" not in r.stdout, r.stdout

    r = verify("--admin", mesh.admin, str(bad))
    assert r.returncode == 1, f"{r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "FAIL api / submit: expected exactly 3 times, called 2 times" in r.stdout, r.stdout
    assert "FAIL api / steps: expected never, called 1 time" in r.stdout, r.stdout
    assert "POST /submit -> 201 (submit)" in r.stdout, r.stdout

    # not an expectation, an unknown service, nobody listening: errors (2)
    junk = tmp_path / "junk.yaml"
    junk.write_text("- { servce: api }\n")
    r = verify("--admin", mesh.admin, str(junk))
    assert r.returncode == 2 and "junk.yaml" in r.stderr, r.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("- { service: nope }\n")
    r = verify("--admin", mesh.admin, str(unknown))
    assert r.returncode == 2 and "400" in r.stderr and "nope" in r.stderr, r.stderr
    r = verify("--admin", f"127.0.0.1:{closed_port()}", str(good))
    assert r.returncode == 2 and "cannot reach the admin API" in r.stderr, r.stderr


# ==========================================================================
# --watch


def test_watch_reloads_an_edited_rules_file(new_mesh, tmp_path):
    rules = tmp_path / "watched.yaml"
    rules.write_text(API_RULES)
    m = new_mesh(rules=[rules], opts=["--watch"])
    wait_loop_version(m, 0, 1)
    assert m.json("/rules")["generation"] == 0

    # an edit of the same length: the modification time tells
    rules.write_text(API_V2)
    t = time.time()
    wait_loop_version(m, t, 2)
    assert m.json("/rules")["generation"] == 1
    assert m.json("/rules")["sources"][0]["text"] == API_V2

    # a broken edit is rejected; the rules in force stay
    broken = API_V2.replace("match: { host: api.ctl.test }", "match: { host: *.ctl.test }")
    assert broken != API_V2
    rules.write_text(broken)

    def rejected():
        return [e for e in m.events() if e["kind"] == "reload" and not e["ok"]]

    assert wait_for(rejected, 5), f"no rejected reload event\n{m.describe()}"
    t_bad = time.time()
    assert wait_for(lambda: len(m.loop_after(t_bad)) >= 5, 5)
    assert all(version_of(l) == 2 for l in m.loop_after(t_bad))
    assert m.json("/rules")["generation"] == 1

    # and a fixed one is picked up again
    rules.write_text(API_RULES.replace("version: 1", "version: 3").replace('"1"', '"3"'))
    wait_loop_version(m, time.time(), 3)

    reloads = [e for e in m.events() if e["kind"] == "reload"]
    assert [(e["source"], e["ok"], e["generation"]) for e in reloads] == \
        [("watch", True, 1), ("watch", False, 1), ("watch", True, 2)], reloads
    assert reloads[0]["services"] == ["api", "blocked"] and reloads[0]["error"] is None, reloads
    err = reloads[1]["error"]
    assert err.startswith(f"{rules}:6:21: services[0].match.host: "), err
    m_ = m.metrics()
    assert sample(m_, "meshwrap_rule_reloads", "meshwrap_rule_reloads_total", result="ok") == 2
    assert sample(m_, "meshwrap_rule_reloads", "meshwrap_rule_reloads_total", result="error") == 1


# ==========================================================================
# reloads under load: a response never mixes two rule sets


def test_50_reloads_during_2000_requests_never_mix_rule_sets(new_mesh):
    m = new_mesh(rules=[RULES / "set-a.yaml"], loop=None)
    sets = {"A": (RULES / "set-a.yaml").read_text(), "B": (RULES / "set-b.yaml").read_text()}
    total, reloads = 2000, 50
    result = {}

    def storm():
        try:
            result["out"] = m.run({"storm": {"host": "flip.ctl.test", "min": total,
                                             "until": "storm-done", "max_seconds": 80}}, timeout=90)
        except BaseException as e:  # reported below
            result["error"] = e

    th = threading.Thread(target=storm, daemon=True)
    th.start()
    progress = m.spool / "progress"

    def done():
        try:
            return int(progress.read_text())
        except (OSError, ValueError):
            return 0

    puts = []
    try:
        for i in range(reloads):
            # spread the reloads over the requests: one every total/reloads
            assert wait_for(lambda: done() >= i * total // reloads or "error" in result, 60, 0.005)
            name = "B" if i % 2 == 0 else "A"
            r = m.api("PUT", "/rules", data=sets[name])
            puts.append((done(), r.status_code, r.json()))
    finally:
        (m.spool / "storm-done").touch()
        th.join(100)
    assert "error" not in result, result.get("error")
    out = result["out"]
    assert len(out) >= total, f"the SUT made {len(out)} requests"
    bad_puts = [p for p in puts if p[1] != 200 or not p[2]["ok"]]
    assert not bad_puts, bad_puts
    assert [p[2]["generation"] for p in puts] == list(range(1, reloads + 1)), puts
    assert puts[-1][0] < len(out), "the last reload came after the last request"

    errors = [o for o in out if o[1] != 200]
    assert not errors, f"{len(errors)} of {len(out)} requests failed, e.g. {errors[:5]}"
    mixed, seen = [], {"A": 0, "B": 0}
    for path, status, header, body, fresh in out:
        j = json.loads(body)
        names = {header, j["n"]} | ({j["set"]} if path == "/mix" else set())
        if len(names) != 1 or header not in seen:
            mixed.append((path, header, body, fresh))
        else:
            seen[header] += 1
    assert not mixed, f"{len(mixed)} responses mix the two rule sets, e.g. {mixed[:5]}"
    assert seen["A"] > 100 and seen["B"] > 100, f"answers per set: {seen}"
    fresh_sets = [o[2] for o in out if o[4]]
    switches = sum(1 for a, b in zip(fresh_sets, fresh_sets[1:]) if a != b)
    assert switches >= reloads // 2, f"new connections switched sets only {switches} times"

    # the journal agrees: every request, each route of the set that answered
    journal = wait_for(lambda: (lambda j: len(j) >= len(out) and j)(
        m.json("/requests?service=flip")["requests"]), 10)
    assert journal and len(journal) == len(out), \
        f"{len(out)} requests, {len(m.json('/requests?service=flip')['requests'])} in the journal"
    wrong = [e for e in journal
             if e["status"] != 200 or e["route"][-1] != json.loads(e["response_body"])["n"]]
    assert not wrong, f"journal entries whose route is not of the set that answered: {wrong[:5]}"

    rl = [e for e in m.events() if e["kind"] == "reload"]
    assert len(rl) == reloads and all(e["ok"] and e["source"] == "admin" for e in rl), rl[:3]
    assert sample(m.metrics(), "meshwrap_rule_reloads", "meshwrap_rule_reloads_total",
                  result="ok") == reloads


# ==========================================================================
# the bearer token


def test_token_guards_mutating_calls(new_mesh, meshwrap_bin, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    m = new_mesh(opts=["--admin-token-file", str(token_file)])
    good = {"Authorization": "Bearer s3cret-token"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        for method, path, data in (("POST", "/reset", None), ("PUT", "/rules", API_V2),
                                   ("POST", "/verify", "- { service: api }\n")):
            r = m.api(method, path, headers=headers, data=data)
            assert r.status_code == 401, f"{method} {path} {headers}: {r.status_code} {r.text}"
            assert "Bearer" in r.json()["error"], r.text
    assert m.json("/rules")["generation"] == 0, "an unauthorized PUT changed the rules"

    assert m.api("POST", "/reset", headers=good).status_code == 200
    assert m.api("POST", "/verify", headers=good, data="- { service: api }\n").status_code == 200
    r = m.api("PUT", "/rules", headers=good, data=API_V2)
    assert r.status_code == 200 and r.json()["generation"] == 1, r.text

    for path in ("/healthz", "/readyz", "/metrics", "/flows", "/events", "/requests",
                 "/requests/unmatched", "/rules"):
        assert m.api("GET", path).status_code == 200, path

    expect = tmp_path / "expect.yaml"
    expect.write_text("- { service: api, at_least: 1 }\n")
    assert wait_for(lambda: m.json("/requests?service=api")["requests"], 5)  # since the reset
    run = lambda *a: subprocess.run([meshwrap_bin, "verify", "--admin", m.admin, *a, str(expect)],
                                    capture_output=True, text=True, timeout=30)
    r = run()
    assert r.returncode == 2 and "401" in r.stderr, (r.returncode, r.stderr)
    r = run("--admin-token-file", str(token_file))
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)


@pytest.mark.parametrize("addr", ["0.0.0.0", "[::]"])
def test_non_loopback_admin_without_token_refuses_to_start(meshwrap_bin, tmp_path, addr):
    marker = tmp_path / "sut-ran"
    events = tmp_path / "events.jsonl"
    port = free_port()
    r = subprocess.run([meshwrap_bin, "--events", str(events), "--admin", f"{addr}:{port}",
                        "--", "sh", "-c", f"touch {marker}; curl -s http://api.ctl.test/"],
                       capture_output=True, text=True, timeout=30, env=jail_env(),
                       cwd=str(tmp_path))
    assert r.returncode != 0, r
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--admin-token-file" in r.stderr and "meshwrap:" in r.stderr, r.stderr
    # the message names the address as it was given
    assert f"--admin {addr}:{port} " in r.stderr, r.stderr
    assert not marker.exists(), "the command ran"
    assert not events.exists() or events.read_text() == "", "traffic was recorded"


def test_admin_address_in_use_stops_before_the_command(meshwrap_bin, tmp_path):
    marker = tmp_path / "sut-ran"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([meshwrap_bin, "--admin", f"127.0.0.1:{port}", "--",
                            "touch", str(marker)],
                           capture_output=True, text=True, timeout=30, env=jail_env())
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr, r.stderr
    assert not marker.exists(), "the command ran without its admin API"


def test_no_journal_keeps_metrics_but_no_requests(new_mesh):
    m = new_mesh(opts=["--no-journal"])
    assert wait_for(lambda: len(m.loop_lines()) >= 5, 5)
    assert wait_for(lambda: sample(m.metrics(), "meshwrap_responder_requests",
                                   "meshwrap_responder_requests_total", service="api") >= 5, 5)
    assert m.json("/requests")["requests"] == []
    assert m.json("/requests?service=api")["requests"] == []
    assert [e for e in m.events() if e["kind"] == "http"], "http events still stream"
    v = m.api("POST", "/verify", data="- { service: api, route: hello }\n").json()
    assert v["ok"] is False and v["results"][0]["calls"] == 0, v


def test_exit_with_an_events_follower_connected(new_mesh):
    m = new_mesh()
    with requests.get(m.base + "/events?follow=1", stream=True, timeout=(5, 10)) as s:
        lines = s.iter_lines()
        next(lines)
        t0 = time.monotonic()
        assert m.stop() == 0
        assert time.monotonic() - t0 < 5, "meshwrap waited for the follower"
        try:
            list(lines)  # the stream ends with meshwrap
        except requests.RequestException:
            pass


# ==========================================================================
# the admin port from inside the jail


@pytest.mark.parametrize("admin", ["127.0.0.1", "::1"])
def test_admin_port_is_not_reachable_from_the_jail(new_mesh, http_server, admin):
    m = new_mesh(admin=admin, loop=None)
    port = m.port
    curl = ["curl", "-sS", "--noproxy", "*", "--max-time", "5"]
    urls = [f"http://host.meshwrap.internal:{port}/healthz",
            f"http://10.0.2.2:{port}/healthz",
            f"http://[fd00:6d77::2]:{port}/healthz",
            f"http://admin.ctl.test:{port}/healthz",   # hosts: -> 127.0.0.1
            f"http://admin6.ctl.test:{port}/healthz"]  # hosts: -> ::1
    for url in urls:
        r = m.run({"run": curl + [url]})
        assert r["rc"] != 0 and "ok" not in r["stdout"], f"{url} reached the admin API: {r}"
        assert r["rc"] == 7, f"{url}: expected a refused connection (curl exit 7): {r}"
        assert m.get("/healthz").text == "ok\n"  # it is up all the while
    # the gateway itself works: the host's server on another port answers
    r = m.run({"run": curl + [f"http://host.meshwrap.internal:{http_server.port}/hello"]})
    assert r["rc"] == 0 and r["stdout"].startswith("hello from host"), r
    r = m.run({"run": curl + [f"http://admin.ctl.test:{http_server.port}/hello"]})
    assert r["rc"] == 0 and r["stdout"].startswith("hello from host"), r

    refused = m.json(f"/flows?port={port}")["recent"]
    assert len(refused) >= len(urls), refused
    assert all(f["decision"] == "refuse" and "admin API" in f["reason"] for f in refused), refused


# ==========================================================================
# unix socket


def test_unix_socket_admin(new_mesh, meshwrap_bin, tmp_path):
    m = new_mesh(admin="unix")
    assert m.admin.startswith("unix:/tmp/") and os.path.exists(m.sock)
    r = m.curl("/healthz")
    assert r.returncode == 0 and r.stdout == "ok\n", r
    assert m.curl("/readyz").stdout == "ready\n"
    assert wait_for(lambda: len(m.loop_lines()) >= 3, 5)

    fams = metric_samples(m.curl("/metrics").stdout)
    assert sample(fams, "meshwrap_responder_requests", "meshwrap_responder_requests_total",
                  service="api", outcome="2xx") > 0, fams.get("meshwrap_responder_requests")
    journal = json.loads(m.curl("/requests?service=api").stdout)["requests"]
    assert journal and journal[0]["path"] == "/hello", journal[:1]

    rules = tmp_path / "v2.yaml"
    rules.write_text(API_V2)
    r = m.curl("/rules", "-X", "PUT", "--data-binary", f"@{rules}")
    assert r.returncode == 0 and json.loads(r.stdout)["generation"] == 1, r
    wait_loop_version(m, time.time(), 2)
    r = m.curl("/reset?service=api", "-X", "POST")
    assert json.loads(r.stdout) == {"ok": True, "reset": ["api"]}, r

    expect = tmp_path / "expect.yaml"
    expect.write_text("- { service: api, route: hello, at_least: 1 }\n")
    assert wait_for(lambda: json.loads(m.curl("/requests?service=api").stdout)["requests"], 5)
    r = subprocess.run([meshwrap_bin, "verify", "--admin", m.admin, str(expect)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "ok   api / hello" in r.stdout, (r.returncode, r.stdout, r.stderr)
