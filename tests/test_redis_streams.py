"""Streams in the Redis responder (issue #16, slice b): XADD, XRANGE,
XREAD, consumer groups (XREADGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM),
XINFO, blocking reads woken by writes (from clients and from scripts),
and BZPOPMIN/BZPOPMAX. Driven by redis-py and a raw socket inside the
jail; expected texts are Redis 7.2's. Every name is under .test.
"""
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON
from test_redis_scripting import RAW, ok

HERE = Path(__file__).resolve().parent
RULES = str(HERE / "redis_rules" / "basic.yaml")

HAVE_REDIS_PY = subprocess.run([PYTHON, "-c", "import redis"], capture_output=True).returncode == 0
need_py = pytest.mark.skipif(not HAVE_REDIS_PY, reason="python `redis` package not installed")


def pyrun(jail, code, **kw):
    script = jail.write("script.py", "import json, sys, time, threading\nimport redis\n" + RAW + code)
    return jail.run([PYTHON, script], rules=RULES, **kw)


@need_py
def test_stream_entries_ranges_trimming_and_errors(jail):
    res = ok(pyrun(jail, r'''
r = Raw()
out = {}
out["add"] = [r("XADD", "s", "1-1", "a", "1"), r("XADD", "s", "1-*", "b", "2"), r("XADD", "s", "5", "c", "3")]
out["auto"] = r("XADD", "s", "*", "d", "4")
out["smaller"] = r("XADD", "s", "1-1", "x", "y")
out["zero"] = r("XADD", "t", "0-0", "x", "y")
out["zero_star"] = r("XADD", "t", "0-*", "x", "y")
out["bad_id"] = r("XADD", "s", "abc", "x", "y")
out["odd"] = r("XADD", "s", "*", "x")
out["nomk"] = r("XADD", "missing", "NOMKSTREAM", "*", "x", "y")
out["len"] = r("XLEN", "s")
out["range"] = r("XRANGE", "s", "-", "+", "COUNT", "2")
out["exclusive"] = r("XRANGE", "s", "(1-1", "5")
out["rev"] = r("XREVRANGE", "s", "5", "-")
out["del"] = r("XDEL", "s", "1-2", "9-9")
out["read"] = r("XREAD", "COUNT", "1", "STREAMS", "s", "t", "0", "0")
out["read_none"] = r("XREAD", "STREAMS", "s", "$")
out["unbalanced"] = r("XREAD", "STREAMS", "s", "t", "0")
out["gt"] = r("XREAD", "STREAMS", "s", ">")
for i in range(10):
    r("XADD", "big", "*", "n", str(i))
out["trim"] = r("XTRIM", "big", "MAXLEN", "~", "4")
out["trim_len"] = r("XLEN", "big")
out["maxlen_add"] = r("XADD", "big", "MAXLEN", "2", "*", "n", "x") is not None and r("XLEN", "big")
out["limit_exact"] = r("XTRIM", "big", "MAXLEN", "=", "1", "LIMIT", "5")
out["wrongtype"] = r("XADD", "greeting", "*", "a", "b")
out["type"] = r("TYPE", "s")
info = r("XINFO", "STREAM", "s")
out["info"] = dict(zip(info[0::2], info[1::2]))
out["setid_small"] = r("XSETID", "s", "1-1")
out["setid"] = r("XSETID", "s", "9999999999999-0")
out["after_setid"] = r("XADD", "s", "9999999999998-0", "x", "y")
print(json.dumps(out))
'''))
    out = res.json_out()
    assert out["add"] == ["1-1", "1-2", "5-0"]
    assert int(out["auto"].split("-")[0]) > 5
    assert out["smaller"] == "-ERR The ID specified in XADD is equal or smaller than the target stream top item"
    assert out["zero"] == "-ERR The ID specified in XADD must be greater than 0-0"
    assert out["zero_star"] == "0-1"
    assert out["bad_id"] == "-ERR Invalid stream ID specified as stream command argument"
    assert out["odd"] == "-ERR wrong number of arguments for 'xadd' command"
    assert out["nomk"] is None
    assert out["len"] == 4
    assert out["range"] == [["1-1", ["a", "1"]], ["1-2", ["b", "2"]]]
    assert out["exclusive"] == [["1-2", ["b", "2"]], ["5-0", ["c", "3"]]]
    assert out["rev"] == [["5-0", ["c", "3"]], ["1-2", ["b", "2"]], ["1-1", ["a", "1"]]]
    assert out["del"] == 1
    assert out["read"] == [["s", [["1-1", ["a", "1"]]]], ["t", [["0-1", ["x", "y"]]]]]
    assert out["read_none"] is None
    assert out["unbalanced"] == ("-ERR Unbalanced 'xread' list of streams: for each stream key an ID "
                                 "or '$' must be specified.")
    assert out["gt"].startswith("-ERR The > ID can be specified only when calling XREADGROUP")
    assert out["trim"] == 6 and out["trim_len"] == 4
    assert out["maxlen_add"] == 2
    assert out["limit_exact"] == "-ERR syntax error, LIMIT cannot be used without the special ~ option"
    assert out["wrongtype"] == "-WRONGTYPE Operation against a key holding the wrong kind of value"
    assert out["type"] == "+stream"
    info = out["info"]
    assert info["length"] == 3 and info["entries-added"] == 4 and info["groups"] == 0
    assert info["max-deleted-entry-id"] == "1-2" and info["first-entry"] == ["1-1", ["a", "1"]]
    assert out["setid_small"] == "-ERR The ID specified in XSETID is smaller than the target stream top item"
    assert out["setid"] == "+OK"
    assert out["after_setid"] == "-ERR The ID specified in XADD is equal or smaller than the target stream top item"


@need_py
def test_consumer_group_two_consumers_and_xautoclaim_recovers_a_crashed_one(jail):
    res = ok(pyrun(jail, r'''
r = redis.Redis(host="redis.test", decode_responses=True)
out = {}
out["create"] = r.xgroup_create("orders", "workers", id="0", mkstream=True)
try:
    r.xgroup_create("orders", "workers", id="0")
except redis.ResponseError as e:
    out["busygroup"] = str(e)
for i in range(10):
    r.xadd("orders", {"order": str(i)})
# alice takes five and "crashes" (never acks); bob takes five and acks them.
alice = r.xreadgroup("workers", "alice", {"orders": ">"}, count=5)
bob = r.xreadgroup("workers", "bob", {"orders": ">"}, count=5)
out["alice_got"] = [f["order"] for _, f in alice[0][1]]
out["bob_got"] = [f["order"] for _, f in bob[0][1]]
out["bob_acked"] = r.xack("orders", "workers", *[i for i, _ in bob[0][1]])
out["nothing_new"] = r.xreadgroup("workers", "bob", {"orders": ">"}, count=5)
summary = r.xpending("orders", "workers")
out["pending"] = [summary["pending"], summary["consumers"]]
out["alice_history"] = [f["order"] for _, f in r.xreadgroup("workers", "alice", {"orders": "0"})[0][1]]
time.sleep(0.2)
# bob recovers what alice held for more than 100 ms.
cursor, claimed, deleted = r.xautoclaim("orders", "workers", "bob", min_idle_time=100, start_id="0-0", count=10)
out["claimed"] = [f["order"] for _, f in claimed]
out["cursor"] = cursor
out["deleted"] = deleted
detail = r.xpending_range("orders", "workers", min="-", max="+", count=10)
out["owners"] = sorted({d["consumer"] for d in detail})
out["deliveries"] = sorted({d["times_delivered"] for d in detail})
out["acked"] = r.xack("orders", "workers", *[i for i, _ in claimed])
out["pending_after"] = r.xpending("orders", "workers")["pending"]
consumers = {c["name"]: c["pending"] for c in r.xinfo_consumers("orders", "workers")}
out["consumers"] = consumers
groups = r.xinfo_groups("orders")
out["group"] = [groups[0]["name"], groups[0]["pending"], groups[0]["entries-read"], groups[0]["lag"]]
# XCLAIM of an entry deleted from the stream drops it from the PEL.
r.xadd("orders", {"order": "late"}, id="*")
late = r.xreadgroup("workers", "carol", {"orders": ">"})[0][1][0][0]
r.xdel("orders", late)
out["claim_deleted"] = r.xclaim("orders", "workers", "bob", 0, [late])
out["pending_final"] = r.xpending("orders", "workers")["pending"]
out["delconsumer"] = r.xgroup_delconsumer("orders", "workers", "alice")
out["destroy"] = r.xgroup_destroy("orders", "workers")
try:
    r.xreadgroup("workers", "bob", {"orders": ">"})
except redis.ResponseError as e:
    out["nogroup"] = str(e)
print(json.dumps(out))
'''))
    out = res.json_out()
    assert out["create"] is True
    assert out["busygroup"] == "BUSYGROUP Consumer Group name already exists"
    assert out["alice_got"] == ["0", "1", "2", "3", "4"]
    assert out["bob_got"] == ["5", "6", "7", "8", "9"]
    assert out["bob_acked"] == 5 and out["nothing_new"] == []
    assert out["pending"] == [5, [{"name": "alice", "pending": 5}]]
    assert out["alice_history"] == ["0", "1", "2", "3", "4"]
    assert out["claimed"] == ["0", "1", "2", "3", "4"]
    assert out["cursor"] == "0-0" and out["deleted"] == []
    assert out["owners"] == ["bob"]
    assert out["deliveries"] == [3]  # read, read again as history, claimed
    assert out["acked"] == 5 and out["pending_after"] == 0
    assert out["consumers"] == {"alice": 0, "bob": 0}
    assert out["group"] == ["workers", 0, 10, 0]
    assert out["claim_deleted"] == [] and out["pending_final"] == 0
    assert out["delconsumer"] == 0 and out["destroy"] is True
    assert out["nogroup"] == ("NOGROUP No such key 'orders' or consumer group 'workers' in XREADGROUP "
                              "with GROUP option")


@need_py
def test_blocking_reads_and_pops_are_woken_by_writes(jail):
    res = ok(pyrun(jail, r'''
r = redis.Redis(host="redis.test", decode_responses=True)
w = redis.Redis(host="redis.test", decode_responses=True)
out = {}
def later(fn, delay=0.3):
    t = threading.Timer(delay, fn)
    t.start()
    return t
r.xadd("events", {"n": "old"})
later(lambda: w.xadd("events", {"n": "new"}))
got = r.xread({"events": "$"}, block=0)
out["xread"] = [f["n"] for _, f in got[0][1]]
out["xread_timeout"] = r.xread({"events": "$"}, block=100)
r.xgroup_create("jobs", "g", id="$", mkstream=True)
later(lambda: w.xadd("jobs", {"job": "1"}))
got = r.xreadgroup("g", "c1", {"jobs": ">"}, block=5000)
out["xreadgroup"] = [f["job"] for _, f in got[0][1]]
# A write from inside a script wakes the reader too (BullMQ's pattern).
later(lambda: w.eval("return redis.call('xadd', KEYS[1], '*', 'from', 'lua')", 1, "events"))
got = r.xread({"events": "$"}, block=5000)
out["from_script"] = [f["from"] for _, f in got[0][1]]
later(lambda: w.zadd("prio", {"low": 1, "high": 9}))
out["bzpopmin"] = r.bzpopmin("prio", timeout=5)
out["bzpopmax"] = r.bzpopmax(["empty", "prio"], timeout=5)
out["bzpop_timeout"] = r.bzpopmin("prio", timeout=0.1)
# In MULTI a blocking read answers at once.
raw = Raw()
raw("MULTI")
raw("XREAD", "BLOCK", "1000", "STREAMS", "events", "$")
out["in_multi"] = raw("EXEC")
print(json.dumps(out))
'''))
    out = res.json_out()
    assert out["xread"] == ["new"]
    assert out["xread_timeout"] == []
    assert out["xreadgroup"] == ["1"]
    assert out["from_script"] == ["lua"]
    assert out["bzpopmin"] == ["prio", "low", 1.0]
    assert out["bzpopmax"] == ["prio", "high", 9.0]
    assert out["bzpop_timeout"] is None
    assert out["in_multi"] == [None]
