"""Idle, request and response timeouts (`timeouts:` of every protocol).

A connection that sends half a request, trickles a byte now and then
(slowloris), sits idle, or stops reading a reply is closed by the limit
the rules set, with the limit named on the flow's event; the appliance
keeps answering everyone else meanwhile. Without a limit written, each
protocol keeps the real server's behaviour (Redis never closes an idle
client; HTTP keeps a keep-alive connection for 75 s).
"""
import subprocess

import pytest

from conftest import PYTHON

HAVE_CK = subprocess.run([PYTHON, "-c", "import confluent_kafka"],
                         capture_output=True).returncode == 0
HAVE_REDIS_PY = subprocess.run([PYTHON, "-c", "import redis"],
                               capture_output=True).returncode == 0

RULES = """
services:
  - name: api
    match: { host: api.slow.test }
    http:
      timeouts: { idle: 1s, request: 1s, response: 1s }
      routes:
        - when: { path: /hello }
          respond: { body: hi }
        - when: { path: /big }
          respond: { file: big.txt }
  - name: api-default
    match: { host: api.default.test }
    http:
      routes:
        - when: { path: /hello }
          respond: { body: hi }
  - name: cache
    match: { host: redis.slow.test, port: 6379 }
    redis: { timeouts: { request: 1s } }
  - name: cache-idle
    match: { host: redis.idle.test, port: 6379 }
    redis: { timeouts: { idle: 1s } }
  - name: db
    match: { host: mongo.slow.test, port: 27017 }
    mongo: { timeouts: { request: 1s } }
  - name: broker
    match: { host: kafka.slow.test, port: 9092 }
    kafka: { timeouts: { request: 1s } }
"""

# Runs in the jail: raw sockets that misbehave, each reporting whether the
# server closed it (and what it answered first).
SOCKETS = r'''
import json, select, socket, sys, threading, time
import urllib.request

LIMIT = 30  # a safety net, far above every limit under test

def closed(s, trickle=None):
    """Waits for the server to close `s`, sending `trickle` every 0.2 s."""
    data, end = b"", time.time() + LIMIT
    while time.time() < end:
        if trickle:
            try:
                s.send(trickle)
            except OSError:
                return True, data
        r, _, _ = select.select([s], [], [], 0.2)
        if r:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                return True, data
            if not b:
                return True, data
            data += b
    return False, data

def connect(host, port):
    return socket.create_connection((host, port), timeout=LIMIT)

out = {}
case = sys.argv[1]
if case == "http":
    # Slowloris: a header line every 0.2 s, never the blank line.
    s = connect("api.slow.test", 80)
    s.send(b"GET /hello HTTP/1.1\r\nHost: api.slow.test\r\n")
    answers = []
    t = threading.Thread(target=lambda: answers.append(
        urllib.request.urlopen("http://api.slow.test/hello", timeout=LIMIT).read().decode()))
    t.start()
    out["slowloris_closed"], _ = closed(s, trickle=b"X-Slow: 1\r\n")
    t.join()
    out["other_client"] = answers
    # A connection that never sends a byte.
    out["silent_closed"], _ = closed(connect("api.slow.test", 80))
    # Keep-alive after one answered request.
    s = connect("api.slow.test", 80)
    s.send(b"GET /hello HTTP/1.1\r\nHost: api.slow.test\r\n\r\n")
    c, data = closed(s)
    out["keepalive_closed"], out["keepalive_answer"] = c, data.decode(errors="replace")
    # The defaults keep an idle keep-alive connection well past 2 s.
    s = connect("api.default.test", 80)
    for i in range(2):
        s.send(b"GET /hello HTTP/1.1\r\nHost: api.default.test\r\n\r\n")
        time.sleep(2)
        r, _, _ = select.select([s], [], [], 5)
        out[f"default_answer_{i}"] = s.recv(65536).decode(errors="replace") if r else ""
    # A big reply the client does not read.
    s = connect("api.slow.test", 80)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.send(b"GET /big HTTP/1.1\r\nHost: api.slow.test\r\n\r\n")
    time.sleep(6)
    c, data = closed(s)
    out["unread_closed"], out["unread_got"] = c, len(data)
elif case == "framed":
    s = connect("redis.slow.test", 6379)
    s.send(b"*2\r\n$3\r\nGET\r\n$1\r\n")
    out["redis_half_closed"], _ = closed(s)
    s = connect("redis.idle.test", 6379)
    s.send(b"*1\r\n$4\r\nPING\r\n")
    c, data = closed(s)
    out["redis_idle_closed"], out["redis_idle_answer"] = c, data.decode()
    s = connect("mongo.slow.test", 27017)
    s.send((100).to_bytes(4, "little") + b"\x01" * 10)
    out["mongo_half_closed"], _ = closed(s)
    s = connect("kafka.slow.test", 9092)
    s.send((100).to_bytes(4, "big") + b"\x00" * 10)
    out["kafka_half_closed"], _ = closed(s)
print(json.dumps(out))
'''


def run(jail, case):
    script = jail.write("sockets.py", SOCKETS)
    res = jail.run([PYTHON, script, case], rules=RULES, timeout=240)
    assert res.returncode == 0, res.describe()
    return res, res.json_out()


@pytest.fixture(autouse=True)
def big_file(jail):
    jail.write("big.txt", "x" * 8_000_000)


def errors_of(res, service):
    return [f.get("error") or "" for f in res.flows(service=service)]


def test_http_slowloris_idle_and_unread_replies_are_cut_off(jail):
    res, out = run(jail, "http")
    assert out["slowloris_closed"], out
    assert out["other_client"] == ["hi"], out
    assert out["silent_closed"], out
    assert out["keepalive_closed"] and out["keepalive_answer"].endswith("\r\n\r\nhi"), out
    assert out["default_answer_0"].endswith("\r\n\r\nhi"), out
    assert out["default_answer_1"].endswith("\r\n\r\nhi"), out
    assert out["unread_closed"] and out["unread_got"] < 8_000_000, out
    errors = errors_of(res, "api")
    assert any("timeouts.request" in e for e in errors), errors
    assert sum("timeouts.idle" in e for e in errors) >= 2, errors
    assert any("timeouts.response" in e for e in errors), errors
    assert not any(errors_of(res, "api-default")), res.describe()


def test_half_sent_frames_end_at_the_request_limit(jail):
    res, out = run(jail, "framed")
    for k in ("redis_half_closed", "redis_idle_closed", "mongo_half_closed", "kafka_half_closed"):
        assert out[k], (k, out)
    assert out["redis_idle_answer"] == "+PONG\r\n", out
    for svc in ("cache", "db", "broker"):
        errors = errors_of(res, svc)
        assert errors and all("timeouts.request" in e for e in errors), (svc, errors)
    assert any("timeouts.idle" in e for e in errors_of(res, "cache-idle")), res.describe()


@pytest.mark.skipif(not HAVE_REDIS_PY, reason="redis-py not installed")
def test_redis_keeps_idle_clients_like_redis(jail):
    code = """
import json, time, redis
r = redis.Redis(host="redis.slow.test", single_connection_client=True)
first = r.client_id()
time.sleep(2.5)
print(json.dumps({"same": r.client_id() == first, "ping": r.ping()}))
"""
    res = jail.run([PYTHON, jail.write("idle.py", code)], rules=RULES)
    assert res.returncode == 0, res.describe()
    assert res.json_out() == {"same": True, "ping": True}
    assert not any(errors_of(res, "cache")), res.describe()


@pytest.mark.skipif(not HAVE_CK, reason="confluent-kafka not installed")
def test_kafka_long_poll_ends_with_its_client(jail):
    # The consumer's Fetch waits up to a minute for data that never comes;
    # the consumer closes after a second and the script exits soon after.
    # The flow must end when the client closes, not stay open until
    # meshwrap stops.
    code = """
import json, time
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": "kafka.slow.test:9092", "group.id": "lp",
              "fetch.wait.max.ms": 60000, "socket.timeout.ms": 120000})
c.assign([TopicPartition("quiet", 0, 0)])
c.poll(1.5)
c.close()
time.sleep(2)
print(json.dumps({"closed": True}))
"""
    rules = RULES.replace("kafka: { timeouts: { request: 1s } }", "kafka: {}")
    res = jail.run([PYTHON, jail.write("lp.py", code)], rules=rules)
    assert res.returncode == 0, res.describe()
    flows = res.flows(service="broker")
    assert flows, res.describe()
    still_open = [f for f in flows if "still open" in (f.get("error") or "")]
    assert not still_open, res.describe()
