"""Integration tests for meshwrap's Redis responder (`services[].redis`).

Real clients run inside the jail against services mocked from the YAML
files in tests/redis_rules/: redis-cli (Debian redis-tools), Python's
`redis` package (RESP2 and RESP3, pipelines, pub/sub, WATCH/MULTI,
blocking pops), Node's `ioredis` (tests/node, installed by .ci/run) and raw
sockets for malformed RESP. Every name is under .test; nothing leaves the
jail.
"""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON

HERE = Path(__file__).resolve().parent
RULES = HERE / "redis_rules"
NODE_DIR = HERE / "node"

HAVE_REDIS_PY = subprocess.run([PYTHON, "-c", "import redis"], capture_output=True).returncode == 0
HAVE_CLI = shutil.which("redis-cli") is not None
HAVE_IOREDIS = shutil.which("node") is not None and (NODE_DIR / "node_modules" / "ioredis").is_dir()

need_py = pytest.mark.skipif(not HAVE_REDIS_PY, reason="python `redis` package not installed")
need_cli = pytest.mark.skipif(not HAVE_CLI, reason="redis-cli not installed (Debian redis-tools)")


def rules(name):
    return str(RULES / name)


def ok(res, code=0):
    assert res.returncode == code, (
        f"expected exit code {code}, got {res.returncode}\n{res.describe()}")
    return res


def redis_events(res, **match):
    return [e for e in res.events if e.get("kind") == "redis"
            and all(e.get(k) == v for k, v in match.items())]


def pyrun(jail, rules_file, code, **kw):
    """Runs a python script in the jail; it prints one JSON line last."""
    script = jail.write("script.py", "import json, sys, time, threading\nimport redis\n" + code)
    return jail.run([PYTHON, script], rules=rules_file, **kw)


def cli(jail, rules_file, lines, host="redis.test", extra=(), **kw):
    """Runs redis-cli once per line of `lines` in one jail; returns the
    result and each line's output."""
    script = "\n".join(
        f"redis-cli -h {host} {' '.join(extra)} {line}; echo '<<END>>'" for line in lines)
    path = jail.write("cli.sh", script + "\n")
    res = jail.run(["sh", path], rules=rules_file, **kw)
    outs = [o.strip("\n") for o in res.stdout.split("<<END>>")][: len(lines)]
    return res, outs


# --------------------------------------------------------------------------
# redis-cli


@need_cli
def test_redis_cli_sees_seed_and_gets_exact_errors(jail):
    res, out = cli(jail, rules("basic.yaml"), [
        "PING",
        "GET greeting",
        "GET config:max_retries",
        "HGET user:1 name",
        "LRANGE queue 0 -1",
        "ZSCORE board bob",
        "TYPE typed",
        "GET",
        "FOO bar baz",
        "LPUSH greeting x",
        "INCR greeting",
        "SELECT 16",
        "-n 1 GET only_in_db1",
        "GET only_in_db1",
        "TTL session:seeded",
        "DBSIZE",
    ])
    ok(res)
    assert out[0] == "PONG"
    assert out[1] == "hello"
    assert out[2] == "3"
    assert out[3] == "alice"
    assert out[4].split() == ["a", "b", "c"]
    assert out[5] == "20.5"
    assert out[6] == "set"
    assert out[7] == "ERR wrong number of arguments for 'get' command"
    assert out[8] == "ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' "
    assert out[9] == "WRONGTYPE Operation against a key holding the wrong kind of value"
    assert out[10] == "ERR value is not an integer or out of range"
    assert out[11] == "ERR DB index is out of range"
    assert out[12] == "yes"
    assert out[13] == ""
    assert 3500 < int(out[14]) <= 3600
    assert out[15] == "8"
    # Every command is an event, errors included; the unknown one too.
    unknown = redis_events(res, command="FOO")
    assert unknown and unknown[0]["error"].startswith("ERR unknown command"), res.describe()
    get = redis_events(res, command="GET", key="greeting")[0]
    assert get["service"] == "cache" and get["reply"] == "bulk" and get["db"] == 0
    assert isinstance(get["latency_ms"], (int, float))
    assert "Redis commands per service:" in res.stderr
    assert "cache:" in res.stderr


@need_cli
def test_redis_cli_inline_and_pipe_mode(jail):
    script = jail.write("inline.sh", (
        "printf 'SET a 1\\r\\nINCRBY a 41\\r\\nGET a\\r\\nECHO \"x y\"\\r\\n' | redis-cli -h redis.test\n"
        "printf 'PING\\r\\nQUIT\\r\\n' | python3 -c 'import socket,sys;"
        "s=socket.create_connection((\"redis.test\",6379));s.sendall(sys.stdin.buffer.read());"
        "d=b\"\"\n"
        "while True:\n"
        "  c=s.recv(100)\n"
        "  if not c: break\n"
        "  d+=c\n"
        "print(repr(d))'\n"))
    res = ok(jail.run(["sh", script], rules=rules("basic.yaml")))
    lines = res.stdout.split("\n")
    assert lines[:4] == ["OK", "42", "42", "x y"], res.describe()
    assert "b'+PONG\\r\\n+OK\\r\\n'" in res.stdout


# --------------------------------------------------------------------------
# python redis: data types, RESP2 and RESP3

DATA_TYPES = r'''
proto = int(sys.argv[1]) if len(sys.argv) > 1 else 2
r = redis.Redis(host="redis.test", port=6379, decode_responses=True, protocol=proto)
out = {}
out["hello"] = r.get("greeting")
out["set_nx"] = [r.set("s", "1", nx=True), r.set("s", "2", nx=True), r.set("s", "3", xx=True, get=True)]
out["set_px"] = r.set("tmp", "v", px=150)  # expires during the sleep below
# A TTL long enough that no pause of the machine can run it out before
# PTTL reads it: what is checked is that PX set milliseconds (not seconds),
# that the key still has a TTL, and that it never grew.
r.set("ttl", "v", px=100000)
out["pttl"] = r.pttl("ttl")
out["incr"] = [r.incr("n"), r.incrby("n", 10), r.decr("n"), r.decrby("n", 5), r.incrbyfloat("n", 0.5)]
out["append"] = [r.append("ap", "ab"), r.append("ap", "cd"), r.strlen("ap"), r.getrange("ap", 1, 2)]
out["setrange"] = [r.setrange("ap", 1, "ZZ"), r.get("ap")]
out["mset"] = [r.mset({"m1": "a", "m2": "b"}), r.mget("m1", "m2", "nope")]
out["getdel"] = [r.getdel("m1"), r.exists("m1")]
out["getex"] = [r.getex("m2", ex=100), r.ttl("m2"), r.pttl("m2")]
out["setex"] = [r.setex("se", 50, "v"), r.ttl("se"), r.pttl("se"), r.persist("se"), r.ttl("se")]
out["hash"] = [r.hset("h", mapping={"a": "1", "b": "2"}), r.hget("h", "a"), r.hmget("h", "a", "zz"),
               r.hgetall("h"), r.hincrby("h", "a", 5), r.hincrbyfloat("h", "b", 1.5),
               r.hexists("h", "a"), r.hdel("h", "a"), r.hkeys("h"), r.hvals("h"), r.hlen("h"),
               r.hsetnx("h", "b", "x"), r.hsetnx("h", "c", "x")]
out["hscan"] = sorted(r.hscan_iter("user:1"))
out["list"] = [r.rpush("l", "a", "b", "c", "b"), r.lpush("l", "z"), r.lrange("l", 0, -1), r.llen("l"),
               r.lindex("l", -1), r.lset("l", 0, "Z"), r.lrem("l", 0, "b"), r.lrange("l", 0, -1),
               r.linsert("l", "BEFORE", "c", "x"), r.lpos("l", "c"), r.lpop("l"), r.rpop("l", 2),
               r.lmove("queue", "l", "LEFT", "RIGHT"), r.lrange("l", 0, -1), r.ltrim("l", 0, 0),
               r.lrange("l", 0, -1)]
out["set"] = [r.sadd("st", "a", "b", "c"), sorted(r.smembers("st")), r.sismember("st", "a"),
              r.smismember("st", ["a", "q"]), r.scard("st"), r.srem("st", "a"),
              sorted(r.sinter("st", "tags")), sorted(r.sunion("st", "tags")), sorted(r.sdiff("st", "tags")),
              r.sunionstore("su", ["st", "tags"]), r.srandmember("su") in {"b", "c", "x", "y"},
              r.spop("su") in {"b", "c", "x", "y"}, r.scard("su")]
out["sscan"] = sorted(r.sscan_iter("tags"))
out["zset"] = [r.zadd("z", {"a": 1, "b": 2, "c": 3}), r.zadd("z", {"a": 5}, nx=True),
               r.zadd("z", {"a": 0.5}, xx=True, ch=True), r.zadd("z", {"b": 1}, gt=True, ch=True),
               r.zadd("z", {"d": 2}, incr=True), r.zrange("z", 0, -1),
               r.zrange("z", 0, -1, withscores=True), r.zrank("z", "c"), r.zrevrank("z", "c"),
               r.zscore("z", "d"), r.zincrby("z", 2, "a"), r.zcount("z", 1, 3), r.zcard("z"),
               r.zrangebyscore("z", "(2", "+inf"), r.zrange("z", 0, 1, desc=True),
               r.zrange("z", "-inf", 2.5, byscore=True, offset=0, num=1),
               r.zrem("z", "a"), r.zpopmin("z"), r.zpopmax("z", 1), r.zcard("z")]
out["keys"] = [r.type("h"), r.type("l"), r.type("nope"), r.rename("h", "h2"), r.exists("h", "h2"),
               r.expire("h2", 100), 0 < r.ttl("h2") <= 100, r.ttl("nope"), r.ttl("greeting"),
               sorted(r.keys("user:*")), sorted(r.scan_iter(match="m*")), sorted(r.scan_iter(_type="zset"))]
errs = {}
for name, f in [("wrongtype", lambda: r.lpush("greeting", "x")),
                ("notint", lambda: r.incr("greeting")),
                ("notfloat", lambda: r.zadd("z", {"a": "x"})),
                ("nokey", lambda: r.rename("missing", "x")),
                ("syntax", lambda: r.execute_command("SET", "a", "b", "BOGUS")),
                ("arity", lambda: r.execute_command("HGET", "a")),
                ("unknown", lambda: r.execute_command("NOPE", "a", "b"))]:
    try:
        f()
        errs[name] = None
    except redis.ResponseError as e:
        errs[name] = str(e)
out["errs"] = errs
time.sleep(0.3)
out["expired"] = [r.get("tmp"), r.exists("tmp")]
out["info"] = r.info("server")["redis_version"]
out["dbsize"] = r.dbsize()
r.select(3)
out["db3"] = [r.set("x", "1"), r.dbsize()]
print(json.dumps(out))
'''


@need_py
@pytest.mark.parametrize("proto", [2, 3])
def test_python_client_data_types(jail, proto):
    script = jail.write("dt.py", "import json, sys, time\nimport redis\n" + DATA_TYPES)
    res = ok(jail.run([PYTHON, script, proto], rules=rules("basic.yaml")))
    out = res.json_out()
    assert out["hello"] == "hello"
    assert out["set_nx"] == [True, None, "1"]
    assert 0 < out["pttl"] <= 100000, out["pttl"]
    assert out["incr"] == [1, 11, 10, 5, 5.5]
    assert out["append"] == [2, 4, 4, "bc"]
    assert out["setrange"] == [4, "aZZd"]
    assert out["mset"] == [True, ["a", "b", None]]
    assert out["getdel"] == ["a", 0]
    # TTLs count down from what was set, in seconds (PTTL in milliseconds
    # above a second's worth proves EX was not taken as milliseconds).
    getex_val, getex_ttl, getex_pttl = out["getex"]
    assert getex_val == "b" and 0 < getex_ttl <= 100 and 1000 < getex_pttl <= 100000, out["getex"]
    setex_ok, setex_ttl, setex_pttl, persisted, after_persist = out["setex"]
    assert setex_ok is True and 0 < setex_ttl <= 50 and 1000 < setex_pttl <= 50000, out["setex"]
    assert [persisted, after_persist] == [True, -1], out["setex"]
    h = out["hash"]
    assert h[:4] == [2, "1", ["1", None], {"a": "1", "b": "2"}]
    assert h[4:] == [6, 3.5, True, 1, ["b"], ["3.5"], 1, 0, 1]
    assert out["hscan"] == [["age", "30"], ["name", "alice"]]
    lst = out["list"]
    assert lst[0:3] == [4, 5, ["z", "a", "b", "c", "b"]]
    assert lst[3:8] == [5, "b", True, 2, ["Z", "a", "c"]]
    assert lst[8:12] == [4, 3, "Z", ["c", "x"]]
    assert lst[12:] == ["a", ["a", "a"], True, ["a"]]
    st = out["set"]
    assert st[:6] == [3, ["a", "b", "c"], True, [True, False], 3, 1]
    assert st[6:10] == [[], ["b", "c", "x", "y"], ["b", "c"], 4]
    assert st[10:] == [True, True, 3]
    assert out["sscan"] == ["x", "y"]
    z = out["zset"]
    assert z[:5] == [3, 0, 1, 0, 2.0]
    assert z[5] == ["a", "b", "d", "c"]
    assert z[6] == [["a", 0.5], ["b", 2.0], ["d", 2.0], ["c", 3.0]]
    assert z[7:13] == [3, 0, 2.0, 2.5, 4, 4]
    assert z[13] == ["a", "c"]
    assert z[14] == ["c", "a"]
    assert z[15] == ["b"]
    # ZPOPMIN without a count: redis-py pairs it up in RESP2; RESP3 gives
    # Redis's flat [member, score] as is.
    assert z[16:] == [1, [["b", 2.0]] if proto == 2 else ["b", 2.0], [["c", 3.0]], 1]
    k = out["keys"]
    assert k[:5] == ["hash", "list", "none", True, 1]
    assert k[5:] == [True, True, -2, -1, ["user:1"], ["m2"], ["board", "z"]]
    e = out["errs"]
    assert e["wrongtype"] == "WRONGTYPE Operation against a key holding the wrong kind of value"
    assert e["notint"] == "value is not an integer or out of range"
    assert e["notfloat"] == "value is not a valid float"
    assert e["nokey"] == "no such key"
    assert e["syntax"] == "syntax error"
    assert e["arity"] == "wrong number of arguments for 'hget' command"
    assert e["unknown"].startswith("unknown command 'NOPE', with args beginning with: 'a' 'b'")
    assert out["expired"] == [None, 0]
    assert out["info"].startswith("7.")
    assert out["db3"] == [True, 1]
    hello = [e for e in res.events if e.get("kind") == "redis" and e["command"] == "HELLO"]
    assert bool(hello) == (proto == 3), res.describe()


@need_py
def test_state_is_shared_by_connections_and_kept_for_the_run(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), r'''
a = redis.Redis(host="redis.test", decode_responses=True)
b = redis.Redis(host="redis.test", decode_responses=True, protocol=3)
a.set("shared", "1")
b.incr("shared")
a.connection_pool.disconnect()
c = redis.Redis(host="redis.test", decode_responses=True)
pipe = c.pipeline(transaction=False)
for i in range(500):
    pipe.incr("counter")
results = pipe.execute()
print(json.dumps({"shared": c.get("shared"), "last": results[-1], "n": len(results)}))
'''))
    out = res.json_out()
    assert out == {"shared": "2", "last": 500, "n": 500}


@need_py
def test_transactions_and_watch(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), r'''
r = redis.Redis(host="redis.test", decode_responses=True)
other = redis.Redis(host="redis.test", decode_responses=True)
out = {}
p = r.pipeline()
p.set("t", "1").incr("t").get("t")
out["multi"] = p.execute()
# WATCH: a change by another client aborts EXEC.
with r.pipeline() as p:
    p.watch("w")
    other.set("w", "changed")
    p.multi()
    p.set("w", "mine")
    try:
        p.execute()
        out["watch"] = "executed"
    except redis.WatchError:
        out["watch"] = "aborted"
out["w"] = r.get("w")
# Unchanged watched key: EXEC runs.
with r.pipeline() as p:
    p.watch("w")
    p.multi()
    p.set("w", "mine")
    out["watch_ok"] = p.execute()
# A queued error aborts the whole transaction.
conn = r.connection_pool.get_connection("MULTI")
conn.send_command("MULTI"); out["m"] = conn.read_response()
conn.send_command("SET", "q", "1"); out["q1"] = conn.read_response()
conn.send_command("NOSUCH"); 
try:
    conn.read_response()
except redis.ResponseError as e:
    out["queued_err"] = str(e)
conn.send_command("EXEC")
try:
    conn.read_response()
except redis.ResponseError as e:
    out["execabort"] = str(e)
conn.send_command("EXEC")
try:
    conn.read_response()
except redis.ResponseError as e:
    out["nomulti"] = str(e)
out["q"] = r.get("q")
print(json.dumps(out))
'''))
    out = res.json_out()
    assert out["multi"] == [True, 2, "2"]
    assert out["watch"] == "aborted"
    assert out["w"] == "changed"
    assert out["watch_ok"] == [True]
    assert out["q1"] in ("QUEUED", b"QUEUED")
    assert out["queued_err"].startswith("unknown command 'NOSUCH'")
    assert out["execabort"] == "Transaction discarded because of previous errors."
    assert out["nomulti"] == "EXEC without MULTI"
    assert out["q"] is None


@need_py
@pytest.mark.parametrize("proto", [2, 3])
def test_pubsub(jail, proto):
    res = ok(pyrun(jail, rules("basic.yaml"), f"PROTO = {proto}\n" + r'''
r = redis.Redis(host="redis.test", decode_responses=True, protocol=PROTO)
ps = r.pubsub()
ps.subscribe("news")
ps.psubscribe("ev.*")
got = []
deadline = time.time() + 5
while len(got) < 2 and time.time() < deadline:
    m = ps.get_message(timeout=0.2)
    if m:
        got.append(m["type"])
pub = redis.Redis(host="redis.test", decode_responses=True)
n1 = pub.publish("news", "hello")
n2 = pub.publish("ev.login", "alice")
n3 = pub.publish("nobody", "x")
msgs = []
deadline = time.time() + 5
while len(msgs) < 2 and time.time() < deadline:
    m = ps.get_message(timeout=0.2)
    if m and m["type"] in ("message", "pmessage"):
        msgs.append([m["type"], m["channel"], m["data"], m.get("pattern")])
numsub = pub.pubsub_numsub("news")
ps.unsubscribe("news")
print(json.dumps({"confirm": got, "n": [n1, n2, n3], "msgs": msgs, "numsub": numsub}))
'''))
    out = res.json_out()
    assert out["confirm"] == ["subscribe", "psubscribe"]
    assert out["n"] == [1, 1, 0]
    assert out["msgs"] == [["message", "news", "hello", None], ["pmessage", "ev.login", "alice", "ev.*"]]
    assert out["numsub"] == [["news", 1]]


@need_py
def test_blocking_pop_is_woken_by_another_client(jail):
    """Each blocking command is seen blocked (INFO's blocked_clients, from
    another connection) before anything is pushed, so the answer can only
    come from the wake-up, or, with nothing pushed, from the timeout."""
    res = ok(pyrun(jail, rules("basic.yaml"), r'''
r = redis.Redis(host="redis.test", decode_responses=True)
pusher = redis.Redis(host="redis.test", decode_responses=True)
def blocked():
    return pusher.info("clients")["blocked_clients"]
def wait_blocked(seen, done):
    # Polls until the other connection is blocked; `done` ends the wait if
    # the blocking command came back without blocking (a bug: seen stays
    # empty and the test fails on it).
    while not done.is_set():
        n = blocked()
        if n:
            seen.append(n)
            return True
        time.sleep(0.01)
    return False
def push_when_blocked(seen, done, cmd, *args):
    if wait_blocked(seen, done):
        getattr(pusher, cmd)(*args)
def run(target):
    done, seen, result = threading.Event(), [], {}
    def call():
        try:
            result["v"] = target()
        finally:
            done.set()
    t = threading.Thread(target=call)
    t.start()
    return t, done, seen, result
# BLPOP on two keys, woken by a push on the second one.
t, done, seen_pop, got = run(lambda: r.blpop(["nothing", "jobs"], timeout=30))
push_when_blocked(seen_pop, done, "rpush", "jobs", "job1")
t.join()
# BRPOP on a key nobody pushes to: blocked, then its timeout answers nil.
t, done, seen_timeout, none = run(lambda: r.brpop("empty", timeout=2))
wait_blocked(seen_timeout, done)
t.join()
# BLMOVE woken by a push to its source.
t, done, seen_move, moved = run(lambda: r.blmove("src", "dst", 30, "RIGHT", "LEFT"))
push_when_blocked(seen_move, done, "lpush", "src", "m")
t.join()
print(json.dumps({"got": got.get("v"), "seen_pop": seen_pop,
                  "none": none.get("v", "no answer"), "seen_timeout": seen_timeout,
                  "moved": moved.get("v"), "seen_move": seen_move,
                  "dst": r.lrange("dst", 0, -1), "blocked": blocked()}))
'''))
    out = res.json_out()
    assert out["seen_pop"] == [1], out
    assert out["got"] == ["jobs", "job1"], out
    assert out["seen_timeout"] == [1], out
    assert out["none"] is None, out
    assert out["seen_move"] == [1], out
    assert out["moved"] == "m" and out["dst"] == ["m"], out
    assert out["blocked"] == 0, out


@need_py
def test_password_auth(jail):
    res = ok(pyrun(jail, rules("auth.yaml"), r'''
out = {}
anon = redis.Redis(host="secure.redis.test", decode_responses=True)
try:
    anon.get("k")
except redis.AuthenticationError as e:
    out["noauth"] = "auth:" + str(e)
except redis.ResponseError as e:
    out["noauth"] = str(e)
bad = redis.Redis(host="secure.redis.test", password="nope", decode_responses=True)
try:
    bad.get("k")
except redis.AuthenticationError as e:
    out["wrongpass"] = str(e)
good = redis.Redis(host="secure.redis.test", password="s3cret", decode_responses=True)
out["good"] = good.get("k")
good3 = redis.Redis(host="secure.redis.test", password="s3cret", decode_responses=True, protocol=3)
out["good3"] = good3.get("k")
print(json.dumps(out))
'''))
    out = res.json_out()
    # redis-py opens with HELLO or goes straight to GET: Redis's answer
    # differs (NOAUTH either way).
    assert ("Authentication required" in out["noauth"]
            or "HELLO must be called with the client already authenticated" in out["noauth"])
    assert "invalid username-password pair" in out["wrongpass"]
    assert out["good"] == "v" and out["good3"] == "v"


# faults.yaml with a latency long enough that the order checked below cannot
# be turned around by a pause of a loaded machine.
SLOW_FAULTS = (RULES / "faults.yaml").read_text().replace("latency: 300ms", "latency: 2s")


@need_py
def test_faults(jail):
    assert "latency: 2s" in SLOW_FAULTS
    res = ok(pyrun(jail, SLOW_FAULTS, r'''
r = redis.Redis(host="flaky.redis.test", decode_responses=True)
out = {}
for name, f in [("loading", lambda: r.get("loading:x")), ("readonly", lambda: r.set("a", "b"))]:
    try:
        f(); out[name] = None
    except redis.ResponseError as e:
        out[name] = type(e).__name__ + ":" + str(e)
    except redis.exceptions.BusyLoadingError as e:
        out[name] = "BusyLoadingError:" + str(e)
out["ok"] = r.get("ok")
# The latency fault: GET slow:1 is sent first on one connection, GET ok
# right after on another. The delayed answer must come after the other one,
# which it does not hold up.
import select, socket
def conn():
    s = socket.create_connection(("flaky.redis.test", 6379))
    s.sendall(b"PING\r\n")
    assert s.recv(100) == b"+PONG\r\n"
    return s
def reply(s):
    d = b""
    while d.count(b"\r\n") < 2:
        c = s.recv(100)
        if not c:
            break
        d += c
    return d.decode()
slow, fast = conn(), conn()
slow.sendall(b"*2\r\n$3\r\nGET\r\n$6\r\nslow:1\r\n")
fast.sendall(b"*2\r\n$3\r\nGET\r\n$2\r\nok\r\n")
order = [["fast", reply(fast)]]
# the slow answer must not be there yet when the fast one has come
order.append(["slow pending", not select.select([slow], [], [], 0)[0]])
order.append(["slow", reply(slow)])
out["order"] = order
try:
    r2 = redis.Redis(host="flaky.redis.test", decode_responses=True, retry_on_timeout=False)
    r2.hget("h", "f")
    out["reset"] = "answered"
except redis.ConnectionError as e:
    out["reset"] = "ConnectionError"
out["after"] = r.get("ok")
print(json.dumps(out))
'''))
    out = res.json_out()
    assert "Redis is loading the dataset in memory" in out["loading"]
    assert out["readonly"].endswith("You can't write against a read only replica.")
    assert out["ok"] == "fine"
    assert out["order"] == [["fast", "$4\r\nfine\r\n"], ["slow pending", True],
                            ["slow", "$1\r\nx\r\n"]], out["order"]
    assert out["reset"] == "ConnectionError"
    assert out["after"] == "fine"
    faults = {e.get("fault") for e in redis_events(res) if e.get("fault")}
    assert {"error", "latency", "reset"} <= faults, res.describe()


# --------------------------------------------------------------------------
# expectations


@need_cli
def test_expectations_met(jail):
    res, out = cli(jail, rules("expect.yaml"), [
        "SET session:1 a", "SET session:2 b", "SET other c", "GET session:1"],
        host="sessions.redis.test")
    ok(res)
    assert "meshwrap expectations: 3 of 3 met" in res.stderr, res.describe()


@need_cli
def test_expectations_failed_exit_1_with_the_calls(jail):
    res, out = cli(jail, rules("expect.yaml"), ["SET session:1 a", "FLUSHALL"],
                   host="sessions.redis.test")
    ok(res, 1)
    assert "FAIL sessions / SET key session:*: expected exactly 2 times, called 1 time" in res.stderr, res.describe()
    assert "FAIL sessions / FLUSHALL: expected never" in res.stderr
    assert "SET session:1 -> simple" in res.stderr


# --------------------------------------------------------------------------
# malformed RESP: the error reply, then that connection only closes

RAW = r'''
import json, socket, sys
def talk(payload, half_close=False):
    s = socket.create_connection(("redis.test", 6379), timeout=10)
    s.sendall(payload)
    if half_close:
        s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        try:
            c = s.recv(4096)
        except ConnectionResetError:
            data += b"<reset>"; break
        if not c:
            break
        data += c
    return data.decode("latin-1")
keep = socket.create_connection(("redis.test", 6379), timeout=10)
out = {
  "mbulk": talk(b"*abc\r\n$3\r\nGET\r\n"),
  "bulk_huge": talk(b"*2\r\n$3\r\nGET\r\n$600000000\r\n"),
  "bulk_neg": talk(b"*1\r\n$-5\r\n"),
  "dollar": talk(b"*1\r\n:3\r\n"),
  "quotes": talk(b'SET "a b\r\n'),
  "before": talk(b"PING\r\n*1\r\n$x\r\nPING\r\n"),
  # Not RESP at all: unknown-command errors (as Redis answers), until the
  # client is done; meshwrap is unharmed.
  "garbage": talk(bytes(range(256)) * 300, half_close=True),
  "too_long": talk(b"x" * (70 * 1024)),
}
keep.sendall(b"*1\r\n$4\r\nPING\r\n")
out["other_conn"] = keep.recv(100).decode()
print(json.dumps(out))
'''


def test_malformed_resp_gets_protocol_error_and_closes(jail):
    script = jail.write("raw.py", RAW)
    res = ok(jail.run([PYTHON, script], rules=rules("basic.yaml")))
    out = res.json_out()
    assert out["mbulk"] == "-ERR Protocol error: invalid multibulk length\r\n"
    assert out["bulk_huge"] == "-ERR Protocol error: invalid bulk length\r\n"
    assert out["bulk_neg"] == "-ERR Protocol error: invalid bulk length\r\n"
    assert out["dollar"] == "-ERR Protocol error: expected '$', got ':'\r\n"
    assert out["quotes"] == "-ERR Protocol error: unbalanced quotes in request\r\n"
    assert out["before"] == "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    assert out["garbage"].startswith("-ERR ")
    assert out["too_long"] == "-ERR Protocol error: too big inline request\r\n"
    assert out["other_conn"] == "+PONG\r\n"
    protocol = redis_events(res, command="(PROTOCOL)")
    assert len(protocol) >= 6, res.describe()


# --------------------------------------------------------------------------
# Node ioredis


@pytest.mark.skipif(not HAVE_IOREDIS, reason="node or tests/node/node_modules/ioredis missing")
def test_ioredis_by_hostname(jail):
    script = jail.write("io.js", r'''
const Redis = require(process.argv[2]);
(async () => {
  const r = new Redis({ host: "redis.test", port: 6379, maxRetriesPerRequest: 1 });
  const out = {};
  out.greeting = await r.get("greeting");
  out.set = await r.set("io", "1", "EX", 100);
  out.incr = await r.incr("io");
  out.hgetall = await r.hgetall("user:1");
  out.pipeline = (await r.pipeline().rpush("iol", "a", "b").lrange("iol", 0, -1).exec()).map(x => x[1]);
  out.multi = await r.multi().set("m", "v").get("m").exec();
  const sub = new Redis({ host: "redis.test", port: 6379 });
  await sub.subscribe("chan");
  const got = new Promise(res => sub.on("message", (c, m) => res([c, m])));
  await r.publish("chan", "hi");
  out.message = await got;
  try { await r.lpush("greeting", "x"); } catch (e) { out.err = e.message; }
  console.log(JSON.stringify(out));
  sub.disconnect(); r.disconnect();
})().catch(e => { console.error(e); process.exit(1); });
''')
    res = ok(jail.run(["node", script, str(NODE_DIR / "node_modules" / "ioredis")],
                      rules=rules("basic.yaml")))
    out = res.json_out()
    assert out["greeting"] == "hello"
    assert out["set"] == "OK" and out["incr"] == 2
    assert out["hgetall"] == {"name": "alice", "age": "30"}
    assert out["pipeline"] == [2, ["a", "b"]]
    assert out["multi"] == [[None, "OK"], [None, "v"]]
    assert out["message"] == ["chan", "hi"]
    assert out["err"].startswith("WRONGTYPE")
    # ioredis's ready check polls INFO.
    assert redis_events(res, command="INFO"), res.describe()


# --------------------------------------------------------------------------
# rules errors


@pytest.mark.parametrize("body,needle", [
    ("redis: { seed: { a: { hash: {x: 1}, list: [1] } } }", "one type"),
    ("redis: { seed_db: { 20: { a: b } } }", "only 16"),
    ("redis: { seed: { a: { value: x, ttl: 3 lightyears } } }", "unknown unit"),
    ("redis: { pasword: x }", "unknown field `pasword`"),
    ("redis: { faults: [ { error: x, latency: 1s } ] }", "does one thing"),
])
def test_bad_redis_rules_are_positioned_errors(jail, body, needle):
    text = f"services:\n  - name: c\n    match: {{ port: 6379 }}\n    {body}\n"
    res = jail.run(["true"], rules=text)
    assert res.returncode != 0, res.describe()
    assert needle in res.stderr, res.describe()
    assert re.search(r"\.yaml:\d+:\d+: services\[0\]\.redis", res.stderr), res.describe()
