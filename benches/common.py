"""Helpers the HTTP, TLS, Redis and control-plane benchmarks share: a free
port on host loopback for a server the script starts, waiting for it to
listen, and reading wrk's output. Kept in one place so every table's
numbers come from the same parsing.

netbench.py has its own port helpers on purpose: it picks ports inside its
sandbox namespace and checks for a listener through /proc without
connecting (a probe connection would count as iperf3 -s -1's one test).
kafkabench.py needs none of these.
"""
import re
import socket
import time


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=5, proc=None, what="server", hint=""):
    """Returns once something accepts on 127.0.0.1:`port`; exits the script
    if that takes more than `timeout` seconds, or if `proc` (the server,
    when the script started it) exits first (`hint` is added to that
    message)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}{hint}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start on 127.0.0.1:{port}")


def wrk_args(args, url):
    """wrk with one thread, `args.connections` keep-alive connections for
    `args.duration` seconds, with the latency distribution."""
    return ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", url]


def to_ms(v):
    """A wrk duration (`812.00us`, `1.20ms`, `2.01s`) in milliseconds."""
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    n, unit = float(m.group(1)), m.group(2)
    return {"us": n / 1000, "ms": n, "s": n * 1000}[unit]


def parse_wrk(out):
    """The output of `wrk --latency`: requests/s, p50 and p99 in ms, the
    count of non-2xx/3xx answers and wrk's socket-error line (raises
    AttributeError or KeyError when the output has no such figures)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50": to_ms(lat["50"]),
        "p99": to_ms(lat["99"]),
        "bad": int(errors.group(1)) if errors else 0,
        "sockerr": sock_err.group(1) if sock_err else "",
    }
