#!/usr/bin/env python3
"""HTTPS mock benchmark: TLS handshakes per second and keep-alive HTTPS
requests per second of a mocked route (meshwrap terminates TLS with a leaf
from its CA), against the same load on a plain rustls + hyper server on host
loopback (the reference), measured in one run.

    python3 benches/tlsbench.py [--duration 5] [--connections 50] [--reps 3]

Rows (each measured -r times, the table shows medians):
  reference       meshwrap-ref-server PORT --tls CERT KEY on 127.0.0.1, clients
                  run on the host
  meshwrap pass   the same reference reached from inside the jail through the
                  gateway (10.0.2.2): TLS passed through untouched
  meshwrap mock   https://api.bench.test inside the jail: TLS terminated by
                  meshwrap, the route answered by its HTTP responder

Metrics:
  handshakes/s    `openssl s_time -new -time D`: one new TLS connection after
                  the other (no session reuse, nothing sent), TLS 1.3
  conn+GET/s      `openssl s_time -new -time D -www /v1/charge`: a new TLS
                  connection per request (HTTP/1.0, closed after the answer)
  keep-alive      `wrk -t1 -cC -dDs --latency https://...`: requests/s and
                  p50/p99 latency over C reused connections
s_time counts are divided by wall time measured around it (inside the jail
for the jail rows). If `openssl s_time` is missing or does not work, a
Python ssl loop does the handshake metrics for every row instead.

The reference presents an ECDSA P-256 leaf plus its CA, as meshwrap does
(made with openssl in a temporary directory). Needs wrk and openssl (Debian
packages `wrk`, `openssl`) and the two binaries built with
    cargo build --release --features bench-tools
Traffic goes only to 127.0.0.1 (10.0.2.2 in the jail is the host's
127.0.0.1) and to the fake name api.bench.test in the jail.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from common import free_port, parse_wrk, wait_port, wrk_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHWRAP = os.environ.get("MESHWRAP", os.path.join(ROOT, "target/release/meshwrap"))
REF = os.environ.get("MESHWRAP_REF", os.path.join(ROOT, "target/release/meshwrap-ref-server"))
NAME = "api.bench.test"
PATH = "/v1/charge"
BODY = '{"id":"ch_1","status":"succeeded","amount":500}'
GATEWAY = "10.0.2.2"

RULES = f"""\
# benches/tlsbench.py: the HTTPS mock (same JSON as meshwrap-ref-server).
services:
  - name: bench
    match: {{ host: {NAME} }}
    http:
      routes:
        - name: static
          when: {{ method: GET, path: {PATH} }}
          respond: {{ json: {{ id: ch_1, status: succeeded, amount: 500 }} }}
"""

# A handshake loop in Python, used when `openssl s_time` is not usable.
PY_HANDSHAKES = r'''
import socket, ssl, sys, time
host, port, secs, www = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
n = nbytes = 0
t0 = time.monotonic()
while time.monotonic() - t0 < secs:
    s = ctx.wrap_socket(socket.create_connection((host, port), timeout=10))
    if www != "-":
        s.sendall(b"GET " + www.encode() + b" HTTP/1.0\r\n\r\n")
        while True:
            b = s.recv(65536)
            if not b:
                break
            nbytes += len(b)
    s.close()
    n += 1
print("PYLOOP %d %.6f %d" % (n, time.monotonic() - t0, nbytes))
'''


# --------------------------------------------------------------------------
# small helpers (the shared ones are in common.py)


def run(cmd, timeout):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def make_certs(d):
    """A P-256 CA and a P-256 leaf for 127.0.0.1 / ref.bench.test; CERT.pem
    holds leaf + CA, like meshwrap's chain."""
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    key, csr, crt = os.path.join(d, "key.pem"), os.path.join(d, "leaf.csr"), os.path.join(d, "leaf.pem")
    ext = os.path.join(d, "leaf.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:ref.bench.test,IP:127.0.0.1\n"
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n")
    steps = [
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ca_key],
        ["openssl", "req", "-x509", "-new", "-key", ca_key, "-sha256", "-days", "2",
         "-subj", "/CN=tlsbench reference CA", "-out", ca_crt],
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key + ".sec1"],
        ["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", key + ".sec1", "-out", key],
        ["openssl", "req", "-new", "-key", key, "-subj", "/CN=ref.bench.test", "-out", csr],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
         "-CAcreateserial", "-days", "2", "-sha256", "-extfile", ext, "-out", crt],
    ]
    for s in steps:
        p = subprocess.run(s, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"openssl failed: {' '.join(s)}\n{p.stderr}")
    chain = os.path.join(d, "chain.pem")
    with open(chain, "w") as f:
        f.write(open(crt).read() + open(ca_crt).read())
    return chain, key, ca_crt


# --------------------------------------------------------------------------
# measurements


def stime_script(target, secs, www, tool):
    """A shell script that prints wall-clock stamps around the handshake loop.
    `target` is HOST:PORT, or `@NAME:PORT` to resolve NAME once first (in the
    jail: one DNS query, not one per connection)."""
    pre = ""
    if target.startswith("@"):
        name, port = target[1:].rsplit(":", 1)
        pre = (f"ip=$(getent ahostsv4 {name} | head -n1 | cut -d' ' -f1); "
               f"[ -n \"$ip\" ] || {{ echo 'cannot resolve {name}'; exit 3; }}; ")
        host, port = "$ip", port
    else:
        host, port = target.rsplit(":", 1)
    if tool == "openssl":
        cmd = f"openssl s_time -new -connect {host}:{port} -time {secs}"
        if www:
            cmd += f" -www {www}"
        cmd += " 2>&1"
    else:
        cmd = (f"{sys.executable} -c \"$0\" {host} {port} {secs} {www or '-'} 2>&1")
    return pre + f"date +%s.%N; {cmd}; echo EXIT=$?; date +%s.%N"


def parse_stime(out):
    """-> (connections/s by wall clock, bytes read per connection) or raise."""
    lines = [l for l in out.splitlines() if l.strip()]
    stamps = [float(l) for l in lines if re.fullmatch(r"\d+\.\d+", l.strip())]
    m = re.search(r"^PYLOOP (\d+) ([\d.]+) (\d+)", out, re.M)
    if m:
        n, secs, nbytes = int(m.group(1)), float(m.group(2)), int(m.group(3))
        return n / secs, nbytes / max(n, 1)
    m = re.search(r"^(\d+) connections in [\d.]+s; ", out, re.M)
    real = re.search(r"connections in \d+ real seconds, (\d+) bytes read per connection", out)
    if not m or len(stamps) < 2 or "EXIT=0" not in out:
        raise ValueError(out[-800:])
    n = int(m.group(1))
    if n == 0:
        raise ValueError("no connection completed:\n" + out[-800:])
    return n / (stamps[-1] - stamps[0]), int(real.group(1)) if real else 0


def jail_cmd(script, rules, extra=()):
    return [MESHWRAP, "--quiet", "--no-verify", "--rules", rules, *extra, "--",
            "sh", "-c", script, PY_HANDSHAKES]


def host_cmd(script):
    return ["sh", "-c", script, PY_HANDSHAKES]


def probe_rows(port, rules, ca):
    """Each path must answer the expected JSON before any load goes through it."""
    checks = {
        "reference": ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "--cacert", ca,
                      f"https://127.0.0.1:{port}{PATH}"],
        # the jail trusts meshwrap's CA with no flag; the pass row reaches the
        # reference by its gateway address, not in the certificate: -k
        "pass": [MESHWRAP, "--quiet", "--no-verify", "--rules", rules, "--unmatched", "pass", "--",
                 "curl", "-sSk", "--noproxy", "*", "--max-time", "10", f"https://{GATEWAY}:{port}{PATH}"],
        "mock": [MESHWRAP, "--quiet", "--no-verify", "--rules", rules, "--",
                 "curl", "-sS", "--noproxy", "*", "--max-time", "10", f"https://{NAME}{PATH}"],
    }
    for row, cmd in checks.items():
        code, out, err = run(cmd, 30)
        try:
            same = json.loads(out) == json.loads(BODY)
        except ValueError:
            same = False
        if code != 0 or not same:
            raise SystemExit(f"probe of the {row} path failed (exit {code}):\n{' '.join(cmd)}\n"
                             f"stdout: {out[-500:]}\nstderr: {err[-1500:]}")


def pick_handshake_tool(port, secs_probe=1):
    if not shutil.which("openssl"):
        return "python", "openssl not found"
    code, out, err = run(host_cmd(stime_script(f"127.0.0.1:{port}", secs_probe, None, "openssl")), 30)
    try:
        rate, _ = parse_stime(out)
        if rate > 0:
            return "openssl", None
    except ValueError as e:
        return "python", f"openssl s_time did not work: {str(e)[-300:]}"
    return "python", "openssl s_time reported no connections"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measurement (max 60)")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (max 10)")
    ap.add_argument("--no-pass", action="store_true", help="leave out the meshwrap pass row")
    ap.add_argument("--handshake-tool", choices=("auto", "openssl", "python"), default="auto")
    args = ap.parse_args()
    args.duration = max(1, min(args.duration, 60))
    args.reps = max(1, min(args.reps, 10))
    for tool, path in (("wrk", shutil.which("wrk")), ("openssl", shutil.which("openssl")),
                       ("curl", shutil.which("curl")), ("meshwrap", MESHWRAP),
                       ("reference server", REF)):
        if not path or not os.path.exists(path):
            sys.exit(f"{tool} missing: apt-get install wrk openssl curl; "
                     f"cargo build --release --features bench-tools")

    tmp = tempfile.mkdtemp(prefix="tlsbench-")
    ref = None
    try:
        rules = os.path.join(tmp, "tls-bench.yaml")
        with open(rules, "w") as f:
            f.write(RULES)
        cert, key, ca = make_certs(tmp)
        port = free_port()
        ref = subprocess.Popen([REF, str(port), "--tls", cert, key],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(port, proc=ref, what="reference server",
                  hint=" (does it have --tls? rebuild with --features bench-tools)")
        probe_rows(port, rules, ca)
        if args.handshake_tool == "auto":
            tool, why = pick_handshake_tool(port)
        else:
            tool, why = args.handshake_tool, None

        rows = {"rustls+hyper on loopback (reference)": ("host", f"127.0.0.1:{port}",
                                                         f"https://127.0.0.1:{port}{PATH}")}
        if not args.no_pass:
            rows["meshwrap pass (TLS untouched)"] = ("pass", f"{GATEWAY}:{port}",
                                                     f"https://{GATEWAY}:{port}{PATH}")
        rows["meshwrap mock (TLS terminated)"] = ("mock", f"@{NAME}:443", f"https://{NAME}{PATH}")
        results = {name: {"hs": [], "get": [], "get_bytes": [], "wrk": [], "err": []} for name in rows}
        timeout = args.duration + 30

        def measure(where, cmd_script):
            if where == "host":
                cmd = host_cmd(cmd_script)
            else:
                cmd = jail_cmd(cmd_script, rules, ["--unmatched", "pass"] if where == "pass" else [])
            return run(cmd, timeout)

        for rep in range(args.reps):
            for name, (where, target, url) in rows.items():
                r = results[name]
                for metric, www in (("hs", None), ("get", PATH)):
                    code, out, err = measure(where, stime_script(target, args.duration, www, tool))
                    try:
                        rate, per_conn = parse_stime(out)
                        r[metric].append(rate)
                        if metric == "get":
                            r["get_bytes"].append(per_conn)
                    except ValueError as e:
                        r["err"].append(f"{metric}: {str(e).strip()[-300:]} {err[-300:]}")
                wcmd = wrk_args(args, url)
                if where != "host":
                    wcmd = [MESHWRAP, "--quiet", "--no-verify", "--rules", rules] + \
                           (["--unmatched", "pass"] if where == "pass" else []) + ["--"] + wcmd
                code, out, err = run(wcmd, timeout)
                try:
                    if code != 0:
                        raise ValueError(f"exit {code}: {err[-300:]}")
                    r["wrk"].append(parse_wrk(out))
                except (ValueError, AttributeError, KeyError) as e:
                    r["err"].append(f"wrk: {e} {out[-300:]}")
            print(f"[tlsbench] repetition {rep + 1}/{args.reps} done", file=sys.stderr)
    finally:
        if ref is not None:
            ref.terminate()
            try:
                ref.wait(5)
            except subprocess.TimeoutExpired:
                ref.kill()
                ref.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(xs):
        return statistics.median(xs) if xs else None

    def fmt(v, spec=",.0f"):
        return "n/a" if v is None else format(v, spec)

    def ratio(v, base):
        return "n/a" if v is None or not base else f"{v / base:.2f}"

    refname = next(iter(rows))
    ref_hs = med(results[refname]["hs"])
    ref_get = med(results[refname]["get"])
    ref_rps = med([w["rps"] for w in results[refname]["wrk"]])
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    hs_tool = ("openssl s_time -new" if tool == "openssl" else "a Python ssl loop")
    print(f"\nhandshakes: {hs_tool}, {args.duration}s, one connection at a time; "
          f"keep-alive: wrk -t1 -c{args.connections} -d{args.duration}s; median of {args.reps}; "
          f"{os.cpu_count()} cores; load average at the end {load:.2f}\n")
    print("| path | handshakes/s | vs ref | conn+GET/s | vs ref | keep-alive req/s | vs ref "
          "| p50 ms | p99 ms | non-2xx | socket errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, r in results.items():
        hs, get = med(r["hs"]), med(r["get"])
        rps = med([w["rps"] for w in r["wrk"]])
        p50 = med([w["p50"] for w in r["wrk"]])
        p99 = med([w["p99"] for w in r["wrk"]])
        bad = sum(w["bad"] for w in r["wrk"]) if r["wrk"] else None
        sockerr = r["wrk"][-1]["sockerr"] if r["wrk"] else ""
        print(f"| {name} | {fmt(hs)} | {ratio(hs, ref_hs)} | {fmt(get)} | {ratio(get, ref_get)} "
              f"| {fmt(rps)} | {ratio(rps, ref_rps)} | {fmt(p50, '.2f')} | {fmt(p99, '.2f')} "
              f"| {fmt(bad, 'd')} | {sockerr or '-'} |")
    notes = []
    if why:
        notes.append(f"handshake metrics by a Python ssl loop: {why}")
    for name, r in results.items():
        if r["get_bytes"] and min(r["get_bytes"]) == 0:
            notes.append(f"{name}: conn+GET read 0 bytes per connection (no answers?)")
        for e in r["err"]:
            notes.append(f"{name}: {e}")
    if notes:
        print()
        for n in notes:
            print(f"- {n}")


if __name__ == "__main__":
    main()
