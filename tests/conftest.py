"""Fixtures and helpers for the meshwrap integration tests.

Everything here runs real processes: the real meshwrap binary, real clients
(curl, python, getent, dig, ping) inside the jail, and real servers that the
tests start on HOST loopback (127.0.0.1 / ::1).

Network safety: tests only send traffic to 127.0.0.0/8, ::1, or jail/fake
addresses (10.0.2.0/24, fd00:6d77::/64, 198.18.0.0/15, 2001:2::/48), and only
use names under .test (plus host.meshwrap.internal).
"""
import dataclasses
import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
HELPERS = Path(__file__).resolve().parent / "helpers"
PYTHON = sys.executable  # the real interpreter (not a pyenv shim), has requests
JAIL_CLIENT = str(HELPERS / "jail_client.py")
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))  # lets tests `import datagen`
HOSTSERVER = str(HELPERS / "hostserver.py")

FAKE_V4 = ipaddress.ip_network("198.18.0.0/15")
FAKE_V6 = ipaddress.ip_network("2001:2::/48")
GW4, GW6 = "10.0.2.2", "fd00:6d77::2"
DNS4, DNS6 = "10.0.2.3", "fd00:6d77::3"
SUT4, SUT6 = "10.0.2.100", "fd00:6d77::100"
GW_NAME = "host.meshwrap.internal"

# curl defaults for every in-jail curl: never use a proxy from the environment,
# never hang forever.
CURL = ["curl", "-sS", "--noproxy", "*", "--max-time", "60"]

PROXY_VARS = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy")

FLOW_FIELDS = ("time", "flow_id", "src", "src_port", "dst", "dst_port", "host",
               "protocol", "decision", "reason", "bytes_up", "bytes_down",
               "duration_ms", "error")
DNS_FIELDS = ("name", "qtype", "answers", "source")


# --------------------------------------------------------------------------
# binary


def _default_bin():
    return os.environ.get("MESHWRAP_BIN") or str(REPO_ROOT / "target" / "release" / "meshwrap")


@pytest.fixture(scope="session")
def meshwrap_bin():
    path = _default_bin()
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.fail(f"meshwrap binary not found at {path} "
                    f"(build it with `cargo build --release` or set MESHWRAP_BIN)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _tun_device_usable():
    """Tests run as root; make /dev/net/tun usable by the rootless test too."""
    try:
        st = os.stat("/dev/net/tun")
        if os.geteuid() == 0 and (st.st_mode & 0o666) != 0o666:
            os.chmod("/dev/net/tun", 0o666)
    except OSError:
        pass
    yield


# --------------------------------------------------------------------------
# running the jail


# The variables meshwrap sets in the jail to make clients trust its CA.
TRUST_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")


@pytest.fixture
def no_inherited_trust_variables(monkeypatch):
    """Run the jail as on a machine where none of the variables meshwrap
    injects is set (this one may set them all to the system bundle)."""
    for v in TRUST_VARS:
        monkeypatch.delenv(v, raising=False)


def jail_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("LC_ALL", "C.UTF-8")
    if extra:
        env.update(extra)
    return env


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def parse_events(path):
    """Parse a JSONL events file; every non-empty line must be a JSON object."""
    events = []
    if not os.path.exists(path):
        return events
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError as e:
                raise AssertionError(f"events file {path}:{n} is not JSON ({e}): {line!r}")
            assert isinstance(ev, dict), f"events file {path}:{n} is not an object: {line!r}"
            assert "kind" in ev, f"event without 'kind' at {path}:{n}: {line!r}"
            events.append(ev)
    return events


@dataclasses.dataclass
class JailResult:
    args: list
    returncode: int
    stdout: str
    stderr: str
    events: list
    events_path: str

    def flows(self, **match):
        return [e for e in self.events if e.get("kind") == "flow"
                and all(e.get(k) == v for k, v in match.items())]

    def dns(self, **match):
        return [e for e in self.events if e.get("kind") == "dns"
                and all(e.get(k) == v for k, v in match.items())]

    def describe(self):
        ev = "\n".join(json.dumps(e) for e in self.events[-30:])
        return (f"command: {' '.join(map(str, self.args))}\n"
                f"exit code: {self.returncode}\n"
                f"--- stdout ---\n{self.stdout[-3000:]}\n"
                f"--- stderr ---\n{self.stderr[-5000:]}\n"
                f"--- events (last 30) ---\n{ev}")

    def json_out(self):
        """The last stdout line of a jail_client.py run, parsed."""
        lines = [l for l in self.stdout.splitlines() if l.strip()]
        assert lines, f"no output from the jail client\n{self.describe()}"
        return json.loads(lines[-1])


class Jail:
    """Runs `meshwrap [opts] -- CMD...` and collects exit code, output, events."""

    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = Path(workdir)
        self._n = 0

    def write(self, name, text):
        p = self.workdir / name
        p.write_text(text)
        os.chmod(p, 0o644)
        return str(p)

    def command(self, cmd, rules=None, unmatched=None, events=True, quiet=False,
                verbose=False, opts=()):
        """Build the argv. `rules` is YAML text, a path, or a list of those."""
        self._n += 1
        args = [self.binary]
        if rules is not None:
            for i, r in enumerate(rules if isinstance(rules, list) else [rules]):
                if "\n" in r or not os.path.exists(r):
                    r = self.write(f"rules-{self._n}-{i}.yaml", r)
                args += ["--rules", r]
        if unmatched:
            args += ["--unmatched", unmatched]
        events_path = None
        if events:
            events_path = str(self.workdir / f"events-{self._n}.jsonl")
            args += ["--events", events_path]
        if quiet:
            args.append("--quiet")
        if verbose:
            args.append("-v")
        args += list(opts)
        args.append("--")
        args += [str(c) for c in cmd]
        return args, events_path

    def run(self, cmd, rules=None, unmatched=None, events=True, quiet=False,
            verbose=False, opts=(), timeout=120, prefix=(), env=None, cwd=None):
        args, events_path = self.command(cmd, rules, unmatched, events, quiet, verbose, opts)
        full = list(prefix) + args
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=jail_env(env),
                                cwd=cwd or str(self.workdir), start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            raise AssertionError(
                f"meshwrap did not finish within {timeout}s: {' '.join(full)}\n"
                f"--- stdout ---\n{out.decode(errors='replace')[-3000:]}\n"
                f"--- stderr ---\n{err.decode(errors='replace')[-5000:]}")
        finally:
            if proc.poll() is None:
                _kill_group(proc)
        res = JailResult(full, proc.returncode, out.decode(errors="replace"),
                         err.decode(errors="replace"), [], events_path)
        if events_path:
            res.events = parse_events(events_path)
        return res

    def client(self, *args, **kw):
        """Run tests/helpers/jail_client.py inside the jail."""
        return self.run([PYTHON, JAIL_CLIENT, *args], **kw)

    def curl(self, *args, **kw):
        return self.run([*CURL, *args], **kw)


@pytest.fixture
def jail(meshwrap_bin, tmp_path):
    return Jail(meshwrap_bin, tmp_path)


@pytest.fixture
def world_dir():
    """A scratch dir that an unprivileged user can read and write."""
    d = tempfile.mkdtemp(prefix="meshwrap-test-")
    os.chmod(d, 0o777)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# host-side servers (subprocesses on host loopback)


class HostServer:
    def __init__(self, mode, binds):
        self.mode, self.binds = mode, binds
        self.proc = None
        self.port = None

    def start(self):
        last = ""
        for _ in range(5):  # the 2nd bind may collide on the chosen port; retry
            args = [PYTHON, HOSTSERVER, "--mode", self.mode]
            for b in self.binds:
                args += ["--bind", b]
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                         env=jail_env(), start_new_session=True)
            r, _, _ = select.select([self.proc.stdout], [], [], 15)
            line = self.proc.stdout.readline().decode() if r else ""
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
                return self
            self.stop()
            last = line + (self.proc.stderr.read().decode(errors="replace") if self.proc else "")
        raise RuntimeError(f"host server {self.mode} {self.binds} did not start: {last}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def http_server():
    """HTTP server on 127.0.0.1 AND ::1, same port. /hello answers
    'hello from host <peer>' so a test can tell which family reached it."""
    s = HostServer("http", ["127.0.0.1", "::1"]).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def echo_server():
    s = HostServer("echo", ["127.0.0.1"]).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def halfclose_server():
    s = HostServer("halfclose", ["127.0.0.1"]).start()
    yield s
    s.stop()


def closed_port():
    """A TCP port with nothing listening on 127.0.0.1 nor ::1 (best effort)."""
    for _ in range(20):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            c = socket.socket(fam, socket.SOCK_STREAM)
            c.settimeout(1)
            try:
                c.connect((addr, port))
                ok = False
            except OSError:
                pass
            finally:
                c.close()
        if ok:
            return port
    raise RuntimeError("could not find a closed port")


# --------------------------------------------------------------------------
# assertions


def assert_flow_schema(ev):
    missing = [f for f in FLOW_FIELDS if f not in ev]
    assert not missing, f"flow event lacks fields {missing}: {ev}"
    assert isinstance(ev["src_port"], int) and isinstance(ev["dst_port"], int), ev
    assert isinstance(ev["bytes_up"], int) and ev["bytes_up"] >= 0, ev
    assert isinstance(ev["bytes_down"], int) and ev["bytes_down"] >= 0, ev
    assert isinstance(ev["duration_ms"], (int, float)) and ev["duration_ms"] >= 0, ev
    assert ev["decision"] in ("pass", "refuse", "mock"), ev
    assert ev["host"] is None or isinstance(ev["host"], str), ev
    assert ev["error"] is None or isinstance(ev["error"], str), ev
    assert isinstance(ev["protocol"], str), ev
    ipaddress.ip_address(ev["src"])
    ipaddress.ip_address(ev["dst"])


def assert_dns_schema(ev):
    missing = [f for f in DNS_FIELDS if f not in ev]
    assert not missing, f"dns event lacks fields {missing}: {ev}"
    assert isinstance(ev["answers"], list), ev


def in_fake_range(addr):
    ip = ipaddress.ip_address(addr)
    return ip in (FAKE_V4 if ip.version == 4 else FAKE_V6)


def proc_children_state(pid):
    """'Z' for a zombie, None when gone, else the state letter."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def find_pids_by_cmdline(argv):
    want = "\0".join(argv) + "\0"
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if f.read().decode(errors="replace") == want:
                    pids.append(int(d))
        except OSError:
            pass
    return pids


def wait_for(pred, timeout, interval=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def make_world_readable_copy(path, dest_dir):
    dst = Path(dest_dir) / Path(path).name
    shutil.copy2(path, dst)
    os.chmod(dst, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return str(dst)


# --------------------------------------------------------------------------
# skips under CI


def running_in_ci():
    """CI=true (as .ci/run sets it, and most CI services do)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


CI_SKIP_HELP = (".ci/run installs every tool and package the tests use, so under CI=true a skip "
                "means an install step broke. If this test may skip in CI all the same, mark it "
                "@pytest.mark.may_skip_in_ci(\"why\").")


_CI_MODULE_SKIPS = []


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "may_skip_in_ci(reason): the test may skip under CI=true, for the reason given")


def _skip_reason(longrepr):
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skipped test is a failed one, unless it is marked
    `may_skip_in_ci` with a reason: a skip guard (importorskip, a missing
    tool) duplicates something .ci/run installs, and a broken install
    would otherwise pass as skips."""
    outcome = yield
    rep = outcome.get_result()
    if not (running_in_ci() and rep.skipped) or hasattr(rep, "wasxfail"):
        return
    allowed = item.get_closest_marker("may_skip_in_ci")
    if allowed is not None and allowed.args and str(allowed.args[0]).strip():
        return
    rep.outcome = "failed"
    rep.longrepr = f"skipped under CI=true: {_skip_reason(rep.longrepr)}\n{CI_SKIP_HELP}"


def pytest_collectreport(report):
    """A whole module skipped at import (a module-level importorskip):
    its tests never exist, so the session fails at its end instead."""
    if running_in_ci() and report.skipped:
        _CI_MODULE_SKIPS.append(f"{report.nodeid}: {_skip_reason(report.longrepr)}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _CI_MODULE_SKIPS:
        terminalreporter.section("modules skipped under CI=true (a failure)", red=True)
        for s in _CI_MODULE_SKIPS:
            terminalreporter.line(s)
        terminalreporter.line(CI_SKIP_HELP)


def pytest_sessionfinish(session, exitstatus):
    if _CI_MODULE_SKIPS and exitstatus in (0, 5):  # 5: nothing collected at all
        session.exitstatus = 1
