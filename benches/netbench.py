#!/usr/bin/env python3
"""netbench: meshwrap's network benchmark harness.

Measures, in one run, from inside a network namespace to servers on the
host's loopback (127.0.0.1):

  * bulk TCP throughput ns->host and host->ns (iperf3, Gbit/s)
  * new TCP connections per second (wrk with `Connection: close` against a
    small nginx on 127.0.0.1; falls back to ab, and to a built-in Python
    server when nginx is missing)

for these paths:

  loopback     no namespace: client on the host to 127.0.0.1 (the reference)
  meshwrap     `meshwrap --quiet --unmatched pass -- CMD`, target 10.0.2.2
  slirp4netns  `unshare -Urn` + `slirp4netns --configure --mtu=65520`
               (host loopback access left enabled), target 10.0.2.2
  pasta        `unshare -Urn` + `pasta --config-net -g 10.0.2.2 ...`
               (pasta maps its gateway address to the host's loopback)

and prints a markdown table with the absolute numbers and each path's ratio
to plain loopback measured in the same run.

Network safety: every traffic target is 127.0.0.1 or the namespace gateway
10.0.2.2 that the tool maps to the host's 127.0.0.1.  Before any load is sent
through a path, a probe checks that a connection to the target really lands
on the probe server bound to 127.0.0.1; a path that fails the probe is
reported as n/a and gets no load.  By default the whole run also happens
inside a private network namespace (`unshare --net --pid --mount`) whose only
interfaces are `lo` and an unconnected veth pair (needed by pasta to pick an
outbound interface), so nothing can leave the machine whatever a tool does,
and every process is killed when the run ends.

Every command is bounded by a timeout; servers are stopped at the end, also
on Ctrl-C.  Run `python3 benches/netbench.py --help` for the options, or
`bash benches/run.sh`.
"""

import argparse
import atexit
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

GATEWAY = "10.0.2.2"  # host loopback as seen from slirp4netns / pasta / meshwrap
NS_ADDR = "10.0.2.100"  # namespace address used for slirp4netns and pasta
SANDBOX_ENV = "NETBENCH_SANDBOXED"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ALL_PATHS = ["loopback", "meshwrap", "slirp4netns", "pasta"]

VERBOSE = False


def log(msg):
    print(f"[netbench] {msg}", file=sys.stderr, flush=True)


def vlog(msg):
    if VERBOSE:
        log(msg)


# --------------------------------------------------------------------------
# process bookkeeping: every child runs in its own process group so that it
# can be stopped with everything it started; only our own children are killed
# --------------------------------------------------------------------------

_children = []


def spawn(argv, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("start_new_session", True)
    vlog("spawn: " + " ".join(map(str, argv)))
    p = subprocess.Popen([str(a) for a in argv], **kw)
    _children.append(p)
    return p


def stop(p, grace=3.0):
    if p is None or p.poll() is not None:
        if p in _children:
            _children.remove(p)
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 3.0)):
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
        try:
            p.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    if p in _children:
        _children.remove(p)


def stop_all():
    for p in list(reversed(_children)):
        stop(p, grace=1.0)


def run(argv, timeout, **kw):
    """Run argv bounded by timeout; returns (rc, stdout, stderr); rc=None on timeout."""
    p = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        stop(p, grace=1.0)
        out, err = p.communicate()
        rc = None
    if p in _children:
        _children.remove(p)
    return rc, out or "", err or ""


def _on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


# --------------------------------------------------------------------------
# sandbox
# --------------------------------------------------------------------------

def enter_sandbox(argv):
    """Re-exec this script inside a private net+pid+mount namespace."""
    unshare = shutil.which("unshare")
    if not unshare or os.geteuid() != 0:
        log("warning: cannot create the sandbox namespace (needs root and unshare); "
            "running in the current network namespace (targets are still loopback only)")
        return
    env = dict(os.environ, **{SANDBOX_ENV: "1"})
    cmd = [unshare, "--net", "--pid", "--mount", "--fork", "--kill-child",
           "--mount-proc", "--", sys.executable, os.path.abspath(__file__)] + argv
    try:
        rc = subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        rc = 130
    sys.exit(rc)


def setup_sandbox_net():
    """Inside the sandbox: lo up, an unconnected veth pair carrying a default
    route (pasta wants an outbound interface), and loose port/TIME_WAIT limits
    so that the connection benchmark does not run out of ephemeral ports."""
    ip = shutil.which("ip")
    if ip:
        cmds = [
            [ip, "link", "set", "lo", "up"],
            [ip, "link", "add", "nb0", "type", "veth", "peer", "name", "nb1"],
            [ip, "addr", "add", "192.0.2.2/24", "dev", "nb0"],
            [ip, "link", "set", "nb0", "up"],
            [ip, "link", "set", "nb1", "up"],
            [ip, "route", "add", "default", "via", "192.0.2.1", "dev", "nb0"],
        ]
        for c in cmds:
            rc, _, err = run(c, 10)
            if rc != 0:
                log(f"sandbox: {' '.join(c[1:])} failed: {err.strip()}")
    else:
        log("sandbox: `ip` not found; loopback may be down")
    for key, val in (("net/ipv4/ip_local_port_range", "20000 65000"),
                     ("net/ipv4/tcp_tw_reuse", "1")):
        try:
            with open(f"/proc/sys/{key}", "w") as f:
                f.write(val)
        except OSError as e:
            vlog(f"sandbox: sysctl {key}: {e}")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def free_port(start):
    for port in range(start, start + 2000):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def is_listening(port):
    """True if a TCP socket listens on 127.0.0.1:port (read from /proc, so no
    connection is made: iperf3 -s -1 would count a probe connection as its test)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if len(parts) > 3 and parts[1] == want and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def wait_listening(port, timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if is_listening(port):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def tool_version(argv):
    try:
        rc, out, err = run(argv, 10)
    except OSError:
        return "?"
    text = (out + err).strip().splitlines()
    text = [t for t in text if "syslog" not in t]
    return text[0].strip() if text else "?"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def deb_version(pkg):
    if not shutil.which("dpkg-query"):
        return None
    rc, out, _ = run(["dpkg-query", "-W", "-f=${Version}", pkg], 10)
    return out.strip() if rc == 0 and out.strip() else None


# --------------------------------------------------------------------------
# probe server: proves that a path's target lands on host 127.0.0.1
# --------------------------------------------------------------------------

PROBE_CLIENT = r"""
import socket, sys, time
addr, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.time() + float(sys.argv[4])
last = None
while time.time() < deadline:
    try:
        s = socket.create_connection((addr, port), timeout=3)
        s.sendall((token + "\n").encode())
        s.settimeout(3)
        data = s.recv(200).decode(errors="replace")
        s.close()
        print(data.strip())
        sys.exit(0 if data.strip() == "ok " + token else 3)
    except OSError as e:
        last = e
        time.sleep(0.2)
print("probe failed:", last)
sys.exit(2)
"""


class ProbeServer:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.seen = set()
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.5)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                c.settimeout(3)
                data = b""
                while not data.endswith(b"\n") and len(data) < 200:
                    chunk = c.recv(200)
                    if not chunk:
                        break
                    data += chunk
                token = data.decode(errors="replace").strip()
                self.seen.add(token)
                c.sendall(f"ok {token}\n".encode())
            except OSError:
                pass
            finally:
                c.close()

    def close(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# servers on host loopback
# --------------------------------------------------------------------------

NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
user root;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    keepalive_timeout 0;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
"""

PY_HTTP_SERVER = r"""
import asyncio, sys
port = int(sys.argv[1])
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok\n"
async def handle(r, w):
    try:
        await r.readuntil(b"\r\n\r\n")
        w.write(RESP)
        await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"""


class HttpServer:
    """A small fast HTTP server on 127.0.0.1 answering `200 ok`, closing each connection."""

    def __init__(self, workdir, workers):
        self.port = free_port(8080)
        self.proc = None
        self.kind = None
        nginx = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
        if nginx and os.geteuid() == 0:
            d = os.path.join(workdir, "nginx")
            os.makedirs(d, exist_ok=True)
            conf = os.path.join(d, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(dir=d, port=self.port, workers=workers))
            self.proc = spawn([nginx, "-c", conf, "-p", d, "-e", os.path.join(d, "error.log")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.kind = f"nginx ({workers} worker{'s' if workers > 1 else ''})"
            if not wait_listening(self.port, proc=self.proc):
                log("nginx did not start; falling back to the Python server")
                stop(self.proc)
                self.proc = None
        if self.proc is None:
            self.proc = spawn([sys.executable, "-c", PY_HTTP_SERVER, str(self.port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.kind = "python asyncio (nginx missing: conn/s is capped by this server)"
            if not wait_listening(self.port, proc=self.proc):
                stop(self.proc)
                self.proc = None
                self.kind = None

    def close(self):
        stop(self.proc)


# --------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------

class PathUnavailable(Exception):
    pass


class Path:
    name = "?"
    addr = "127.0.0.1"

    def describe(self):
        return self.name

    def setup(self):
        pass

    def wrap(self, argv):
        return list(argv)

    def teardown(self):
        pass


class Loopback(Path):
    name = "loopback"
    addr = "127.0.0.1"

    def describe(self):
        return "loopback (reference, no namespace)"


class Meshwrap(Path):
    name = "meshwrap"
    addr = GATEWAY

    def __init__(self, binary):
        self.binary = binary

    def describe(self):
        return "meshwrap pass"

    def setup(self):
        if not self.binary or not os.path.isfile(self.binary) or not os.access(self.binary, os.X_OK):
            raise PathUnavailable(f"binary not found: {self.binary} (cargo build --release)")

    def wrap(self, argv):
        return [self.binary, "--quiet", "--unmatched", "pass", "--"] + list(argv)


class HolderNs(Path):
    """A namespace held by `unshare -Urn sleep`, networked by a tool attached
    to its pid; commands enter it with nsenter."""

    tools = ()

    def __init__(self):
        self.holder = None
        self.net = None

    def setup(self):
        for t in ("unshare", "nsenter") + tuple(self.tools):
            if not shutil.which(t):
                raise PathUnavailable(f"{t} not installed")
        self.holder = spawn(["unshare", "-Urn", "sleep", "86400"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        mine = os.readlink("/proc/self/ns/net")
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                if os.readlink(f"/proc/{self.holder.pid}/ns/net") != mine:
                    break
            except OSError:
                pass
            if self.holder.poll() is not None:
                raise PathUnavailable("unshare -Urn failed: " + self.holder.stderr.read().decode().strip())
            time.sleep(0.02)
        else:
            raise PathUnavailable("unshare -Urn did not create a namespace")
        self.attach(self.holder.pid)

    def attach(self, pid):
        raise NotImplementedError

    def wrap(self, argv):
        return ["nsenter", "-t", str(self.holder.pid), "-U", "-n", "--preserve-credentials", "--"] + list(argv)

    def teardown(self):
        stop(self.net)
        stop(self.holder)
        self.net = self.holder = None


class Slirp(HolderNs):
    name = "slirp4netns"
    addr = GATEWAY
    tools = ("slirp4netns",)

    def describe(self):
        return "slirp4netns --mtu 65520"

    def attach(self, pid):
        rfd, wfd = os.pipe()
        # No --disable-host-loopback: 10.0.2.2 reaches host 127.0.0.1.
        self.net = spawn(["slirp4netns", "--configure", "--mtu=65520", f"--ready-fd={wfd}",
                          str(pid), "tap0"], pass_fds=(wfd,),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(wfd)
        ready, _, _ = select.select([rfd], [], [], 10)
        ok = bool(ready) and os.read(rfd, 1) == b"1"
        os.close(rfd)
        if not ok:
            err = ""
            if self.net.poll() is not None:
                err = self.net.stderr.read().decode(errors="replace").strip()
            raise PathUnavailable("slirp4netns did not become ready " + err)


class Pasta(HolderNs):
    name = "pasta"
    addr = GATEWAY
    tools = ("pasta",)

    def describe(self):
        return "pasta (MTU 65520)"

    def attach(self, pid):
        rc, out, err = run(["pasta", "--help"], 10)
        helptext = out + err
        argv = ["pasta", "-f", "-q", "-4", "--config-net", "-m", "65520",
                "-a", NS_ADDR, "-n", "24", "-g", GATEWAY,
                # no port forwarding in either direction: only the tap path is measured
                "-t", "none", "-u", "none", "-T", "none", "-U", "none"]
        if "--map-host-loopback" in helptext:
            # newer passt: explicit host-loopback mapping address
            argv += ["--map-host-loopback", GATEWAY]
        # older passt (e.g. Debian 12's 2023-03 snapshot) maps the gateway
        # address to the host loopback by default (unless --no-map-gw)
        if os.geteuid() == 0 and "--runas" in helptext:
            argv += ["--runas", "0"]
        argv.append(str(pid))
        self.net = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # readiness: wait until the namespace has its address
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.net.poll() is not None:
                err = self.net.stderr.read().decode(errors="replace")
                err = " ".join(l for l in err.splitlines() if "syslog" not in l)
                raise PathUnavailable("pasta exited: " + err.strip())
            rc, out, _ = run(self.wrap(["ip", "-4", "-o", "addr", "show"]), 5)
            if rc == 0 and NS_ADDR in out:
                return
            time.sleep(0.1)
        raise PathUnavailable("pasta did not configure the namespace")


# --------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------

def probe(path, server, python, timeout):
    token = f"{path.name}-{os.getpid()}-{time.time_ns()}"
    rc, out, err = run(path.wrap([python, "-c", PROBE_CLIENT, path.addr, str(server.port), token,
                                  str(timeout)]), timeout + 30)
    if rc == 0 and token in server.seen:
        return None
    msg = (out + " " + err).strip().replace("\n", " ")
    return f"probe to {path.addr} did not reach host 127.0.0.1 (rc={rc}): {msg[:300]}"


def parse_json_blob(text):
    i, j = text.find("{"), text.rfind("}")
    if i < 0 or j < i:
        return None
    try:
        return json.loads(text[i:j + 1])
    except ValueError:
        return None


def iperf(path, duration, reverse):
    """Returns (Gbit/s or None, note)."""
    port = free_port(5201)
    srv = spawn(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_listening(port, proc=srv):
            return None, "iperf3 server did not start"
        argv = ["iperf3", "-c", path.addr, "-p", str(port), "-t", str(duration), "-J",
                "--connect-timeout", "5000"]
        if reverse:
            argv.append("-R")
        rc, out, err = run(path.wrap(argv), duration + 30)
        data = parse_json_blob(out)
        if data is None:
            return None, f"iperf3 rc={rc}: {(err or out).strip()[:200]}"
        if data.get("error"):
            return None, "iperf3: " + str(data["error"])[:200]
        try:
            bps = data["end"]["sum_received"]["bits_per_second"]
        except (KeyError, TypeError):
            return None, "iperf3: no sum_received in output"
        return bps / 1e9, ""
    finally:
        stop(srv, grace=1.0)


def connrate(path, http, duration, conns, threads):
    """Returns (connections/s or None, note)."""
    if http is None or http.proc is None:
        return None, "no HTTP server"
    url = f"http://{path.addr}:{http.port}/"
    if shutil.which("wrk"):
        argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "3s",
                "-H", "Connection: close", url]
        rc, out, err = run(path.wrap(argv), duration + 30)
        m = re.search(r"Requests/sec:\s*([\d.]+)", out)
        if rc != 0 or not m:
            return None, f"wrk rc={rc}: {(err or out).strip()[:200]}"
        rate = float(m.group(1))
        notes = []
        m2 = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if m2 and any(int(x) for x in m2.groups()):
            notes.append("socket errors: connect %s, read %s, write %s, timeout %s" % m2.groups())
        m3 = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
        if m3:
            notes.append(f"{m3.group(1)} non-2xx responses")
        m4 = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
        if m4 and int(m4.group(1)) == 0:
            return None, "wrk: 0 requests completed; " + "; ".join(notes)
        return rate, "; ".join(notes)
    if shutil.which("ab"):
        # ab speaks HTTP/1.0 without keep-alive: one connection per request
        argv = ["ab", "-q", "-r", "-s", "3", "-t", str(duration), "-n", "10000000",
                "-c", str(conns), url]
        rc, out, err = run(path.wrap(argv), duration + 30)
        m = re.search(r"Requests per second:\s*([\d.]+)", out)
        if not m:
            return None, f"ab rc={rc}: {(err or out).strip()[:200]}"
        m2 = re.search(r"Failed requests:\s*(\d+)", out)
        note = f"{m2.group(1)} failed requests (ab)" if m2 and int(m2.group(1)) else "ab"
        return float(m.group(1)), note
    return None, "neither wrk nor ab installed"


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def fmt(v, unit_fmt):
    return "n/a" if v is None else unit_fmt.format(v)


def ratio(v, ref):
    if v is None or not ref:
        return "n/a"
    return f"{v / ref:.3f}×"


def render(results, order, meta):
    ref = results.get("loopback", {})
    lines = []
    lines.append("| path | ns→host Gbit/s | vs lo | host→ns Gbit/s | vs lo | new conn/s | vs lo |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for name in order:
        r = results.get(name, {})
        lines.append("| {} | {} | {} | {} | {} | {} | {} |".format(
            r.get("label", name),
            fmt(r.get("up"), "{:.2f}"), ratio(r.get("up"), ref.get("up")),
            fmt(r.get("down"), "{:.2f}"), ratio(r.get("down"), ref.get("down")),
            fmt(r.get("conn"), "{:,.0f}"), ratio(r.get("conn"), ref.get("conn"))))
    notes = []
    for name in order:
        for n in results.get(name, {}).get("notes", []):
            notes.append(f"- {name}: {n}")
    out = "\n".join(lines)
    out += "\n\n" + "\n".join(f"- {k}: {v}" for k, v in meta.items())
    if notes:
        out += "\n\nNotes:\n" + "\n".join(notes)
    return out


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", "-t", type=int, default=5,
                    help="seconds per measurement (default 5; capped at 60)")
    ap.add_argument("--repeat", "-r", type=int, default=3,
                    help="repetitions, median reported (default 3; capped at 10)")
    ap.add_argument("--paths", default=",".join(ALL_PATHS),
                    help="comma-separated subset of " + ",".join(ALL_PATHS))
    ap.add_argument("--meshwrap", default=os.environ.get(
        "MESHWRAP", os.path.join(REPO, "target", "release", "meshwrap")),
        help="meshwrap binary (default target/release/meshwrap, or $MESHWRAP)")
    ap.add_argument("--conns", type=int, default=32, help="wrk concurrent connections (default 32)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--nginx-workers", type=int, default=1, help="nginx workers (default 1)")
    ap.add_argument("--tests", default="up,down,conn", help="subset of up,down,conn")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--no-sandbox", action="store_true",
                    help="run in the current network namespace instead of a private one")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args()
    VERBOSE = args.verbose
    args.duration = max(1, min(args.duration, 60))
    args.repeat = max(1, min(args.repeat, 10))
    order = [p.strip() for p in args.paths.split(",") if p.strip()]
    for p in order:
        if p not in ALL_PATHS:
            ap.error(f"unknown path {p!r}")
    if "loopback" not in order:
        order.insert(0, "loopback")  # ratios need the reference
    tests = [t.strip() for t in args.tests.split(",") if t.strip()]
    args.meshwrap = os.path.abspath(args.meshwrap)
    if args.json:
        args.json = os.path.abspath(args.json)

    sandboxed = os.environ.get(SANDBOX_ENV) == "1"
    if not args.no_sandbox and not sandboxed:
        fwd = sys.argv[1:] + ["--meshwrap", os.path.abspath(args.meshwrap)]
        if args.json:
            fwd += ["--json", args.json]
        enter_sandbox(fwd)  # returns only if the sandbox cannot be made
    if sandboxed:
        setup_sandbox_net()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    atexit.register(stop_all)

    workdir = tempfile.mkdtemp(prefix="netbench.")
    atexit.register(shutil.rmtree, workdir, True)

    have_iperf = shutil.which("iperf3") is not None
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "kernel": os.uname().release,
        "cpus": str(os.cpu_count()),
        "duration": f"{args.duration}s per measurement, {args.repeat} repetition(s), median",
        "sandbox": "private net/pid/mount namespace (lo + unconnected veth)" if sandboxed
                   else "none (current network namespace)",
        "iperf3": tool_version(["iperf3", "--version"]) if have_iperf else "missing",
        "conn/s client": (tool_version(["wrk", "-v"]).split(" Copyright")[0] +
                          f", -t{args.threads} -c{args.conns}, Connection: close")
        if shutil.which("wrk") else ("ab (HTTP/1.0)" if shutil.which("ab") else "missing"),
        "slirp4netns": tool_version(["slirp4netns", "--version"]) if shutil.which("slirp4netns") else "missing",
        "pasta": ("passt " + (deb_version("passt") or "?")) if shutil.which("pasta") else "missing",
        "meshwrap": args.meshwrap,
        "load average at start": loadavg() + " (well above 0.3: other work is sharing the cores)",
    }

    probe_srv = ProbeServer()
    http = HttpServer(workdir, args.nginx_workers) if "conn" in tests else None
    meta["http server"] = http.kind if http and http.kind else "n/a"

    paths = {
        "loopback": Loopback(),
        "meshwrap": Meshwrap(args.meshwrap),
        "slirp4netns": Slirp(),
        "pasta": Pasta(),
    }
    results = {n: {"label": paths[n].describe(), "notes": [], "samples": {t: [] for t in tests}}
               for n in order}
    usable = {}

    try:
        for n in order:
            path = paths[n]
            try:
                path.setup()
                if isinstance(path, Meshwrap):
                    meta["meshwrap"] = f"{args.meshwrap} ({tool_version([args.meshwrap, '--version'])})"
                err = probe(path, probe_srv, sys.executable, 10)
                if err:
                    raise PathUnavailable(err)
                usable[n] = path
                log(f"{n}: ready, target {path.addr} reaches host 127.0.0.1")
            except PathUnavailable as e:
                results[n]["notes"].append(f"n/a: {e}")
                log(f"{n}: n/a: {e}")
                path.teardown()
            except Exception as e:  # keep going with the other paths
                results[n]["notes"].append(f"n/a: setup error: {e!r}")
                log(f"{n}: n/a: setup error: {e!r}")
                path.teardown()

        for rep in range(args.repeat):
            for n in order:
                if n not in usable:
                    continue
                path = usable[n]
                for t in tests:
                    if t in ("up", "down"):
                        if not have_iperf:
                            val, note = None, "iperf3 not installed"
                        else:
                            val, note = iperf(path, args.duration, reverse=(t == "down"))
                    elif t == "conn":
                        val, note = connrate(path, http, args.duration, args.conns, args.threads)
                    else:
                        continue
                    shown = "n/a" if val is None else (f"{val:.2f} Gbit/s" if t != "conn" else f"{val:,.0f} conn/s")
                    log(f"[{rep + 1}/{args.repeat}] {n} {t}: {shown} {note}")
                    if val is not None:
                        results[n]["samples"][t].append(val)
                    if note and note not in results[n]["notes"]:
                        results[n]["notes"].append(f"{t}: {note}")
    finally:
        for path in paths.values():
            try:
                path.teardown()
            except Exception:
                pass
        if http:
            http.close()
        probe_srv.close()

    for n in order:
        for t in tests:
            s = results[n]["samples"][t]
            results[n][t] = statistics.median(s) if s else None
            if len(s) > 1 and min(s) > 0 and max(s) / min(s) > 1.5:
                shown = ", ".join(f"{v:.2f}" if t != "conn" else f"{v:.0f}" for v in s)
                results[n]["notes"].append(f"{t}: unstable, samples {shown} (median shown)")
            elif len(s) > 1 and min(s) == 0:
                results[n]["notes"].append(f"{t}: some samples were 0")

    table = render(results, order, meta)
    print(table, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
    stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
