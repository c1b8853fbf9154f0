"""Hostile input from inside the jail: each case used to crash meshwrap,
freeze its one data-plane thread, or get an answer no real server gives.
Each now gets the protocol's own error, and the appliance keeps serving
(every test ends with a normal request that must still be answered).
"""
import contextlib
import os
import shutil
import subprocess

import pytest

from conftest import CURL, HELPERS, PYTHON

HAVE_REDIS_CLI = shutil.which("redis-cli") is not None
HAVE_PYMONGO = subprocess.run([PYTHON, "-c", "import pymongo"], capture_output=True).returncode == 0
need_cli = pytest.mark.skipif(not HAVE_REDIS_CLI, reason="redis-cli not installed (Debian redis-tools)")
need_pymongo = pytest.mark.skipif(not HAVE_PYMONGO, reason="pymongo not installed")

REDIS_RULES = """
services:
  - name: cache
    match: { host: redis.hard.test, port: 6379 }
    redis:
      seed:
        s: { type: set, value: [a, b, c] }
        h: { type: hash, value: { f: v, g: w } }
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: x
"""

MONGO_RULES = """
services:
  - name: db
    match: { host: mongo.hard.test, port: 27017 }
    mongo: {}
"""


@contextlib.contextmanager
def running(jail, cmd, first_line, rules=None):
    """meshwrap running `cmd` in the background, once the SUT has printed
    `first_line`; killed at the end if it is still there."""
    args, _ = jail.command(cmd, rules=rules)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == first_line
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def redis_cli(jail, lines):
    script = "\n".join(f"redis-cli -h redis.hard.test {l}; echo '<<END>>'" for l in lines)
    res = jail.run(["sh", jail.write("cli.sh", script + "\n")], rules=REDIS_RULES)
    outs = [o.strip() for o in res.stdout.split("<<END>>")][: len(lines)]
    return res, outs


@need_cli
def test_redis_arguments_that_used_to_panic_get_redis_errors(jail):
    res, outs = redis_cli(jail, [
        "SRANDMEMBER s -9223372036854775807",
        "HRANDFIELD h -9223372036854775808",
        "BLPOP k 1e300",
        "BRPOPLPUSH a b 18446744073709551616",
        "BLMOVE a b LEFT LEFT 1e300",
        "PING",
    ])
    assert res.returncode == 0, res.describe()
    assert outs[0] == "ERR value is out of range", outs
    assert outs[1] == "ERR value is out of range", outs
    assert outs[2:5] == ["ERR timeout is out of range"] * 3, outs
    assert outs[5] == "PONG", outs


@need_cli
def test_redis_huge_repeat_count_is_refused_not_built(jail):
    res, outs = redis_cli(jail, ["SRANDMEMBER s -100000000", "SRANDMEMBER s -5", "PING"])
    assert res.returncode == 0, res.describe()
    assert outs[0].startswith("ERR count 100000000 is over meshwrap's limit"), outs
    assert len(outs[1].split()) == 5 and set(outs[1].split()) <= {"a", "b", "c"}, outs
    assert outs[2] == "PONG", outs


@need_cli
def test_redis_exponential_glob_pattern_is_answered(jail):
    # The class of CVE-2022-36021: with a backtracking matcher this KEYS
    # never returns (and freezes every other service with it).
    pattern = "*a" * 14 + "*b"
    res, outs = redis_cli(jail, [f"KEYS '{pattern}'", f"SCAN 0 MATCH '{pattern}' COUNT 100", "PING"])
    assert res.returncode == 0, res.describe()
    assert outs[0] == "", outs
    assert outs[1].split() == ["0"], outs
    assert outs[2] == "PONG", outs


@need_pymongo
def test_mongo_hostile_messages_get_errors_and_the_service_goes_on(jail):
    """A raw client sends what no driver would: a document nested 5,000
    levels deep (it overflowed the stack and aborted meshwrap), unknown
    required OP_MSG flag bits and a wrong checksum (mongod refuses both),
    then a correct checksum; pymongo then uses the service normally."""
    code = r'''
import json, socket, struct, sys
sys.path.insert(0, %r)
import bson
from mongo_raw import op_msg, crc32c, nested_doc

def ask(raw):
    s = socket.create_connection(("mongo.hard.test", 27017), timeout=20)
    s.sendall(raw)
    head = b""
    while len(head) < 16:
        chunk = s.recv(16 - len(head))
        if not chunk:
            return None
        head += chunk
    n = struct.unpack("<i", head[:4])[0]
    rest = b""
    while len(rest) < n - 16:
        chunk = s.recv(n - 16 - len(rest))
        if not chunk:
            break
        rest += chunk
    s.close()
    return bson.decode(rest[5:])

hello = bson.encode({"ping": 1, "$db": "admin"})
deep = nested_doc(5000)
deep_cmd = bson.encode({"insert": "c", "$db": "app"})[:-1]
deep_cmd = deep_cmd + b"\x03d\x00" + deep + b"\x00"
deep_cmd = struct.pack("<i", len(deep_cmd)) + deep_cmd[4:]
out = {
    "deep": ask(op_msg(deep_cmd)),
    "flags": ask(op_msg(hello, flags=1 << 5)),
    "bad_checksum": ask(op_msg(hello, flags=1, checksum=lambda b: crc32c(b) ^ 1)),
    "good_checksum": ask(op_msg(hello, flags=1, checksum=crc32c)),
}
from pymongo import MongoClient
from bson.int64 import Int64
c = MongoClient("mongodb://mongo.hard.test:27017/", serverSelectionTimeoutMS=10000)
c.app.n.insert_one({"_id": 1, "n": Int64(-2**63)})
out["mod"] = [d["_id"] for d in c.app.n.find({"n": {"$mod": [-1, 0]}})]
out["after"] = c.app.n.count_documents({})
print(json.dumps(out, default=str))
''' % str(HELPERS)
    res = jail.run([PYTHON, jail.write("mongo_hard.py", code)], rules=MONGO_RULES)
    assert res.returncode == 0, res.describe()
    out = res.json_out()
    assert out["deep"]["ok"] == 0 and "nested object depth" in out["deep"]["errmsg"], out
    assert out["flags"]["ok"] == 0 and "required flag" in out["flags"]["errmsg"], out
    assert out["bad_checksum"]["ok"] == 0 and "checksum" in out["bad_checksum"]["errmsg"], out
    assert out["good_checksum"]["ok"] == 1, out
    assert out["mod"] == [1], "i64::MIN % -1 is 0 for MongoDB, not a crash"
    assert out["after"] == 1, out


def test_template_out_of_fuel_is_an_error_answer(jail):
    rules = """
services:
  - name: api
    match: { host: api.hard.test }
    http:
      routes:
        - when: { path: /loop }
          respond: { body: "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}" }
        - when: { path: /loop-by-request }
          respond: { body: "{% for i in range(query.n|int) %}{% for j in range(query.n|int) %}x{% endfor %}{% endfor %}" }
        - when: { path: /ok }
          respond: { body: fine }
"""
    curl = " ".join(f"'{c}'" for c in CURL)
    script = (f"{curl} -w ' %{{http_code}}\\n' http://api.hard.test/loop; "
              f"{curl} -w ' %{{http_code}}\\n' 'http://api.hard.test/loop-by-request?n=90000'; "
              f"{curl} -w ' %{{http_code}}\\n' http://api.hard.test/ok")
    res = jail.run(["sh", "-c", script], rules=rules)
    assert res.returncode == 0, res.describe()
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    assert len(lines) == 3, res.describe()
    for l in lines[:2]:
        assert l.endswith(" 500") and "ran out of fuel" in l, lines
    assert lines[2] == "fine 200", lines


HEAVY_RULES = """
services:
  - name: api
    match: { host: api.heavy.test }
    http:
      routes:
        - when: { path: /heavy }
          respond: { body: "{% set ns = namespace(n=0) %}{% for j in range(4) %}{% for i in range(50000) %}{% set ns.n = ns.n + 1 %}{% endfor %}{% endfor %}{{ ns.n }}" }
        - when: { path: /light }
          respond: { body: light }
"""

# Raw HTTP/1.1 on plain sockets, so the client knows exactly when each
# request has left: every heavy request is sent (its connection accepted by
# meshwrap first) before the light one's connection is even opened.
RAW_HTTP = """
import selectors, socket
def send(path):
    s = socket.create_connection(("api.heavy.test", 80))
    s.sendall(f"GET {path} HTTP/1.1\\r\\nHost: api.heavy.test\\r\\nConnection: close\\r\\n\\r\\n".encode())
    return s
def answers(conns, on_answer):
    # conns: socket -> path; calls on_answer(path, status, body) as each
    # answer is complete (the server closes), in the order they complete.
    sel = selectors.DefaultSelector()
    bufs = {}
    for s, path in conns.items():
        sel.register(s, selectors.EVENT_READ, path)
        bufs[s] = b""
    while bufs:
        for key, _ in sel.select():
            s = key.fileobj
            chunk = s.recv(65536)
            if chunk:
                bufs[s] += chunk
                continue
            sel.unregister(s)
            head, _, body = bufs.pop(s).partition(b"\\r\\n\\r\\n")
            on_answer(key.data, int(head.split()[1]), body.decode())
            s.close()
"""

# Twelve renders that use most of their fuel are sent, then one plain
# request; prints the answers in the order they came.
HEAVY_CLIENT = RAW_HTTP + """
conns = {}
for _ in range(12):
    conns[send("/heavy")] = "/heavy"
conns[send("/light")] = "/light"
answers(conns, lambda path, code, body: print(path, code, body, flush=True))
"""


def test_long_renders_do_not_hold_up_other_requests(jail):
    """A templated answer renders off the data plane: a request for a
    plain answer, sent after a dozen long renders (each near its fuel) were
    asked for, is answered while they are still running (before the last
    of them), instead of waiting behind all of them."""
    res = jail.run([PYTHON, jail.write("heavy.py", HEAVY_CLIENT)], rules=HEAVY_RULES)
    assert res.returncode == 0, res.describe()
    lines = res.stdout.splitlines()
    assert len(lines) == 13, res.describe()
    heavy = [l for l in lines if l.startswith("/heavy")]
    assert heavy == ["/heavy 200 200000"] * 12, res.describe()
    light_at = lines.index("/light 200 light")
    assert light_at < 12, f"the plain request waited for every render: {lines}"


# Forty long renders are sent; SIGTERM makes the client print how many
# answers it had and exit at once.
TERM_CLIENT = RAW_HTTP + """
import os, signal
done = []
def on_term(*_):
    print("term after", len(done), flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
conns = {send("/heavy"): "/heavy" for _ in range(40)}
print("sent", flush=True)
answers(conns, lambda path, code, body: done.append(code))
print("term after", len(done), "(never came)", flush=True)
"""


def test_sigterm_reaches_the_sut_while_the_responders_are_busy(jail):
    """Signals are taken by a thread of their own and long work runs off
    the data plane, so a SIGTERM sent once forty long renders are asked
    for reaches the SUT before they are all answered, and meshwrap exits
    with it."""
    import signal
    with running(jail, [PYTHON, jail.write("term.py", TERM_CLIENT)], b"sent",
                 rules=HEAVY_RULES) as proc:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    out = out.decode()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert "term after" in out and "never came" not in out, out
    assert int(out.split("term after")[1].split()[0]) < 40, out


def test_ca_dir_open_to_others_is_refused(jail, meshwrap_bin, tmp_path):
    loose = tmp_path / "loose-ca"
    loose.mkdir()
    os.chmod(loose, 0o777)
    res = subprocess.run([meshwrap_bin, "--ca-dir", str(loose), "--", "true"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0, res.stderr
    assert "mode 0777" in res.stderr and "chmod go-w" in res.stderr, res.stderr
    assert not any(loose.iterdir()), "nothing is written there"

    tight = tmp_path / "tight-ca"
    res = subprocess.run([meshwrap_bin, "--ca-dir", str(tight), "--", "true"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    key = tight / "meshwrap-ca-key.pem"
    assert key.exists(), list(tight.iterdir())
    os.chmod(key, 0o644)
    res = subprocess.run([meshwrap_bin, "--ca-dir", str(tight), "--", "true"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0, res.stderr
    assert "mode 0644" in res.stderr and "chmod 600" in res.stderr, res.stderr


def test_admin_api_is_not_reachable_by_other_spellings_of_this_host(jail):
    """`hosts:` entries that point at this host in other words than
    127.0.0.1 (IPv4-mapped IPv6, the unspecified addresses, which a connect
    turns into the host itself) must not lead to the admin API either."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rules = """
hosts:
  adm-mapped.test: "::ffff:127.0.0.1"
  adm-any4.test: 0.0.0.0
  adm-any6.test: "::"
  adm-plain.test: 127.0.0.1
"""
    curl = " ".join(f"'{c}'" for c in CURL)
    names = ["adm-mapped.test", "adm-any4.test", "adm-any6.test", "adm-plain.test"]
    script = "; ".join(f"{curl} -o /dev/null http://{n}:{port}/healthz; echo {n}=$?" for n in names)
    res = jail.run(["sh", "-c", script], rules=rules, unmatched="pass",
                   opts=["--admin", f"127.0.0.1:{port}"])
    assert res.returncode == 0, res.describe()
    for n in names:
        assert f"{n}=7" in res.stdout, f"{n} reached the admin API:\n{res.describe()}"
        flows = res.flows(host=n)
        assert flows and all(f["decision"] == "refuse" and "admin API" in f["reason"] for f in flows), \
            res.describe()


def test_many_services_load_in_one_pass(tmp_path, meshwrap_bin):
    """Placing each service's errors used to scan the whole file once per
    service: 20,000 services took a minute, a large PUT /rules froze the
    jail. The limit below only guards against that hang (loading takes a
    fraction of a second)."""
    lines = ["services:"]
    for i in range(20000):
        lines.append(f"  - name: s{i}\n    match: {{ host: h{i}.test, port: 80 }}\n"
                     f"    http: {{ routes: [ {{ name: r{i}, respond: {{ body: ok }} }} ] }}")
    path = tmp_path / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    res = subprocess.run([meshwrap_bin, "check", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "20000 services" in res.stdout + res.stderr, res.stderr
    # A duplicate near the end is still placed at its own line.
    path.write_text("\n".join(lines) + "\n  - name: s19999\n    match: { port: 1 }\n    pass: {}\n")
    res = subprocess.run([meshwrap_bin, "check", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and f"big.yaml:{len(lines) * 3 - 2 + 1}:" in res.stderr, res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the capability drop is for a jail made as root")
def test_root_sut_cannot_join_meshwraps_namespaces(jail):
    """As root there is no user namespace: a root SUT could `nsenter` into
    the host's network namespace through /proc. The capabilities for that
    are dropped from its bounding set unless `--keep-caps` is given."""
    script = ("grep CapBnd /proc/self/status; "
              "nsenter --net=/proc/$PPID/ns/net true 2>&1; echo nsenter=$?")
    res = jail.run(["sh", "-c", script])
    assert res.returncode == 0, res.describe()
    bnd = int(res.stdout.split("CapBnd:")[1].split()[0], 16)
    for cap in (21, 19, 16, 2):  # SYS_ADMIN, SYS_PTRACE, SYS_MODULE, DAC_READ_SEARCH
        assert not bnd & (1 << cap), f"capability {cap} is still in the bounding set: {bnd:#x}"
    assert "nsenter=0" not in res.stdout, res.describe()
    kept = jail.run(["sh", "-c", script], opts=["--keep-caps"])
    assert "nsenter=0" in kept.stdout, kept.describe()


def test_unix_admin_socket_refuses_the_jail(jail, tmp_path):
    """The jail shares the filesystem, so it can open `--admin unix:PATH`
    (which needs no token); a process inside the jail must not be able to
    rewrite the rules that confine it. A client on the host still can."""
    import time
    sock = tmp_path / "admin.sock"
    rules = "services:\n  - name: web\n    match: { host: web.hard.test }\n    http: {}\n"
    inside = ("curl -sS --noproxy '*' --unix-socket " + str(sock) +
              " -X PUT --data-binary 'unmatched: pass' -w ' %{http_code}' http://x/rules; echo; sleep 4")
    args, _ = jail.command(["sh", "-c", inside], rules=rules, opts=["--admin", f"unix:{sock}"])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        time.sleep(1)
        host = subprocess.run(["curl", "-sS", "--noproxy", "*", "--unix-socket", str(sock),
                               "-w", " %{http_code}", "http://x/rules"],
                              capture_output=True, text=True, timeout=10)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.strip().endswith(" 403") and "inside the jail" in out, out + err
    body, _, status = host.stdout.strip().rpartition(" ")
    assert status == "200", host.stdout + host.stderr
    import json
    rules_now = json.loads(body)
    assert rules_now["generation"] == 0 and rules_now["unmatched"] == "refuse", \
        f"the jail replaced the rules: {rules_now}"


def _host_processes_with(marker):
    """Host pids whose command line holds `marker` (the jail's pids are its
    own, so a test finds its processes by what they run)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            found.append(int(d))
    return found


def _gone(marker, rounds=100):
    import time
    for _ in range(rounds):
        alive = _host_processes_with(marker)
        if not alive:
            return []
        time.sleep(0.05)
    return alive


def test_what_the_sut_leaves_running_is_killed_at_exit(jail):
    """A daemon the SUT starts and abandons would live on in a jail whose
    network is gone; the jail is a pid namespace, ended with meshwrap."""
    res = jail.run(["sh", "-c", "setsid sleep 301.25 >/dev/null 2>&1 & sleep 301.25 >/dev/null 2>&1 & echo started"],
                   verbose=True)
    assert res.returncode == 0, res.describe()
    assert "started" in res.stdout, res.describe()
    alive = _gone("sleep 301.25")
    assert not alive, f"left running after meshwrap exited: {alive}"
    assert "killed 2 processes the SUT left running" in res.stderr, res.describe()


def test_what_the_sut_started_dies_with_a_killed_meshwrap(jail):
    """SIGKILL leaves meshwrap no chance to clean up: the jail's init dies
    of its parent-death signal, and the kernel ends its pid namespace, so
    background processes of the SUT go too (they used to live on)."""
    import signal
    try:
        with running(jail, ["sh", "-c", "setsid sleep 302.5 & sleep 302.5 & echo started; wait"],
                     b"started") as proc:
            _wait_for_sleeps()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            alive = _gone("sleep 302.5")
            assert not alive, f"alive after meshwrap was killed: {alive}"
    finally:
        for pid in _host_processes_with("sleep 302.5"):
            os.kill(pid, signal.SIGKILL)


def _wait_for_sleeps():
    import time
    for _ in range(100):
        if len(_host_processes_with("sleep 302.5")) >= 2:
            return
        time.sleep(0.05)
    assert len(_host_processes_with("sleep 302.5")) >= 2, "the background sleeps did not start"


def test_the_jail_sees_its_own_processes_only(jail):
    """The jail has its own pid namespace and /proc: the SUT is pid 2 under
    meshwrap's init, and the host's processes (meshwrap's own among them,
    with /proc/PID/ns links to join) are not there to see."""
    script = ("echo pid=$$ ppid=$PPID; ls /proc | grep -c '^[0-9]*$'; "
              f"test -e /proc/{os.getpid()}/ns/net && echo host-visible || echo host-hidden")
    res = jail.run(["sh", "-c", script])
    assert res.returncode == 0, res.describe()
    lines = res.stdout.split()
    assert "pid=2" in lines and "ppid=1" in lines, res.describe()
    count = int(lines[2])
    # init, the shell, ls and grep: a handful, never the host's hundreds.
    assert count <= 6, res.describe()
    if os.getpid() > 6:
        assert "host-hidden" in lines, res.describe()


def test_signals_reach_the_sut_through_the_init(jail):
    """meshwrap passes SIGTERM to the jail's init, which passes it to the
    SUT (an init ignores signals it has no handler for, so it must)."""
    import signal
    with running(jail, ["sh", "-c", "trap 'echo got-term; exit 7' TERM; echo ready; "
                               "while :; do sleep 0.05; done"], b"ready") as proc:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert b"got-term" in out, err.decode(errors="replace")
    assert proc.returncode == 7, err.decode(errors="replace")


def test_stale_work_folders_of_killed_runs_are_removed(jail, tmp_path):
    """A run killed with SIGKILL cannot remove its work folder (it holds the
    CA certificate and bundle); the next run removes such folders whose
    meshwrap is gone, and leaves the others."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = runtime / f"meshwrap-{gone.pid}-0"
    stale.mkdir()
    (stale / "ca.pem").write_text("x")
    alive = runtime / f"meshwrap-{os.getpid()}-0"
    alive.mkdir()
    res = jail.run(["true"], env={"XDG_RUNTIME_DIR": str(runtime)})
    assert res.returncode == 0, res.describe()
    assert not stale.exists(), "the folder of a dead run is still there"
    assert alive.exists(), "the folder of a live process was removed"
