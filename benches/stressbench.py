#!/usr/bin/env python3
"""Stress benchmark (not CI): many idle connections, a steady rate of new
connections and the hostile inputs of tests/test_hardening.py, all from
inside one jail, while a probe checks every 200 ms that a DNS query and a
normal HTTP request from another client are still answered.

    python3 benches/stressbench.py [--idle 10000] [--rate 1000] [--seconds 30]

It reports connection failures, meshwrap's RSS before, during (the peak)
and after, and the probe's worst latencies with how many probes took more
than 100 ms or failed. Traffic goes only to mocked names inside the jail.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHWRAP = os.environ.get("MESHWRAP", os.path.join(ROOT, "target/release/meshwrap"))

RULES = """
services:
  - name: web
    match: { host: web.stress.test, port: 80 }
    http:
      routes:
        - when: { path: /ok }
          respond: { body: ok }
        - when: { path: /loop }
          respond: { body: "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}" }
  - name: idle
    match: { host: idle.stress.test, port: 9000 }
    http: {}
  - name: cache
    match: { host: redis.stress.test, port: 6379 }
    redis:
      seed:
        s: { type: set, value: [a, b, c] }
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: x
  - name: db
    match: { host: mongo.stress.test, port: 27017 }
    mongo: {}
"""

# Runs inside the jail: the load, the hostile inputs and the probe.
SUT = r'''
import json, resource, socket, struct, sys, threading, time
idle_n, rate, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, idle_n + 4096), hard))
out = {"idle_failed": 0, "new_failed": 0, "new_opened": 0, "hostile": {}}
probe = {"n": 0, "slow": 0, "failed": 0, "worst_dns_ms": 0.0, "worst_http_ms": 0.0}
stop = threading.Event()

def http_get(path, timeout=5):
    s = socket.create_connection(("web.stress.test", 80), timeout=timeout)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: web.stress.test\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    s.close()
    return data

def prober():
    while not stop.is_set():
        probe["n"] += 1
        try:
            t0 = time.monotonic()
            socket.getaddrinfo(f"p{probe['n']}.web.stress.test", 80)
            t1 = time.monotonic()
            ok = http_get("/ok").endswith(b"ok")
            t2 = time.monotonic()
            dns_ms, http_ms = (t1 - t0) * 1000, (t2 - t1) * 1000
            probe["worst_dns_ms"] = max(probe["worst_dns_ms"], dns_ms)
            probe["worst_http_ms"] = max(probe["worst_http_ms"], http_ms)
            if not ok:
                probe["failed"] += 1
            elif dns_ms > 100 or http_ms > 100:
                probe["slow"] += 1
        except OSError:
            probe["failed"] += 1
        time.sleep(0.2)

def hostile():
    def redis(cmd):
        s = socket.create_connection(("redis.stress.test", 6379), timeout=10)
        s.sendall(cmd)
        r = s.recv(4096)
        s.close()
        return r[:60].decode(errors="replace")
    out["hostile"]["srandmember_min"] = redis(b"SRANDMEMBER s -9223372036854775807\r\n")
    out["hostile"]["srandmember_huge"] = redis(b"SRANDMEMBER s -100000000\r\n")
    out["hostile"]["blpop_1e300"] = redis(b"BLPOP k 1e300\r\n")
    out["hostile"]["keys_glob"] = redis(b"KEYS " + b"*a" * 14 + b"*b\r\n")
    doc = b"\x05\x00\x00\x00\x00"
    for _ in range(4999):
        inner = b"\x03a\x00" + doc
        doc = struct.pack("<i", 4 + len(inner) + 1) + inner + b"\x00"
    body = struct.pack("<I", 0) + b"\x00" + doc
    s = socket.create_connection(("mongo.stress.test", 27017), timeout=10)
    s.sendall(struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body)
    out["hostile"]["bson_depth_5000"] = "answered" if s.recv(16) else "closed"
    s.close()
    try:
        out["hostile"]["template_loop"] = http_get("/loop", timeout=30).split(b"\r\n")[0].decode()
    except OSError as e:
        out["hostile"]["template_loop"] = f"error: {e}"

threading.Thread(target=prober, daemon=True).start()
idle = []
t0 = time.monotonic()
for i in range(idle_n):
    try:
        idle.append(socket.create_connection(("idle.stress.test", 9000), timeout=10))
    except OSError:
        out["idle_failed"] += 1
out["idle_open_s"] = round(time.monotonic() - t0, 2)
print("PHASE idle-open", flush=True)
hostile()
end = time.monotonic() + seconds
next_at = time.monotonic()
while time.monotonic() < end:
    next_at += 1.0 / rate
    try:
        c = socket.create_connection(("web.stress.test", 80), timeout=10)
        c.close()
        out["new_opened"] += 1
    except OSError:
        out["new_failed"] += 1
    delay = next_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
for c in idle:
    c.close()
time.sleep(2)
print("PHASE closed", flush=True)
time.sleep(1)
stop.set()
out["probe"] = probe
print(json.dumps(out), flush=True)
'''


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idle", type=int, default=10000, help="concurrent idle connections")
    ap.add_argument("--rate", type=int, default=1000, help="new connections per second")
    ap.add_argument("--seconds", type=float, default=30)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="stressbench-")
    rules = os.path.join(tmp, "rules.yaml")
    sut = os.path.join(tmp, "sut.py")
    with open(rules, "w") as f:
        f.write(RULES)
    with open(sut, "w") as f:
        f.write(SUT)
    proc = subprocess.Popen([MESHWRAP, "--quiet", "--rules", rules, "--", sys.executable, sut,
                             str(args.idle), str(args.rate), str(args.seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    samples = {"before": rss_kb(proc.pid), "peak": 0, "after": 0}
    phase = ["start"]

    def sample():
        while proc.poll() is None:
            kb = rss_kb(proc.pid)
            samples["peak"] = max(samples["peak"], kb)
            if phase[0] == "closed":
                samples["after"] = kb
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    last = None
    for line in iter(proc.stdout.readline, ""):
        if line.startswith("PHASE "):
            phase[0] = line.split()[1]
        elif line.strip():
            last = line
    proc.wait()
    if last is None:
        sys.exit(f"the SUT printed no result (exit {proc.returncode}):\n{proc.stderr.read()[-2000:]}")
    r = json.loads(last)
    p = r["probe"]
    print(f"{args.idle} idle connections, {args.rate} new connections/s for {args.seconds:g} s, and the hostile inputs\n")
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| idle connections failed | {r['idle_failed']} of {args.idle} (opened in {r['idle_open_s']} s) |")
    print(f"| new connections | {r['new_opened']} opened, {r['new_failed']} failed |")
    print(f"| meshwrap RSS before / peak / after | {samples['before'] // 1024} / {samples['peak'] // 1024} / {samples['after'] // 1024} MB |")
    print(f"| probes (DNS + HTTP from another client) | {p['n']}, {p['failed']} failed, {p['slow']} over 100 ms |")
    print(f"| worst probe DNS / HTTP | {p['worst_dns_ms']:.1f} / {p['worst_http_ms']:.1f} ms |")
    for k, v in r["hostile"].items():
        print(f"| hostile `{k}` | {v.strip()} |")
    print(f"\nmeshwrap exit code {proc.returncode} (the SUT's)")


if __name__ == "__main__":
    main()
