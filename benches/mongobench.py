#!/usr/bin/env python3
"""MongoDB mock benchmark: pymongo INSIDE the jail against meshwrap's
MongoDB responder: inserts per second (insert_one, one round trip each),
finds by _id per second (find_one), and a bulk insert_many.

    python3 benches/mongobench.py [-n 5000]

Needs pymongo (pip) and meshwrap built with `cargo build --release`.
Traffic goes only to the fake name bench.mongo.test inside the jail.
Do not run it while a build is going on: on 2 cores the numbers would mean
nothing.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHWRAP = os.environ.get("MESHWRAP", os.path.join(ROOT, "target/release/meshwrap"))

RULES = """services:
  - name: bench
    match: { host: bench.mongo.test, port: 27017 }
    mongo: {}
"""

CLIENT = r"""
import json, sys, time
from pymongo import MongoClient
n = int(sys.argv[1])
c = MongoClient("mongodb://bench.mongo.test:27017/", serverSelectionTimeoutMS=5000)
col = c.bench.items
col.find_one({})  # connect
t = time.perf_counter()
for i in range(n):
    col.insert_one({"_id": i, "name": f"item{i}", "v": i})
ins = n / (time.perf_counter() - t)
t = time.perf_counter()
for i in range(n):
    col.find_one({"_id": i})
fnd = n / (time.perf_counter() - t)
t = time.perf_counter()
col.insert_many([{"k": i} for i in range(n)])
bulk = n / (time.perf_counter() - t)
print(json.dumps({"inserts_per_s": round(ins), "finds_by_id_per_s": round(fnd),
                  "bulk_docs_per_s": round(bulk)}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "rules.yaml")
        client = os.path.join(tmp, "client.py")
        with open(rules, "w") as f:
            f.write(RULES)
        with open(client, "w") as f:
            f.write(CLIENT)
        os.chmod(tmp, 0o755)
        res = subprocess.run([MESHWRAP, "--quiet", "--rules", rules, "--",
                              sys.executable, client, str(args.n)],
                             capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            sys.exit(f"benchmark failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        out = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"meshwrap MongoDB responder, pymongo in the jail, n={args.n}")
        for k, v in out.items():
            print(f"  {k:>18}: {v}")


if __name__ == "__main__":
    main()
