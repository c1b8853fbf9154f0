#!/usr/bin/env python3
"""Stress benchmark (issue #35; not CI). Each vector runs in a jail of its
own: a fresh meshwrap runs a Python driver that applies the vector from
inside the jail, opening its connections concurrently (asyncio or threads),
while a second process in the same jail, the probe, resolves a name never
asked before and makes one mocked HTTP request every 50 ms.

    python3 benches/stressbench.py [--quick] [--only NAME[,NAME...]] [--list]

For each vector it prints one row of a Markdown table: meshwrap's resident
memory (VmRSS of the meshwrap process) before the vector, at its peak
(sampled every 100 ms, and VmHWM) and after it (once back within 16 MB
of the start, 15 s at most), the probe's worst DNS and HTTP latency while the
vector ran, the failures (probe failures and vector errors that are not
the refusals the vector expects) and notes. The targets of issue #35:
10,000 flows under 300 MB and back near idle after they close, probe
latencies under 100 ms, no failure.

--quick divides the sizes by 10 (a smoke run). Vectors about memory run
with --memory-budget 512M (said in the notes).

Network safety: every name is under .test (answered by meshwrap's DNS and
mocked by the rules below), plus the jail's own resolver; the one pass-out
vector (udp-ports) sends to host.meshwrap.internal, i.e. a UDP echo server
this script starts on the host's 127.0.0.1.
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHWRAP = os.environ.get("MESHWRAP", os.path.join(ROOT, "target/release/meshwrap"))
PROXY_VARS = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy")
BUDGET = "512M"
SETTLE_S = 15  # how long "after" waits, at most, for RSS to come back
NEAR_KB = 16 << 10  # what counts as back: within 16 MB of "before"

RULES = """
services:
  - name: probe
    match: { host: "*.probe.test", port: 80 }
    http:
      routes:
        - when: { path: /ok }
          respond: { body: ok }
  - name: web
    match: { host: web.stress.test, port: 80 }
    http:
      routes:
        - when: { path: /ok }
          respond: { body: ok }
        - when: { path: /upload, method: POST }
          respond: { status: 201 }
        - when: { path: /loop }
          respond: { body: "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}" }
        - when: { path: /heavy }
          respond: { body: "{% set ns = namespace(n=0) %}{% for j in range(4) %}{% for i in range(50000) %}{% set ns.n = ns.n + 1 %}{% endfor %}{% endfor %}{{ ns.n }}" }
  - name: cache
    match: { host: redis.stress.test, port: 6379 }
    redis:
      seed:
        s: { type: set, value: [a, b, c] }
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: x
  - name: db
    match: { host: mongo.stress.test, port: 27017 }
    mongo: {}
  - name: bus
    match: { host: kafka.stress.test, port: 9092 }
    kafka: { topics: { events: { partitions: 1 } } }
"""

# The second client: a process of its own (no GIL shared with the driver).
# Every 50 ms: getaddrinfo of a new name, then GET /ok on a new connection.
PROBE = r'''
import json, os, socket, sys, time
out_path, stop_path, ready_path = sys.argv[1:4]
samples, n = [], 0
while not os.path.exists(stop_path):
    n += 1
    name = f"p{n}.probe.test"
    t0 = time.monotonic()
    dns = http = err = None
    try:
        ai = socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)
        t1 = time.monotonic()
        dns = (t1 - t0) * 1000
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(ai[0][4])
        s.sendall(f"GET /ok HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            c = s.recv(4096)
            if not c:
                break
            data += c
        s.close()
        http = (time.monotonic() - t1) * 1000
        if not (data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok")):
            err = f"answer {data[:40]!r}"
    except Exception as e:
        err = f"{type(e).__name__}: {e}"
    samples.append([t0, dns, http, err])
    if n == 5:
        open(ready_path, "w").close()
    delay = t0 + 0.05 - time.monotonic()
    if delay > 0:
        time.sleep(delay)
with open(out_path, "w") as f:
    json.dump(samples, f)
'''

# What every driver shares: helpers, then (after the vector's code) the
# protocol with this script: READY, START, MARK, END on stdout, and flag
# files for go and settled.
PRELUDE = r'''
import asyncio, collections, json, os, random, resource, select, socket, struct, subprocess
import sys, threading, time, traceback
WORK, SCALE = sys.argv[1], float(sys.argv[2])
ARGS = sys.argv[3:]

def sz(n):
    return max(1, int(n * SCALE))

def say(*words):
    print(*words, flush=True)

def mark(name):
    say("MARK", name)
    time.sleep(0.3)  # lets the host take a sample

def wait_flag(name, timeout):
    end = time.monotonic() + timeout
    while not os.path.exists(os.path.join(WORK, name)) and time.monotonic() < end:
        time.sleep(0.02)

def resolve(name):
    return socket.getaddrinfo(name, 0, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]

def resolver():
    for line in open("/etc/resolv.conf"):
        if line.split()[:1] == ["nameserver"]:
            return line.split()[1]

def dns_query(qid, name, qtype=1):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return q + struct.pack(">HH", qtype, 1)

def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)

def err_text(e):
    return f"{type(e).__name__}: {e}"[:120]

class Errors:
    """Vector errors: counted, the first few kept as samples."""
    def __init__(self):
        self.n, self.samples, self.lock = 0, collections.Counter(), threading.Lock()
    def add(self, what):
        with self.lock:
            self.n += 1
            self.samples[str(what)[:120]] += 1
    def result(self, notes):
        return {"errors": self.n, "samples": self.samples.most_common(3), "notes": notes}

async def open_many(ip, port, n, limit=512, timeout=30):
    """n connections, up to `limit` connecting at once."""
    sem = asyncio.Semaphore(limit)
    async def one():
        async with sem:
            try:
                return await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
            except Exception as e:
                return e
    return await asyncio.gather(*[one() for _ in range(n)])

async def close_all(conns):
    for _, w in conns:
        w.close()
    await asyncio.gather(*[w.wait_closed() for _, w in conns], return_exceptions=True)

def raw_request(ip, port, data, timeout=60, read_limit=1 << 16):
    """Sends `data` while watching for an early answer (a server that
    refuses a body answers before it is all sent); returns what was read
    until the server closed or `read_limit` bytes."""
    s = socket.create_connection((ip, port), timeout=timeout)
    got = b""
    try:
        view, off = memoryview(data), 0
        while off < len(view):
            r, _, _ = select.select([s], [], [], 0)
            if r:
                break
            try:
                off += s.send(view[off:off + (256 << 10)])
            except (BrokenPipeError, ConnectionResetError):
                break
        while len(got) < read_limit:
            try:
                c = s.recv(65536)
            except ConnectionResetError:
                break
            if not c:
                break
            got += c
            if b"\r\n\r\n" in got and read_limit <= 1 << 16:
                head, _, body = got.partition(b"\r\n\r\n")
                cl = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if cl and len(body) >= int(cl[0].split(b":")[1]):
                    break
    finally:
        s.close()
    return got

def status_of(answer):
    if answer.startswith(b"HTTP/1.1 ") and len(answer) >= 12:
        return int(answer[9:12])
    return "closed" if not answer else f"junk {answer[:20]!r}"
'''

DRIVER_MAIN = r'''
def _main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stop, ready = os.path.join(WORK, "probe.stop"), os.path.join(WORK, "probe.ready")
    probe = subprocess.Popen([sys.executable, os.path.join(WORK, "probe.py"),
                              os.path.join(WORK, "probe.json"), stop, ready])
    wait_flag("probe.ready", 60)
    say("READY")
    wait_flag("go", 120)
    say("START", time.monotonic())
    try:
        res = run()
    except Exception as e:
        traceback.print_exc()
        res = {"errors": 1, "samples": [[err_text(e), 1]], "notes": "the vector raised"}
    say("END", time.monotonic())
    wait_flag("settled", 120)
    open(stop, "w").close()
    probe.wait(30)
    say("RESULT", json.dumps(res))

_main()
'''

V = {}  # name -> dict(code, budget, unmatched, doc, timeout, host)


def vector(name, doc, budget=None, unmatched=None, timeout=240, host=None):
    def add(code):
        V[name] = dict(code=code, budget=budget, unmatched=unmatched, doc=doc,
                       timeout=timeout, host=host)
    return add


vector("held-10k", "10,000 concurrent Redis connections held, PING each, then closed")(r'''
def run():
    n, errs = sz(10000), Errors()
    ip = resolve("redis.stress.test")
    async def main():
        t0 = time.monotonic()
        conns = await open_many(ip, 6379, n)
        ok = [c for c in conns if not isinstance(c, Exception)]
        for c in conns:
            if isinstance(c, Exception):
                errs.add("connect: " + err_text(c))
        opened = time.monotonic() - t0
        async def ping(rw):
            r, w = rw
            w.write(b"PING\r\n")
            await w.drain()
            return await asyncio.wait_for(r.readexactly(7), 60)
        got = await asyncio.gather(*[ping(c) for c in ok], return_exceptions=True)
        pong = sum(g == b"+PONG\r\n" for g in got)
        for g in got:
            if g != b"+PONG\r\n":
                errs.add(f"ping: {g!r}"[:120])
        mark("held")
        await asyncio.sleep(3)
        await close_all(ok)
        return errs.result(f"{len(ok)}/{n} open in {opened:.1f} s, {pong} PONG")
    return asyncio.run(main())
''')

vector("rounds-3x1500", "three rounds of 1,500 Redis connections opened (PING) and closed")(r'''
def run():
    n, errs, notes = sz(1500), Errors(), []
    ip = resolve("redis.stress.test")
    async def main():
        for r in range(3):
            conns = await open_many(ip, 6379, n)
            ok = [c for c in conns if not isinstance(c, Exception)]
            for c in conns:
                if isinstance(c, Exception):
                    errs.add("connect: " + err_text(c))
            for rd, w in ok:
                w.write(b"PING\r\n")
            got = await asyncio.gather(*[asyncio.wait_for(rd.readexactly(7), 60) for rd, w in ok],
                                       return_exceptions=True)
            bad = sum(g != b"+PONG\r\n" for g in got)
            for g in got:
                if g != b"+PONG\r\n":
                    errs.add(f"ping: {g!r}"[:120])
            mark(f"held{r}")
            await close_all(ok)
            await asyncio.sleep(2)
            mark(f"closed{r}")
        return errs.result(f"{n} per round")
    return asyncio.run(main())
''')

vector("http1-bodies", "200 concurrent HTTP/1.1 POSTs of 8 MB bodies", budget=BUDGET)(r'''
def run():
    n, errs, statuses = sz(200), Errors(), collections.Counter()
    ip = resolve("web.stress.test")
    body = b"x" * (8 << 20)
    head = (f"POST /upload HTTP/1.1\r\nHost: web.stress.test\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n").encode()
    data = head + body
    go = threading.Barrier(n)
    def post():
        go.wait()
        try:
            st = status_of(raw_request(ip, 80, data, timeout=120))
        except Exception as e:
            st = err_text(e)
        statuses[st] += 1
        if st not in (201, 503, 413):
            errs.add(f"status {st}")
    ts = [threading.Thread(target=post) for _ in range(n)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    s = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str))
    return errs.result(f"{s} in {time.monotonic() - t0:.1f} s")
''')

vector("http2-bodies", "100 concurrent HTTP/2 (h2c) streams on one connection, 4 MB bodies",
       budget=BUDGET)(r'''
def run():
    n, errs, statuses = sz(100), Errors(), collections.Counter()
    try:
        import httpx, h2  # noqa: F401
    except ImportError:
        return {"errors": 0, "samples": [], "notes": "skipped: httpx with h2 not installed"}
    body = b"y" * (4 << 20)
    async def main():
        async with httpx.AsyncClient(http1=False, http2=True, timeout=120) as c:
            async def post():
                try:
                    r = await c.post("http://web.stress.test/upload", content=body)
                    return r.status_code, r.http_version
                except Exception as e:
                    return err_text(e), None
            return await asyncio.gather(*[post() for _ in range(n)])
    t0 = time.monotonic()
    got = asyncio.run(main())
    versions = collections.Counter(v for _, v in got if v)
    for st, _ in got:
        statuses[st] += 1
        if st not in (201, 503, 413):
            errs.add(f"status {st}")
    s = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str))
    return errs.result(f"{s} ({dict(versions)}) in {time.monotonic() - t0:.1f} s")
''')

vector("redis-oom", "SET 1 MiB values from 8 clients until Redis OOM, then DEL them", budget=BUDGET)(r'''
import redis
def run():
    errs, lock, stored, oom = Errors(), threading.Lock(), [], collections.Counter()
    value = b"v" * (1 << 20)
    limit = sz(2000)
    def client(k):
        r = redis.Redis(host="redis.stress.test", socket_timeout=60)
        for i in range(limit // 8):
            try:
                r.set(f"k{k}:{i}", value)
                with lock:
                    stored.append(f"k{k}:{i}")
            except redis.exceptions.ResponseError as e:
                oom[str(e)[:40]] += 1
                return
            except Exception as e:
                errs.add(err_text(e))
                return
    ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    r = redis.Redis(host="redis.stress.test", socket_timeout=60)
    used = r.info("memory")["used_memory"] >> 20
    mark("full")
    for i in range(0, len(stored), 100):
        r.delete(*stored[i:i + 100])
    again = False
    for _ in range(100):
        try:
            again = r.set("again", b"ok")
            break
        except redis.exceptions.ResponseError:
            time.sleep(0.1)
    if not again:
        errs.add("SET refused after the DEL")
    r.delete("again")
    return errs.result(f"{len(stored)} stored, OOM {sum(oom.values())}x ({', '.join(oom)}), "
                       f"used_memory {used} MB; SET taken after DEL: {bool(again)}")
''')

vector("redis-lrange-stall", "LRANGE 0 -1 of a 64 MB list to a client that stops reading for 5 s",
       budget=BUDGET)(r'''
import redis
def run():
    errs = Errors()
    r = redis.Redis(host="redis.stress.test", socket_timeout=60)
    item, n = b"i" * 1000, sz(64000)
    for i in range(0, n, 1000):
        r.rpush("big", *[item] * min(1000, n - i))
    mark("built")
    raw = socket.create_connection((resolve("redis.stress.test"), 6379), timeout=60)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.sendall(b"LRANGE big 0 -1\r\n")
    head = raw.recv(1024)
    # Meanwhile other clients are served.
    stop, served = threading.Event(), [0]
    def other():
        o = redis.Redis(host="redis.stress.test", socket_timeout=10)
        while not stop.is_set():
            try:
                o.set("o", "1"); o.get("o"); served[0] += 1
            except Exception as e:
                errs.add("other: " + err_text(e))
    ts = [threading.Thread(target=other) for _ in range(4)]
    for t in ts:
        t.start()
    time.sleep(2.5)
    mark("stalled")
    time.sleep(2.5)
    stop.set()
    for t in ts:
        t.join()
    got, want = len(head), len(b"*%d\r\n" % n) + n * len(b"$1000\r\n" + item + b"\r\n")
    t0 = time.monotonic()
    while got < want:
        c = raw.recv(1 << 20)
        if not c:
            errs.add(f"reply cut at {got} of {want}")
            break
        got += len(c)
    raw.sendall(b"PING\r\n")
    if raw.recv(64) != b"+PONG\r\n":
        errs.add("no PONG after the reply")
    raw.close()
    r.delete("big")
    return errs.result(f"{want >> 20} MB reply read whole in {time.monotonic() - t0:.1f} s after "
                       f"the stall; {served[0]} SET+GET by 4 other clients during it")
''')

vector("redis-append-64mb", "APPEND 4 KB pieces into one 64 MB string (pipelined)", budget=BUDGET)(r'''
import redis
def run():
    errs = Errors()
    r = redis.Redis(host="redis.stress.test", socket_timeout=60)
    n, piece = sz(16384), b"a" * 4096
    t0 = time.monotonic()
    for i in range(0, n, 256):
        p = r.pipeline(transaction=False)
        for _ in range(min(256, n - i)):
            p.append("built", piece)
        try:
            p.execute()
        except Exception as e:
            errs.add(err_text(e))
            break
    took = time.monotonic() - t0
    length = r.strlen("built")
    if length != n * 4096:
        errs.add(f"STRLEN {length}, not {n * 4096}")
    r.delete("built")
    return errs.result(f"{length >> 20} MB built in {took:.1f} s")
''')

vector("redis-1m-args", "RPUSH with 1,000,000 arguments sent in 1 KB pieces", budget=BUDGET)(r'''
def run():
    errs, n = Errors(), sz(1000000)
    cmd = [b"*%d\r\n$5\r\nRPUSH\r\n$4\r\nmany\r\n" % (n + 2)]
    cmd += [b"$%d\r\nm%d\r\n" % (len(b"m%d" % i), i) for i in range(n)]
    data = b"".join(cmd)
    raw = socket.create_connection((resolve("redis.stress.test"), 6379), timeout=120)
    t0 = time.monotonic()
    for i in range(0, len(data), 1000):
        raw.sendall(data[i:i + 1000])
    got = raw.recv(64)
    took = time.monotonic() - t0
    if got != b":%d\r\n" % n:
        errs.add(f"reply {got!r}")
    raw.sendall(b"LINDEX many -1\r\nDEL many\r\n")
    tail = b""
    while tail.count(b"\r\n") < 3:
        c = raw.recv(4096)
        if not c:
            break
        tail += c
    if b"m%d" % (n - 1) not in tail:
        errs.add(f"LINDEX {tail[:40]!r}")
    raw.close()
    return errs.result(f"{len(data) >> 20} MB command sent and answered in {took:.1f} s")
''')

vector("kafka-200mb", "produce ~200 MB to one partition, then one Fetch with max bytes 2^31-1",
       budget=BUDGET)(r'''
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
def run():
    errs = Errors()
    n, value = sz(2000), b"k" * 100_000
    p = KafkaProducer(bootstrap_servers="kafka.stress.test:9092", max_request_size=4 << 20,
                      batch_size=1 << 20, linger_ms=5, acks=1)
    t0 = time.monotonic()
    futs = [p.send("events", value, partition=0) for _ in range(n)]
    p.flush(120)
    for f in futs:
        try:
            f.get(timeout=1)
        except Exception as e:
            errs.add("produce: " + err_text(e))
    produced = time.monotonic() - t0
    p.close()
    mark("produced")
    big = (1 << 31) - 1
    c = KafkaConsumer(bootstrap_servers="kafka.stress.test:9092", fetch_max_bytes=big,
                      max_partition_fetch_bytes=big, request_timeout_ms=120000,
                      enable_auto_commit=False)
    tp = TopicPartition("events", 0)
    start, end = c.beginning_offsets([tp])[tp], c.end_offsets([tp])[tp]
    c.assign([tp])
    c.seek(tp, start)
    t1, got, first = time.monotonic(), 0, None
    while got < end - start and time.monotonic() - t1 < 60:
        batch = c.poll(timeout_ms=5000, max_records=1 << 30).get(tp, [])
        if first is None and batch:
            first = len(batch)
        got += len(batch)
    if got != end - start:
        errs.add(f"fetched {got} of {end - start}")
    c.close()
    dropped = f"the budget dropped the oldest {start}" if start else "nothing dropped"
    return errs.result(f"{n * len(value) >> 20} MB produced in {produced:.1f} s (kept: log {start}..{end}, "
                       f"{dropped}); fetched {got} in "
                       f"{time.monotonic() - t1:.1f} s, {first} in the first poll")
''')

vector("mongo-6400", "insert 6,400 10 KB docs, then count_documents and find().sort().limit(1) "
       "from 8 clients")(r'''
from pymongo import MongoClient
def run():
    errs, n = Errors(), sz(6400)
    url = "mongodb://mongo.stress.test:27017/"
    coll = MongoClient(url, serverSelectionTimeoutMS=20000).app.things
    pad = "p" * 10000
    t0 = time.monotonic()
    for i in range(0, n, 800):
        coll.insert_many([{"i": j, "pad": pad} for j in range(i, min(n, i + 800))])
    inserted = time.monotonic() - t0
    mark("inserted")
    times = []
    def client():
        c = MongoClient(url, serverSelectionTimeoutMS=20000).app.things
        for _ in range(3):
            try:
                t = time.monotonic()
                if c.count_documents({}) != n:
                    errs.add("count")
                top = list(c.find({}, {"i": 1, "_id": 0}).sort("i", -1).limit(1))
                if top != [{"i": n - 1}]:
                    errs.add(f"top {top}")
                times.append(time.monotonic() - t)
            except Exception as e:
                errs.add(err_text(e))
    ts = [threading.Thread(target=client) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    coll.drop()
    return errs.result(f"inserted in {inserted:.1f} s; count+sort worst {max(times or [0]):.2f} s")
''')

vector("dns-tcp-idle", "1,000 idle TCP connections to the jail's resolver (port 53)")(r'''
def run():
    errs, n = Errors(), sz(1000)
    ns = resolver()
    async def main():
        t0 = time.monotonic()
        conns = await open_many(ns, 53, n)
        ok = [c for c in conns if not isinstance(c, Exception)]
        for c in conns:
            if isinstance(c, Exception):
                errs.add("connect: " + err_text(c))
        mark("open")
        async def until_closed(rw):
            try:
                got = await asyncio.wait_for(rw[0].read(512), 20)
                return time.monotonic() - t0 if got == b"" else "data"
            except asyncio.TimeoutError:
                return "open"
            except Exception as e:
                return err_text(e)
        got = await asyncio.gather(*[until_closed(c) for c in ok])
        closed = [g for g in got if isinstance(g, float)]
        others = collections.Counter(g for g in got if not isinstance(g, float))
        await close_all(ok)
        when = f"after {min(closed):.1f}-{max(closed):.1f} s" if closed else ""
        return errs.result(f"{len(ok)} open; {len(closed)} closed by meshwrap {when}"
                           + (f"; {dict(others)}" if others else ""))
    return asyncio.run(main())
''')


def udp_echo_server():
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)

    def echo():
        while True:
            try:
                data, peer = sink.recvfrom(2048)
                sink.sendto(data, peer)
            except OSError:
                return
    threading.Thread(target=echo, daemon=True).start()
    return sink, [str(sink.getsockname()[1])]


vector("udp-ports", "UDP datagrams from 5,000 source ports (500 at a time) to a pass-out echo on the host",
       unmatched="pass", host=udp_echo_server)(r'''
def run():
    errs, n, port = Errors(), sz(5000), int(ARGS[0])
    dst = (resolve("host.meshwrap.internal"), port)
    echoed, resent = 0, 0
    for base in range(0, n, 500):
        socks = {}
        for i in range(base, min(n, base + 500)):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", 20000 + i))
            s.setblocking(False)
            socks[s] = b"d%d" % i
        waiting = dict(socks)
        for attempt in range(10):
            for s, d in waiting.items():
                s.sendto(d, dst)
            resent += len(waiting) if attempt else 0
            end = time.monotonic() + 1
            while waiting and time.monotonic() < end:
                r, _, _ = select.select(list(waiting), [], [], 0.1)
                for s in r:
                    if s.recv(64) == waiting.get(s):
                        del waiting[s]
                        echoed += 1
            if not waiting:
                break
        for s in waiting:
            errs.add("never echoed")
        for s in socks:
            s.close()
    return errs.result(f"{echoed}/{n} echoed, {resent} datagrams sent again")
''')

vector("dns-20k-names", "20,000 unique names over UDP DNS, 256 queries in flight")(r'''
def run():
    errs, n = Errors(), sz(20000)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((resolver(), 53))
    s.setblocking(False)
    pending, sent, rcodes, fake = {}, 0, collections.Counter(), 0
    t0, retries = time.monotonic(), 0
    while sent < n or pending:
        while sent < n and len(pending) < 256:
            qid = sent & 0xffff
            pending[qid] = [f"n{sent}.names.test", time.monotonic(), 0]
            s.send(dns_query(qid, pending[qid][0]))
            sent += 1
        r, _, _ = select.select([s], [], [], 0.2)
        if r:
            while True:
                try:
                    a = s.recv(512)
                except BlockingIOError:
                    break
                qid = struct.unpack(">H", a[:2])[0]
                if qid in pending:
                    del pending[qid]
                    rcodes[a[3] & 0xf] += 1
                    fake += a[-4:-2] in (b"\xc6\x12", b"\xc6\x13")
        now = time.monotonic()
        for qid, p in list(pending.items()):
            if now - p[1] > 2:
                if p[2] >= 5:
                    errs.add("no answer after 5 tries")
                    del pending[qid]
                else:
                    p[1], p[2] = now, p[2] + 1
                    retries += 1
                    s.send(dns_query(qid, p[0]))
    if rcodes[0] != n:
        errs.add(f"rcodes {dict(rcodes)}")
    return errs.result(f"{n} names in {time.monotonic() - t0:.1f} s, rcodes {dict(rcodes)}, "
                       f"{fake} fake IPs, {retries} resent")
''')

vector("first-round-wire", "10k pipelined HTTP requests on one connection, 10 requests of 100k "
       "headers, junk into DNS over TCP (50 connections), all at once")(r'''
def run():
    errs, notes = Errors(), {}
    web, ns = resolve("web.stress.test"), resolver()
    def pipelined():
        n = sz(10000)
        s = socket.create_connection((web, 80), timeout=60)
        req = b"GET /ok HTTP/1.1\r\nHost: web.stress.test\r\n\r\n"
        t = threading.Thread(target=lambda: s.sendall(req * n))
        t0 = time.monotonic()
        t.start()
        got, tail = 0, b""
        try:
            while got < n:
                c = s.recv(1 << 16)
                if not c:
                    break
                buf = tail + c
                got += buf.count(b"HTTP/1.1 200 ")
                tail = buf[-12:]
        except OSError as e:
            errs.add("pipelined: " + err_text(e))
        t.join()
        s.close()
        if got != n:
            errs.add(f"pipelined: {got} of {n} answered")
        notes["pipelined"] = f"{got}/{n} answered in {time.monotonic() - t0:.1f} s"
    headers = collections.Counter()
    def many_headers():
        h = b"".join(b"X-H%d: v\r\n" % i for i in range(sz(100000)))
        data = b"GET /ok HTTP/1.1\r\nHost: web.stress.test\r\n" + h + b"\r\n"
        try:
            st = status_of(raw_request(web, 80, data))
        except Exception as e:
            st = err_text(e)
        headers[st] += 1
        if st not in (431, 400, "closed"):
            errs.add(f"100k headers: {st}")
    junk = collections.Counter()
    def dns_junk(k):
        rnd = random.Random(k)
        try:
            s = socket.create_connection((ns, 53), timeout=30)
            data = bytes(rnd.getrandbits(8) for _ in range(65536))
            if k == 0:
                data = b"\xff\xff" + data  # a length of 65,535, then junk
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                while s.recv(65536):
                    pass
                junk["closed"] += 1
            except ConnectionResetError:
                junk["reset"] += 1
            except socket.timeout:
                junk["still open after 30 s"] += 1
            s.close()
        except Exception as e:
            errs.add("dns junk: " + err_text(e))
    ts = [threading.Thread(target=pipelined)]
    ts += [threading.Thread(target=many_headers) for _ in range(10)]
    ts += [threading.Thread(target=dns_junk, args=(k,)) for k in range(50)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errs.result(f"pipelined {notes.get('pipelined')}; 100k headers: {dict(headers)}; "
                       f"DNS junk: {dict(junk)}")
''')

vector("first-round-hostile", "the hostile inputs of tests/test_hardening.py, at once: SRANDMEMBER "
       "at the Int64 bound and huge counts, BLPOP 1e300, an exponential KEYS glob, BSON nested 5,000 "
       "deep, a template loop without end, 12 renders that use most of their fuel")(r'''
def run():
    errs, out = Errors(), {}
    rip, mip, wip = resolve("redis.stress.test"), resolve("mongo.stress.test"), resolve("web.stress.test")
    def redis_cmd(key, cmd, expect):
        try:
            s = socket.create_connection((rip, 6379), timeout=10)
            s.sendall(cmd)
            r = s.recv(4096)
            s.close()
        except Exception as e:
            r = err_text(e).encode()
        out[key] = r[:40].decode(errors="replace").strip()
        if not r.startswith(expect):
            errs.add(f"{key}: {out[key]}")
    def bson():
        doc = b"\x05\x00\x00\x00\x00"
        for _ in range(4999):
            inner = b"\x03a\x00" + doc
            doc = struct.pack("<i", 4 + len(inner) + 1) + inner + b"\x00"
        body = struct.pack("<I", 0) + b"\x00" + doc
        try:
            s = socket.create_connection((mip, 27017), timeout=10)
            s.sendall(struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body)
            out["bson5000"] = "answered" if s.recv(16) else "closed"
            s.close()
        except Exception as e:
            errs.add("bson: " + err_text(e))
    def loop():
        try:
            st = status_of(raw_request(wip, 80, b"GET /loop HTTP/1.1\r\nHost: web.stress.test\r\n"
                                                 b"Connection: close\r\n\r\n", timeout=60))
        except Exception as e:
            st = err_text(e)
        out["template_loop"] = st
        if st != 500:
            errs.add(f"template loop: {st}")
    heavy = collections.Counter()
    def heavy_render():
        try:
            a = raw_request(wip, 80, b"GET /heavy HTTP/1.1\r\nHost: web.stress.test\r\n"
                                     b"Connection: close\r\n\r\n", timeout=60)
            st = status_of(a) if not a.endswith(b"200000") else "200000"
        except Exception as e:
            st = err_text(e)
        heavy[st] += 1
        if st != "200000":
            errs.add(f"heavy render: {st}")
    jobs = [lambda: redis_cmd("srandmember_min", b"SRANDMEMBER s -9223372036854775808\r\n", b"-"),
            lambda: redis_cmd("srandmember_huge", b"SRANDMEMBER s -100000000\r\n", b"-"),
            lambda: redis_cmd("blpop_1e300", b"BLPOP k 1e300\r\n", b"-"),
            lambda: redis_cmd("keys_glob", b"KEYS " + b"*a" * 14 + b"*b\r\n", b"*0"),
            bson, loop] + [heavy_render] * 12
    ts = [threading.Thread(target=j) for j in jobs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out["12 heavy renders"] = dict(heavy)
    return errs.result("; ".join(f"{k}: {v}" for k, v in out.items()))
''')

vector("churn", "the first round's connection rate: 1,000 new HTTP connections/s for 20 s "
       "(4 threads)")(r'''
def run():
    errs, secs, rate = Errors(), 20 * SCALE, 1000
    ip = resolve("web.stress.test")
    done = [0] * 4
    def worker(k):
        end, nxt = time.monotonic() + secs, time.monotonic()
        while time.monotonic() < end:
            nxt += 4 / rate
            try:
                socket.create_connection((ip, 80), timeout=10).close()
                done[k] += 1
            except OSError as e:
                errs.add(err_text(e))
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errs.result(f"{sum(done)} connections in {secs:g} s ({sum(done) / secs:.0f}/s)")
''')


# ---------------------------------------------------------------- host side

def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def mb(kb):
    return "-" if kb is None else f"{kb / 1024:.0f}"


def jail_env():
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def snapshot_binary():
    """A private copy of the binary, so that a rebuild during the run (the
    working tree is shared) does not change it between vectors; and how
    to name it in the table's header."""
    import hashlib
    d = tempfile.mkdtemp(prefix="stressbench-bin-")
    os.chmod(d, 0o755)
    copy = os.path.join(d, "meshwrap")
    shutil.copy2(MESHWRAP, copy)
    with open(copy, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    built = datetime.datetime.fromtimestamp(os.stat(MESHWRAP).st_mtime)
    try:
        head = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no",
                                "--", "src", "Cargo.toml", "Cargo.lock"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        head, dirty = "?", ""
    about = (f"binary sha256 {digest}, built {built:%Y-%m-%d %H:%M}, HEAD {head}"
             + (" with uncommitted changes in src/" if dirty else ""))
    return copy, about


def run_vector(name, scale, keep, binary):
    v = V[name]
    work = tempfile.mkdtemp(prefix=f"stressbench-{name}-")
    os.chmod(work, 0o755)
    files = {"rules.yaml": RULES, "probe.py": PROBE,
             "driver.py": PRELUDE + v["code"] + DRIVER_MAIN}
    for fn, text in files.items():
        with open(os.path.join(work, fn), "w") as f:
            f.write(text)
    host_res, extra = (None, [])
    if v["host"]:
        host_res, extra = v["host"]()
    cmd = [binary, "-q", "--rules", os.path.join(work, "rules.yaml")]
    if v["budget"]:
        cmd += ["--memory-budget", v["budget"]]
    if v["unmatched"]:
        cmd += ["--unmatched", v["unmatched"]]
    cmd += ["--", sys.executable, os.path.join(work, "driver.py"), work, str(scale), *extra]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=jail_env(),
                            start_new_session=True)
    pid = proc.pid
    st = {"phase": "init", "peak": 0, "marks": [], "before": None, "after": None,
          "start": None, "end": None, "result": None, "timeout": False}
    err_tail = []

    def read_err():
        for line in proc.stderr:
            err_tail.append(line.rstrip())
            del err_tail[:-40]

    def sample():
        while proc.poll() is None:
            kb = status_kb(pid, "VmRSS")
            if kb and st["phase"] == "run":
                st["peak"] = max(st["peak"], kb)
            time.sleep(0.1)

    def watchdog():
        try:
            proc.wait(v["timeout"])
        except subprocess.TimeoutExpired:
            st["timeout"] = True
            os.killpg(pid, signal.SIGKILL)
    for fn in (read_err, sample, watchdog):
        threading.Thread(target=fn, daemon=True).start()

    def flag(fname):
        open(os.path.join(work, fname), "w").close()
    for line in proc.stdout:
        words = line.split(maxsplit=1)
        if not words:
            continue
        if words[0] == "READY":
            time.sleep(0.5)
            st["before"] = status_kb(pid, "VmRSS")
            st["phase"] = "run"
            flag("go")
        elif words[0] == "START":
            st["start"] = float(words[1])
        elif words[0] == "MARK":
            st["marks"].append(f"{words[1].strip()} {mb(status_kb(pid, 'VmRSS'))}")
        elif words[0] == "END":
            st["end"] = float(words[1])
            st["peak"] = max(st["peak"], status_kb(pid, "VmHWM") or 0)
            st["phase"] = "settle"
            before, peak = st["before"] or 0, st["peak"]
            near = before + NEAR_KB
            t0 = time.monotonic()
            while time.monotonic() - t0 < SETTLE_S:
                kb = status_kb(pid, "VmRSS")
                if kb is None or kb <= near:
                    break
                time.sleep(0.5)
            st["after"] = status_kb(pid, "VmRSS")
            st["settle_s"] = time.monotonic() - t0
            flag("settled")
        elif words[0] == "RESULT":
            st["result"] = json.loads(words[1])
    proc.wait()
    if host_res is not None:
        host_res.close()
    samples = []
    try:
        with open(os.path.join(work, "probe.json")) as f:
            samples = json.load(f)
    except (OSError, ValueError):
        pass
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    lo, hi = st["start"] or 0, st["end"] or float("inf")
    win = [s for s in samples if lo <= s[0] <= hi]
    row = {"vector": name, "doc": v["doc"], "budget": v["budget"],
           "before": st["before"], "peak": st["peak"] or None, "after": st["after"],
           "probes": len(win),
           "worst_dns": max((s[1] for s in win if s[1] is not None), default=None),
           "worst_http": max((s[2] for s in win if s[2] is not None), default=None),
           "slow": sum(1 for s in win if (s[1] or 0) > 100 or (s[2] or 0) > 100),
           "probe_failed": sum(1 for s in win if s[3]),
           "probe_errors": sorted({s[3] for s in win if s[3]})[:2],
           "marks": st["marks"], "settle_s": st.get("settle_s"), "exit": proc.returncode}
    res = st["result"]
    if res is None:
        why = "timed out" if st["timeout"] else f"exit {proc.returncode}"
        res = {"errors": 1, "samples": [[why + ": " + " | ".join(err_tail[-3:]), 1]],
               "notes": "no result"}
    row.update(vector_errors=res["errors"], samples=res["samples"], notes=res["notes"])
    return row


def fmt_ms(x):
    return "-" if x is None else f"{x:.0f}"


def print_table(rows, args, started, about, load):
    print(f"\nstressbench {'--quick ' if args.quick else ''}{started:%Y-%m-%d %H:%M}, "
          f"{os.cpu_count()} cores, load average at start {load:.2f}; {about}\n")
    print("| vector | RSS before | peak | after (MB) | probe worst DNS ms | probe worst HTTP ms "
          "| failures | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        notes = [r["notes"]]
        if r["budget"]:
            notes.append(f"--memory-budget {r['budget']}")
        if r["marks"]:
            notes.append("RSS at " + ", ".join(r["marks"]))
        if r["settle_s"] is not None and r["settle_s"] >= SETTLE_S:
            notes.append(f"not back within {NEAR_KB >> 10} MB of the start after {SETTLE_S} s")
        notes.append(f"{r['probes']} probes, {r['slow']} over 100 ms")
        if r["probe_failed"]:
            notes.append(f"probe failures: {r['probe_errors']}")
        if r["samples"]:
            notes.append("errors: " + "; ".join(f"{s} ×{k}" for s, k in r["samples"]))
        fails = r["probe_failed"] + r["vector_errors"]
        print(f"| {r['vector']} | {mb(r['before'])} | {mb(r['peak'])} | {mb(r['after'])} "
              f"| {fmt_ms(r['worst_dns'])} | {fmt_ms(r['worst_http'])} | {fails} "
              f"| {'; '.join(n for n in notes if n)} |")
    print()
    for r in rows:
        print(f"- `{r['vector']}`: {r['doc']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes divided by 10 (a smoke run)")
    ap.add_argument("--only", help="comma-separated vector names (see --list)")
    ap.add_argument("--list", action="store_true", help="list the vectors and exit")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--keep", action="store_true", help="keep each vector's work folder in /tmp")
    args = ap.parse_args()
    if args.list:
        for k, v in V.items():
            print(f"{k:22} {v['doc']}")
        return
    names = list(V)
    if args.only:
        names = [n.strip() for n in args.only.split(",")]
        bad = [n for n in names if n not in V]
        if bad:
            sys.exit(f"unknown vector(s) {bad}; --list shows them")
    if not os.access(MESHWRAP, os.X_OK):
        sys.exit(f"no meshwrap at {MESHWRAP} (cargo build --release, or set MESHWRAP)")
    started, load = datetime.datetime.now(), os.getloadavg()[0]
    binary, about = snapshot_binary()
    print(about, file=sys.stderr, flush=True)
    rows = []
    for name in names:
        t0 = time.monotonic()
        row = run_vector(name, 0.1 if args.quick else 1.0, args.keep, binary)
        rows.append(row)
        print(f"{name}: {time.monotonic() - t0:.0f} s, RSS {mb(row['before'])}/{mb(row['peak'])}/"
              f"{mb(row['after'])} MB, probe {fmt_ms(row['worst_dns'])}/{fmt_ms(row['worst_http'])} ms, "
              f"{row['probe_failed']}+{row['vector_errors']} failures; {row['notes']}",
              file=sys.stderr, flush=True)
    shutil.rmtree(os.path.dirname(binary), ignore_errors=True)
    print_table(rows, args, started, about, load)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
