#!/usr/bin/env python3
"""Redis mock benchmark: redis-benchmark INSIDE the jail against meshwrap's
Redis responder, against a real redis-server reached through the jail
(`--unmatched pass` to host.meshwrap.internal), and against the same
redis-server on plain loopback (the reference), all in one run.

    python3 benches/redisbench.py [-n 200000] [--tests set,get,incr,lpush,lpop]

Needs redis-server and redis-benchmark (Debian packages `redis-server`,
`redis-tools`) and meshwrap built with `cargo build --release`. The
redis-server is started by this script on 127.0.0.1 with `--save ''
--appendonly no` and stopped at the end. Traffic goes only to 127.0.0.1,
the jail's gateway (host loopback) and the fake name bench.redis.test.
Do not run it while a build is going on: on 2 cores the numbers would mean
nothing.
"""
import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile

from common import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHWRAP = os.environ.get("MESHWRAP", os.path.join(ROOT, "target/release/meshwrap"))

RULES = """services:
  - name: bench
    match: { host: bench.redis.test, port: 6379 }
    redis: {}
"""


def parse_csv(out):
    """redis-benchmark --csv: "test","rps",... → {test: rps}."""
    rows = {}
    for row in csv.reader(io.StringIO(out)):
        if len(row) >= 2 and row[0] != "test":
            try:
                rows[row[0].split()[0].lower()] = float(row[1])
            except ValueError:
                pass
    return rows


def bench_cmd(host, port, args, pipeline):
    cmd = ["redis-benchmark", "-h", host, "-p", str(port), "-t", args.tests,
           "-n", str(args.requests), "-c", str(args.clients), "--csv"]
    if pipeline > 1:
        cmd += ["-P", str(pipeline)]
    return cmd


def run(cmd, timeout=600):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return parse_csv(p.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--requests", type=int, default=200000)
    ap.add_argument("-c", "--clients", type=int, default=50)
    ap.add_argument("--tests", default="set,get,incr,lpush,lpop")
    ap.add_argument("--pipelines", default="1,16", help="comma-separated -P values (1 = none)")
    args = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install redis-server redis-tools")
    if not os.access(MESHWRAP, os.X_OK):
        sys.exit(f"meshwrap not found at {MESHWRAP}: cargo build --release")
    tmp = tempfile.mkdtemp(prefix="redisbench-")
    rules = os.path.join(tmp, "bench.yaml")
    with open(rules, "w") as f:
        f.write(RULES)
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", tmp, "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, what="redis-server")
        results = {}
        for p in [int(x) for x in args.pipelines.split(",")]:
            label = f"-c {args.clients}" + (f" -P {p}" if p > 1 else "")
            results[(label, "responder")] = run(
                [MESHWRAP, "--quiet", "--rules", rules, "--", *bench_cmd("bench.redis.test", 6379, args, p)])
            results[(label, "real via jail")] = run(
                [MESHWRAP, "--quiet", "--unmatched", "pass", "--",
                 *bench_cmd("host.meshwrap.internal", port, args, p)])
            results[(label, "real on loopback")] = run(bench_cmd("127.0.0.1", port, args, p))
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    tests = args.tests.split(",")
    print(f"redis-benchmark -n {args.requests}, requests/s (ratio to real redis-server on loopback)\n")
    print("| test | load | meshwrap responder (jail) | real redis via jail (pass) | real redis on loopback |")
    print("| --- | --- | --- | --- | --- |")
    labels = sorted({k[0] for k in results}, key=lambda s: ("-P" in s, s))
    for label in labels:
        for t in tests:
            ref = results[(label, "real on loopback")].get(t)
            cells = []
            for row in ("responder", "real via jail", "real on loopback"):
                v = results[(label, row)].get(t)
                if v is None:
                    cells.append("—")
                elif row == "real on loopback" or not ref:
                    cells.append(f"{v:,.0f}")
                else:
                    cells.append(f"{v:,.0f} ({v / ref:.2f}×)")
            print(f"| {t.upper()} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
