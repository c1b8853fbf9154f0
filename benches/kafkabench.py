#!/usr/bin/env python3
"""Kafka mock benchmark: confluent-kafka INSIDE the jail producing to and
consuming from meshwrap's Kafka responder, next to the same script against
librdkafka's own in-process mock cluster (`test.mock.num.brokers=1`, on
host loopback) as the reference, in one run.

    python3 benches/kafkabench.py [-n 200000] [--size 100] [--codecs none,lz4]

Needs the python package confluent-kafka and meshwrap built with
`cargo build --release`. Traffic goes only to the fake name
bench.kafka.test inside the jail and to 127.0.0.1 for the reference.
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
    match: { host: bench.kafka.test, port: 9092 }
    kafka: {}
"""

CLIENT = r"""
import json, sys, time
from confluent_kafka import Producer, Consumer, TopicPartition, KafkaError, OFFSET_BEGINNING
mode, n, size, codec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
base = {"bootstrap.servers": "bench.kafka.test:9092"}
if mode == "ref":
    base = {"test.mock.num.brokers": 1}
topic = "bench-" + codec
p = Producer(dict(base, **{"compression.type": codec, "linger.ms": 5,
                           "batch.num.messages": 10000, "queue.buffering.max.messages": 1000000}))
if mode == "ref":
    # The mock cluster's address, for the consumer.
    b = list(p.list_topics(timeout=10).brokers.values())[0]
    cbase = {"bootstrap.servers": f"{b.host}:{b.port}"}
else:
    cbase = base
payload = b"x" * size
t0 = time.perf_counter()
for i in range(n):
    while True:
        try:
            p.produce(topic, value=payload, partition=0)
            break
        except BufferError:
            p.poll(0.01)
p.flush(60)
produce_s = time.perf_counter() - t0
# Read from the start of the log to its end (partition EOF): the reference
# keeps only the newest few MB of a partition, so it may hold fewer than n.
c = Consumer(dict(cbase, **{"group.id": "bench", "enable.auto.commit": False,
                            "enable.partition.eof": True,
                            "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 10485760}))
c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
t0 = time.perf_counter()
got = 0
at_end = False
deadline = time.time() + 120
while not at_end and time.time() < deadline:
    for m in c.consume(10000, 1.0):
        if m.error() is None:
            got += 1
        elif m.error().code() == KafkaError._PARTITION_EOF:
            at_end = True
consume_s = time.perf_counter() - t0
c.close()
print(json.dumps({"produce": n / produce_s, "consume": got / consume_s, "got": got}))
"""


def run(mode, n, size, codec, script):
    cmd = [sys.executable, script, mode, str(n), str(size), codec]
    if mode == "mock":
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(RULES)
        cmd = [MESHWRAP, "--quiet", "--rules", f.name, "--"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} failed ({out.returncode}):\n{out.stdout}\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200000, help="messages per run")
    ap.add_argument("--size", type=int, default=100, help="value size in bytes")
    ap.add_argument("--codecs", default="none,lz4")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "client.py")
        with open(script, "w") as f:
            f.write(CLIENT)
        os.chmod(d, 0o755)
        os.chmod(script, 0o644)
        print(f"{args.n} messages of {args.size} bytes, one partition, confluent-kafka "
              f"(librdkafka) in the jail vs librdkafka's mock cluster on loopback")
        print("consume reads from the start of the log to its end; the reference keeps only "
              "the newest few MB of a partition, so it may read fewer messages (column 'read')")
        print(f"{'codec':<6} {'op':<8} {'meshwrap msg/s':>15} {'MB/s':>7} {'read':>7} "
              f"{'reference msg/s':>16} {'MB/s':>7} {'read':>7} {'ratio':>6}")
        for codec in args.codecs.split(","):
            mock = run("mock", args.n, args.size, codec, script)
            ref = run("ref", args.n, args.size, codec, script)
            for op in ("produce", "consume"):
                m, r = mock[op], ref[op]
                mread = args.n if op == "produce" else mock["got"]
                rread = args.n if op == "produce" else ref["got"]
                mb = lambda rate: rate * args.size / 1e6
                ratio = f"{m / r:>6.2f}" if m and r else f"{'n/a':>6}"
                print(f"{codec:<6} {op:<8} {m:>15,.0f} {mb(m):>7.1f} {mread:>7} "
                      f"{r:>16,.0f} {mb(r):>7.1f} {rread:>7} {ratio}")


if __name__ == "__main__":
    main()
