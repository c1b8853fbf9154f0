"""The fault kit every protocol shares: `after` and `times` decide which
matching requests a fault fires for, the same way for HTTP, Redis, MongoDB
and Kafka; Kafka's faults also `hang`. Real clients (curl, redis-cli,
pymongo, kcat) inside the jail see the answers.
"""
import shlex
import shutil
import subprocess

import pytest

from conftest import CURL, PYTHON

HAVE_REDIS_CLI = shutil.which("redis-cli") is not None
HAVE_KCAT = shutil.which("kcat") is not None
HAVE_PYMONGO = subprocess.run([PYTHON, "-c", "import pymongo"], capture_output=True).returncode == 0


def exchanges(res, kind, **match):
    return [e for e in res.events if e.get("kind") == kind
            and all(e.get(k) == v for k, v in match.items())]


def test_http_fault_after_and_times(jail):
    rules = """
services:
  - name: api
    match: { host: api.kit.test }
    http:
      routes:
        - name: recovers
          when: { path: /recovers }
          fault: { status: 503, after: 1, times: 2 }
          respond: { json: { ok: true } }
"""
    curl = shlex.join(CURL)
    script = "; ".join(
        f"{curl} -o /dev/null -w '%{{http_code}}\\n' http://api.kit.test/recovers" for _ in range(5))
    res = jail.run(["sh", "-c", script], rules=rules)
    assert res.returncode == 0, res.describe()
    assert res.stdout.split() == ["200", "503", "503", "200", "200"], res.describe()
    faults = [e["fault"] for e in exchanges(res, "http", route="recovers")]
    assert faults == [None, "status", "status", None, None], res.describe()


@pytest.mark.skipif(not HAVE_REDIS_CLI, reason="redis-cli not installed (Debian redis-tools)")
def test_redis_fault_after_and_times(jail):
    rules = """
services:
  - name: cache
    match: { host: redis.kit.test, port: 6379 }
    redis:
      faults:
        - { commands: [INCR], error: "ERR injected failure", after: 2, times: 1 }
"""
    script = "; ".join("redis-cli -h redis.kit.test INCR n" for _ in range(5))
    res = jail.run(["sh", "-c", script], rules=rules)
    assert res.returncode == 0, res.describe()
    lines = res.stdout.split("\n")
    # The third INCR fails and changes nothing; the others count on
    # (redis-cli prints bare replies when its output is not a terminal).
    assert [l.strip() for l in lines if l.strip()] == [
        "1", "2", "ERR injected failure", "3", "4"], res.describe()
    ev = exchanges(res, "redis", command="INCR")
    assert [e["outcome"] for e in ev] == ["ok", "ok", "error", "ok", "ok"], res.describe()
    assert [e["fault"] for e in ev] == [None, None, "error", None, None], res.describe()


@pytest.mark.skipif(not HAVE_PYMONGO, reason="pymongo not installed")
def test_mongo_fault_times(jail):
    rules = """
services:
  - name: db
    match: { host: mongo.kit.test, port: 27017 }
    mongo:
      faults:
        - { commands: [insert], error: { code: 112, message: "WriteConflict" }, times: 2 }
"""
    code = r'''
import json
from pymongo import MongoClient
from pymongo.errors import OperationFailure
c = MongoClient("mongodb://mongo.kit.test:27017/", serverSelectionTimeoutMS=10000, retryWrites=False)
out = []
for i in range(4):
    try:
        c.app.items.insert_one({"i": i})
        out.append("ok")
    except OperationFailure as e:
        out.append(e.code)
out.append(c.app.items.count_documents({}))
print(json.dumps(out))
'''
    path = jail.write("mongo_kit.py", code)
    res = jail.run([PYTHON, path], rules=rules)
    assert res.returncode == 0, res.describe()
    assert res.json_out() == [112, 112, "ok", "ok", 2], res.describe()


@pytest.mark.skipif(not HAVE_KCAT, reason="kcat not installed")
def test_kafka_fault_hang(jail):
    rules = """
services:
  - name: bus
    match: { host: kafka.kit.test, port: 9092 }
    kafka:
      faults:
        - { api: metadata, hang: true, times: 1 }
"""
    # The first connection's Metadata request is never answered; kcat's
    # own timeout ends it, and a second listing (the fault used up) works.
    script = ("kcat -b kafka.kit.test:9092 -L -m 2 >/dev/null 2>&1; echo first=$?; "
              "kcat -b kafka.kit.test:9092 -L -m 10 >/dev/null 2>&1; echo second=$?")
    res = jail.run(["sh", "-c", script], rules=rules)
    assert res.returncode == 0, res.describe()
    assert "first=0" not in res.stdout and "second=0" in res.stdout, res.describe()
    hung = exchanges(res, "kafka", api="metadata", error_code=7)
    assert len(hung) == 1, res.describe()
