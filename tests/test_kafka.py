"""Integration tests for meshwrap's Kafka responder (`services[].kafka`).

Real clients run inside the jail against brokers mocked from the YAML
files in tests/kafka_rules/: kcat (Debian, librdkafka 2.0), Python's
confluent-kafka (librdkafka 2.x: idempotent producer, every compression
codec, consumer groups, committed offsets, faults, AdminClient), Node's
kafkajs (tests/node, installed by .ci/run) and raw sockets for malformed
frames. Every name is under .test; nothing leaves the jail.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON

HERE = Path(__file__).resolve().parent
RULES = HERE / "kafka_rules"

HAVE_CK = subprocess.run([PYTHON, "-c", "import confluent_kafka"],
                         capture_output=True).returncode == 0
HAVE_KCAT = shutil.which("kcat") is not None
NODE_DIR = HERE / "node"
HAVE_KAFKAJS = shutil.which("node") is not None and (NODE_DIR / "node_modules" / "kafkajs").is_dir()
HAVE_KP = subprocess.run([PYTHON, "-c", "import kafka"], capture_output=True).returncode == 0

need_ck = pytest.mark.skipif(not HAVE_CK, reason="python `confluent-kafka` not installed")
need_kp = pytest.mark.skipif(not HAVE_KP, reason="python `kafka-python` not installed")
need_kcat = pytest.mark.skipif(not HAVE_KCAT, reason="kcat not installed (Debian kcat)")


def rules(name):
    return str(RULES / name)


def ok(res, code=0):
    assert res.returncode == code, (
        f"expected exit code {code}, got {res.returncode}\n{res.describe()}")
    return res


def kafka_events(res, **match):
    return [e for e in res.events if e.get("kind") == "kafka"
            and all(e.get(k) == v for k, v in match.items())]


def sh(jail, rules_file, script, **kw):
    path = jail.write("kcat.sh", script + "\n")
    return jail.run(["sh", path], rules=rules_file, **kw)


def pyrun(jail, rules_file, code, **kw):
    """Runs a python script in the jail; it prints one JSON line last."""
    script = jail.write("script.py", "import json, sys, time, threading\n"
                        "from confluent_kafka import Producer, Consumer, TopicPartition\n"
                        + code)
    return jail.run([PYTHON, script], rules=rules_file, **kw)


# --------------------------------------------------------------------------
# kcat


@need_kcat
def test_kcat_metadata_lists_the_broker_as_dialled_and_the_topics(jail):
    res = ok(sh(jail, rules("basic.yaml"), "kcat -b kafka.test:9092 -L -J"))
    meta = json.loads(res.stdout.strip().splitlines()[-1])
    assert meta["brokers"] == [{"id": 1, "name": "kafka.test:9092"}]
    topics = {t["topic"]: len(t["partitions"]) for t in meta["topics"]}
    assert topics["orders"] == 3 and topics["empty"] == 2
    assert kafka_events(res, api="api_versions")
    assert kafka_events(res, api="metadata")


@need_kcat
def test_kcat_reads_seeded_messages_from_the_beginning(jail):
    res = ok(sh(jail, rules("basic.yaml"),
                "kcat -b kafka.test:9092 -C -t orders -o beginning -e -f '%p %o %k %s\\n'"))
    lines = sorted(l for l in res.stdout.splitlines() if l.strip())
    assert lines == ['0 0 o1 {"id":1,"status":"paid"}', "0 1 o3 third", "1 0 o2 second"], res.describe()


@need_kcat
def test_kcat_produce_then_consume(jail):
    script = (
        "printf 'a\\nb\\nc\\n' | kcat -b kafka.test:9092 -P -t fresh -p 0 && "
        "printf 'd\\n' | kcat -b kafka.test:9092 -P -t fresh -p 0 -z gzip && "
        "kcat -b kafka.test:9092 -C -t fresh -p 0 -o beginning -e -f '%o:%s\\n'")
    res = ok(sh(jail, rules("basic.yaml"), script))
    lines = [l for l in res.stdout.splitlines() if ":" in l]
    assert lines == ["0:a", "1:b", "2:c", "3:d"], res.describe()
    produced = kafka_events(res, api="produce", topic="fresh")
    assert [e["value"] for e in produced] == ["a", "b", "c", "d"]
    assert [e["offset"] for e in produced] == [0, 1, 2, 3]


@need_kcat
def test_no_auto_create_refuses_unknown_topics(jail):
    res = ok(sh(jail, rules("noauto.yaml"),
                "printf 'x\\n' | kcat -b kafka.test:9092 -P -t nope -m 5; echo rc=$?; "
                "kcat -b kafka.test:9092 -L -J"))
    # the produce fails: the broker answered that the topic does not exist
    # (librdkafka's text for UNKNOWN_TOPIC_OR_PARTITION) and kcat exits 1
    assert "rc=1" in res.stdout.splitlines(), res.describe()
    assert ("Delivery failed for message: Broker: Unknown topic or partition"
            in res.stderr), res.describe()
    assert kafka_events(res, api="produce") == [], res.describe()
    # and no topic was created by asking
    meta = json.loads(res.stdout.strip().splitlines()[-1])
    assert [t["topic"] for t in meta["topics"]] == ["known"]


# --------------------------------------------------------------------------
# confluent-kafka


@need_ck
def test_idempotent_producer_every_codec_and_a_consumer(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), """
out = {}
for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
    p = Producer({"bootstrap.servers": "kafka.test:9092", "enable.idempotence": True,
                  "compression.type": codec, "linger.ms": 5})
    errs = []
    for i in range(20):
        p.produce("codecs", key=f"{codec}-{i}", value=json.dumps({"codec": codec, "i": i}),
                  partition=0, on_delivery=lambda e, m: errs.append(str(e)) if e else None)
    p.flush(10)
    out[codec] = errs
c = Consumer({"bootstrap.servers": "kafka.test:9092", "group.id": "reader",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.assign([TopicPartition("codecs", 0, 0)])
got = []
deadline = time.time() + 20
while len(got) < 100 and time.time() < deadline:
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    got.append((m.offset(), m.key().decode(), json.loads(m.value())))
c.close()
lo, hi = Consumer({"bootstrap.servers": "kafka.test:9092", "group.id": "x"}).get_watermark_offsets(TopicPartition("codecs", 0), timeout=5)
print(json.dumps({"errs": out, "offsets": [g[0] for g in got], "keys": [g[1] for g in got], "wm": [lo, hi]}))
"""))
    out = res.json_out()
    assert all(v == [] for v in out["errs"].values()), out
    assert out["offsets"] == list(range(100))
    assert out["keys"][:2] == ["none-0", "none-1"] and out["keys"][-1] == "zstd-19"
    assert out["wm"] == [0, 100]
    assert kafka_events(res, api="init_producer_id")
    assert len(kafka_events(res, api="produce", topic="codecs")) == 100


@need_ck
def test_acks_zero_gets_no_response_and_is_stored(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), """
p = Producer({"bootstrap.servers": "kafka.test:9092", "acks": 0, "enable.idempotence": False})
errs = []
for i in range(10):
    p.produce("fire", value=f"f{i}", partition=0,
              on_delivery=lambda e, m: errs.append(str(e)) if e else None)
p.flush(10)
c = Consumer({"bootstrap.servers": "kafka.test:9092", "group.id": "f"})
c.assign([TopicPartition("fire", 0, 0)])
got = []
deadline = time.time() + 15
while len(got) < 10 and time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and not m.error():
        got.append(m.value().decode())
c.close()
print(json.dumps({"errs": errs, "got": got}))
"""))
    out = res.json_out()
    assert out == {"errs": [], "got": [f"f{i}" for i in range(10)]}


@need_ck
def test_fetch_long_poll_is_woken_by_new_data(jail):
    """A fetch waits up to fetch.wait.max.ms (30 s here, longer than the
    whole test); data for another partition does not answer it, data for
    its own does. Proven by what meshwrap answered, in order: the fetch
    for empty/0 is answered with the new message, and no fetch came back
    empty (waited out) before it."""
    res = ok(pyrun(jail, rules("basic.yaml"), """
c = Consumer({"bootstrap.servers": "kafka.test:9092", "group.id": "lp",
              "fetch.wait.max.ms": 30000, "socket.timeout.ms": 60000,
              "auto.offset.reset": "latest"})
c.assign([TopicPartition("empty", 0, 0)])
c.poll(1.0)
p = Producer({"bootstrap.servers": "kafka.test:9092"})
# Data for a partition the fetch did not ask for does not answer it...
p.produce("empty", value="elsewhere", partition=1)
p.flush(10)
# ...data for the one it asked for does, before fetch.wait.max.ms.
p.produce("empty", value="wake", partition=0)
p.flush(10)
m = None
# A guard only, longer than fetch.wait.max.ms: a fetch that waited it out
# shows in meshwrap's events, which the test checks.
deadline = time.time() + 50
while time.time() < deadline:
    m = c.poll(0.2)
    if m is not None and not m.error():
        break
c.close()
print(json.dumps({"value": m.value().decode() if m is not None and not m.error() else None}))
"""))
    out = res.json_out()
    assert out["value"] == "wake", res.describe()
    ev = [e for e in kafka_events(res) if e["api"] in ("fetch", "produce")]
    produced = [i for i, e in enumerate(ev) if e["api"] == "produce" and e["value"] == "wake"]
    answered = [i for i, e in enumerate(ev) if e["api"] == "fetch"
                and (e["topic"], e["partition"]) == ("empty", 0) and e["error_code"] == 0]
    assert produced and answered, res.describe()
    # the fetch that carried "wake" came after its produce...
    assert answered[0] > produced[0], ev
    # ...and every fetch until then was still waiting: none was answered
    # empty (a fetch records one empty answer when its wait runs out)
    empty = [e for e in ev[:answered[0]] if e["api"] == "fetch" and e["topic"] is None]
    assert empty == [], ev


@need_ck
def test_consumer_group_of_two_splits_partitions_and_commits_survive(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), """
p = Producer({"bootstrap.servers": "kafka.test:9092"})
for i in range(30):
    p.produce("work", value=f"m{i}", partition=i % 4)
p.flush(10)

def conf(name):
    return {"bootstrap.servers": "kafka.test:9092", "group.id": "workers",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 500,
            "client.id": name}

a, b = Consumer(conf("a")), Consumer(conf("b"))
a.subscribe(["work"]); b.subscribe(["work"])
seen = {"a": [], "b": []}
deadline = time.time() + 40
while len(seen["a"]) + len(seen["b"]) < 30 and time.time() < deadline:
    for name, c in (("a", a), ("b", b)):
        m = c.poll(0.1)
        if m is not None and not m.error():
            seen[name].append(m.value().decode())
            c.commit(message=m, asynchronous=False)
parts = {"a": sorted(tp.partition for tp in a.assignment()),
         "b": sorted(tp.partition for tp in b.assignment())}
a.close(); b.close()
# More data; a restarted consumer resumes after the committed offsets.
for i in range(30, 34):
    p.produce("work", value=f"m{i}", partition=i % 4)
p.flush(10)
c = Consumer(conf("c")); c.subscribe(["work"])
after = []
deadline = time.time() + 30
while len(after) < 4 and time.time() < deadline:
    m = c.poll(0.2)
    if m is not None and not m.error():
        after.append(m.value().decode())
c.close()
print(json.dumps({"seen": seen, "parts": parts, "after": sorted(after)}))
""", timeout=150))
    out = res.json_out()
    total = out["seen"]["a"] + out["seen"]["b"]
    assert sorted(total) == sorted(f"m{i}" for i in range(30)), out
    assert out["parts"]["a"] and out["parts"]["b"], out
    assert sorted(out["parts"]["a"] + out["parts"]["b"]) == [0, 1, 2, 3]
    assert out["after"] == sorted(f"m{i}" for i in range(30, 34)), out
    assert kafka_events(res, api="join_group") and kafka_events(res, api="sync_group")
    assert kafka_events(res, api="offset_commit")


@need_ck
def test_list_offsets_by_time(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), """
c = Consumer({"bootstrap.servers": "kafka.test:9092", "group.id": "t"})
tps = c.offsets_for_times([TopicPartition("orders", 0, 1600000000000),
                           TopicPartition("orders", 0, 1700000000000),
                           TopicPartition("orders", 1, 99999999999999)], timeout=5)
print(json.dumps([t.offset for t in tps]))
"""))
    # orders/0 holds o1 (now) then o3 (2023): the first at or after each time.
    assert res.json_out() == [0, 0, -1]


# --------------------------------------------------------------------------
# kafka-python


@need_kp
def test_kafka_python_producer_and_group_consumer(jail):
    code = """
import json
import os
from kafka import KafkaProducer, KafkaConsumer
p = KafkaProducer(bootstrap_servers="kafka.test:9092", compression_type="gzip")
for i in range(5):
    p.send("kp", key=b"k%d" % i, value=json.dumps({"i": i}).encode())
p.flush(10)
c = KafkaConsumer(bootstrap_servers="kafka.test:9092", group_id="kpg", auto_offset_reset="earliest",
                  consumer_timeout_ms=8000, enable_auto_commit=False)
c.subscribe(["kp", "orders"])
got = []
for m in c:
    got.append([m.topic, m.offset, m.value.decode()])
    if len(got) >= 8:
        break
c.commit()
c.close()
print(json.dumps(sorted(got)))
"""
    script = jail.write("kp.py", code)
    res = ok(jail.run([PYTHON, script], rules=rules("basic.yaml")))
    got = res.json_out()
    assert [g for g in got if g[0] == "kp"] == [["kp", i, json.dumps({"i": i})] for i in range(5)]
    assert sorted(g[2] for g in got if g[0] == "orders") == sorted(
        ['{"id":1,"status":"paid"}', "second", "third"])
    # ApiVersions v4 is above the range: the v0 fallback, then a retry.
    assert kafka_events(res, api="api_versions", error_code=35)
    assert kafka_events(res, api="offset_commit")


@need_kp
def test_kafka_python_admin_batches_coordinators_and_offset_fetches(jail):
    # kafka-python 3 looks coordinators up in one FindCoordinator (v4+,
    # coordinator_keys[]) and fetches several groups' offsets in one
    # OffsetFetch (v8+, groups[]) when the broker advertises them.
    code = """
import json, time
from kafka import KafkaConsumer, KafkaAdminClient, TopicPartition
from kafka.structs import OffsetAndMetadata
from kafka.protocol.metadata import FindCoordinatorRequest
from kafka.protocol.consumer import OffsetFetchRequest
for g, n in [("g1", 1), ("g2", 2), ("g3", 3)]:
    c = KafkaConsumer(bootstrap_servers="kafka.test:9092", group_id=g, enable_auto_commit=False)
    c.assign([TopicPartition("orders", 0), TopicPartition("orders", 1)])
    c.commit({TopicPartition("orders", 0): OffsetAndMetadata(n, "m" + g, 0),
              TopicPartition("orders", 1): OffsetAndMetadata(n - 1, "", -1)})
    c.close()
t0 = time.time()
a = KafkaAdminClient(bootstrap_servers="kafka.test:9092")
got = a.list_group_offsets({"g1": None, "g2": None, "g3": [TopicPartition("orders", 1)],
                            "never": [TopicPartition("orders", 0)]})
versions = a._manager.broker_version_data
out = {
    "since": t0,
    "versions": [versions.api_version(FindCoordinatorRequest), versions.api_version(OffsetFetchRequest)],
    "offsets": {g: sorted([tp.partition, o.offset, o.metadata, o.leader_epoch] for tp, o in v.items())
                for g, v in got.items()},
}
a.close()
print(json.dumps(out))
"""
    script = jail.write("kpadmin.py", code)
    res = ok(jail.run([PYTHON, script], rules=rules("basic.yaml")))
    out = res.json_out()
    assert out["versions"] == [4, 8], out
    assert out["offsets"] == {
        "g1": [[0, 1, "mg1", 0], [1, 0, "", -1]],
        "g2": [[0, 2, "mg2", 0], [1, 1, "", -1]],
        "g3": [[1, 2, "", -1]],
        "never": [[0, -1, "", -1]],
    }, out

    def after(e):
        t = e["time"].rstrip("Z")
        head, frac = t.split(".")
        from datetime import datetime, timezone
        ts = datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp()
        return ts + float("0." + frac) >= out["since"]
    # One lookup for the four groups, one fetch for all of them.
    assert len([e for e in kafka_events(res, api="find_coordinator") if after(e)]) == 1, res.describe()
    assert len([e for e in kafka_events(res, api="offset_fetch") if after(e)]) == 1, res.describe()


# --------------------------------------------------------------------------
# expectations, raw frames


@need_ck
def test_expectations_on_topics(jail):
    code = """
p = Producer({"bootstrap.servers": "kafka.test:9092"})
for v in sys.argv[1:]:
    p.produce("payments", value=v)
p.flush(10)
print(json.dumps({}))
"""
    script = jail.write("exp.py", "import json, sys\nfrom confluent_kafka import Producer\n" + code)
    good = jail.run([PYTHON, script, '{"id": 1, "status": "paid"}', '{"id": 2, "status": "paid", "x": 1}'],
                    rules=rules("expect.yaml"))
    assert good.returncode == 0, good.describe()
    bad = jail.run([PYTHON, script, '{"id": 1, "status": "paid"}', '{"id": 2, "status": "open"}'],
                   rules=rules("expect.yaml"))
    assert bad.returncode == 1, bad.describe()
    assert "FAIL bus / topic payments" in bad.stderr, bad.describe()


def test_malformed_frames_close_only_that_connection(jail):
    code = r"""
import socket, struct, json
def frame(b):
    return struct.pack(">i", len(b)) + b
def api_versions(v, cid):
    body = struct.pack(">hhi", 18, v, cid) + struct.pack(">h", 4) + b"test"
    if v >= 3:
        body += b"\x00" + b"\x05kcat" + b"\x061.0.0" + b"\x00"
    return frame(body)
def read(s):
    n = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
    return s.recv(n, socket.MSG_WAITALL)
out = {}
s = socket.create_connection(("kafka.test", 9092), timeout=5)
s.sendall(frame(b"\x00\x63garbage-garbage"))
out["garbage"] = s.recv(10)
s = socket.create_connection(("kafka.test", 9092), timeout=5)
s.sendall(api_versions(9, 77))
r = read(s)
cid, err = struct.unpack(">ih", r[:6])
out["fallback"] = [cid, err]
s.sendall(api_versions(3, 78))
r = read(s)
out["v3"] = list(struct.unpack(">ih", r[:6]))
print(json.dumps({k: (v.decode() if isinstance(v, bytes) else v) for k, v in out.items()}))
"""
    script = jail.write("raw.py", code)
    res = ok(jail.run([PYTHON, script], rules=rules("basic.yaml")))
    out = res.json_out()
    assert out["garbage"] == ""
    assert out["fallback"] == [77, 35]
    assert out["v3"] == [78, 0]


# --------------------------------------------------------------------------
# rules


def test_rules_errors_name_the_file_line_and_field(jail, meshwrap_bin):
    bad = jail.write("bad.yaml", "services:\n  - name: bus\n    match: { port: 9092 }\n"
                     "    kafka:\n      topics:\n        orders: { partitions: 3, partitons: 2 }\n")
    res = subprocess.run([meshwrap_bin, "check", bad], capture_output=True, text=True)
    assert res.returncode != 0, res.stderr
    assert "bad.yaml:6:" in res.stderr and "services[0].kafka.topics.orders.partitons" in res.stderr
    bad = jail.write("bad2.yaml", "services:\n  - name: bus\n    match: { port: 9092 }\n"
                     "    kafka: { topics: { orders: { partitions: 2, messages: [ { value: x, partition: 5 } ] } } }\n")
    res = subprocess.run([meshwrap_bin, "check", bad], capture_output=True, text=True)
    assert res.returncode != 0 and "partition 5 does not exist" in res.stderr, res.stderr
    bad = jail.write("bad3.yaml", "services:\n  - name: cache\n    match: { port: 6379 }\n    redis: {}\n"
                     "expect:\n  - { service: cache, topic: orders }\n")
    res = subprocess.run([meshwrap_bin, "check", bad], capture_output=True, text=True)
    assert res.returncode != 0 and "apply to Kafka services" in res.stderr, res.stderr
    example = str(HERE.parent / "rules" / "examples" / "kafka.yaml")
    res = subprocess.run([meshwrap_bin, "check", example], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------
# control plane: metrics and the request journal


@need_ck
def test_metrics_count_kafka_requests_by_api_and_the_journal_lists_them(meshwrap_bin, tmp_path):
    import socket
    import time
    import urllib.request

    from conftest import jail_env

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    script = tmp_path / "sut.py"
    script.write_text(
        "import time\nfrom confluent_kafka import Producer\n"
        "p = Producer({'bootstrap.servers': 'kafka.test:9092'})\n"
        "p.produce('metered', value='{\"status\": \"paid\"}')\np.flush(10)\n"
        "open(__file__ + '.done', 'w').close()\ntime.sleep(30)\n")
    script.chmod(0o644)
    proc = subprocess.Popen(
        [meshwrap_bin, "--rules", rules("basic.yaml"), "--admin", f"127.0.0.1:{port}", "--",
         PYTHON, str(script)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=jail_env(), start_new_session=True)
    try:
        metrics = ""
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                metrics = ""
            if 'protocol="kafka"' in metrics and 'outcome="produce"' in metrics:
                break
            time.sleep(0.2)
        lines = [l for l in metrics.splitlines() if 'protocol="kafka"' in l]
        assert any('outcome="produce"' in l for l in lines), metrics
        assert any('outcome="metadata"' in l for l in lines), metrics
        journal = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/requests?service=bus", timeout=2).read())
        produced = [e for e in journal["kafka"] if e["api"] == "produce"]
        assert produced and produced[0]["topic"] == "metered", journal
    finally:
        os.killpg(proc.pid, 15)
        proc.communicate(timeout=20)


# --------------------------------------------------------------------------
# faults


@need_ck
def test_produce_error_fault_is_retried_then_the_message_arrives(jail):
    res = ok(pyrun(jail, rules("faults.yaml"), """
p = Producer({"bootstrap.servers": "kafka.test:9092", "retry.backoff.ms": 10,
              "enable.idempotence": False})
got = []
p.produce("orders", key="k", value="v", partition=0,
          on_delivery=lambda e, m: got.append(str(e) if e else m.offset()))
p.flush(20)
c = Consumer({"bootstrap.servers": "kafka.test:9092", "group.id": "g",
              "auto.offset.reset": "earliest"})
c.assign([TopicPartition("orders", 0, 0)])
m = c.poll(10)
c.close()
print(json.dumps({"delivery": got, "value": m.value().decode() if m else None}))
"""))
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"delivery": [0], "value": "v"}, res.describe()
    codes = [e["error_code"] for e in kafka_events(res, api="produce", service="retry")]
    assert codes == [6, 6, 0], res.describe()


@need_ck
def test_produce_error_fault_with_probability_one_fails_visibly(jail):
    res = ok(pyrun(jail, rules("faults.yaml"), """
p = Producer({"bootstrap.servers": "broken.test:9092", "message.timeout.ms": 3000})
got = []
p.produce("t", value="v", on_delivery=lambda e, m: got.append(e.name() if e else "ok"))
p.flush(10)
print(json.dumps(got))
"""))
    assert json.loads(res.stdout.strip().splitlines()[-1]) == ["TOPIC_AUTHORIZATION_FAILED"]
    assert kafka_events(res, api="produce", error_code=29)


@need_ck
def test_disconnect_fault_is_seen_by_the_client_which_reconnects(jail):
    res = ok(pyrun(jail, rules("faults.yaml"), """
logs = []
class L:
    def log(self, level, msg, *a):
        logs.append(msg % a if a else msg)
import logging
lg = logging.getLogger("rd"); lg.setLevel(logging.DEBUG)
class H(logging.Handler):
    def emit(self, r): logs.append(r.getMessage())
lg.addHandler(H())
errs = []
p = Producer({"bootstrap.servers": "drop.test:9092", "retry.backoff.ms": 10,
              "reconnect.backoff.ms": 10, "logger": lg,
              "error_cb": lambda e: errs.append(str(e))})
got = []
p.produce("t", value="v", on_delivery=lambda e, m: got.append(str(e) if e else m.offset()))
p.flush(20)
print(json.dumps({"got": got, "seen": any("isconnect" in s for s in logs + errs)}))
"""))
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"got": [0], "seen": True}, res.describe()
    assert kafka_events(res, api="produce", service="drop", error_code=13)


@need_ck
def test_latency_fault_delays_produce(jail):
    res = ok(pyrun(jail, rules("faults.yaml"), """
p = Producer({"bootstrap.servers": "slow.test:9092", "linger.ms": 0})
p.produce("t", value="warm"); p.flush(10)
t0 = time.time()
p.produce("t", value="v"); p.flush(10)
print(json.dumps(time.time() - t0))
"""))
    assert json.loads(res.stdout.strip().splitlines()[-1]) >= 0.28


@need_ck
def test_error_fault_on_offset_commit_fails_the_commit_and_stores_nothing(jail):
    res = ok(pyrun(jail, rules("faults.yaml"), """
from confluent_kafka import KafkaException
c = Consumer({"bootstrap.servers": "nocommit.test:9092", "group.id": "g",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.assign([TopicPartition("orders", 0, 0)])
m = None
deadline = time.time() + 15
while time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and not m.error():
        break
out = {"value": m.value().decode()}
try:
    r = c.commit(message=m, asynchronous=False)
    out["commit"] = [tp.error.name() if tp.error else "ok" for tp in r]
except KafkaException as e:
    out["commit"] = [e.args[0].name()]
out["committed"] = c.committed([TopicPartition("orders", 0)], timeout=10)[0].offset
c.close()
print(json.dumps(out))
"""))
    out = res.json_out()
    assert out == {"value": "a", "commit": ["TOPIC_AUTHORIZATION_FAILED"], "committed": -1001}, res.describe()
    assert kafka_events(res, api="offset_commit", service="nocommit", error_code=29)
    assert kafka_events(res, api="offset_fetch", service="nocommit", error_code=0)


# --------------------------------------------------------------------------
# admin


@need_ck
def test_admin_client_creates_grows_and_deletes_topics(jail):
    res = ok(pyrun(jail, rules("noauto.yaml"), """
from confluent_kafka.admin import AdminClient, NewTopic, NewPartitions
a = AdminClient({"bootstrap.servers": "kafka.test:9092"})
out = {}
def wait(fs):
    r = {}
    for k, f in fs.items():
        try:
            f.result(10); r[k] = "ok"
        except Exception as e:
            r[k] = e.args[0].name()
    return r
out["create"] = wait(a.create_topics([NewTopic("made", 3, 1), NewTopic("known", 1, 1)]))
time.sleep(0.2)
md = a.list_topics(timeout=10)
out["after_create"] = {t: len(md.topics[t].partitions) for t in md.topics}
out["grow"] = wait(a.create_partitions([NewPartitions("made", 5), NewPartitions("made2", 2)]))
md = a.list_topics(timeout=10)
out["after_grow"] = len(md.topics["made"].partitions)
p = Producer({"bootstrap.servers": "kafka.test:9092"})
got = []
p.produce("made", value="x", partition=4, on_delivery=lambda e, m: got.append(str(e) if e else m.partition()))
p.flush(10)
out["produced"] = got
out["delete"] = wait(a.delete_topics(["made", "nope"]))
md = a.list_topics(timeout=10)
out["after_delete"] = sorted(md.topics)
print(json.dumps(out))
"""))
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {
        "create": {"made": "ok", "known": "TOPIC_ALREADY_EXISTS"},
        "after_create": {"known": 1, "made": 3},
        "grow": {"made": "ok", "made2": "UNKNOWN_TOPIC_OR_PART"},
        "after_grow": 5,
        "produced": [4],
        "delete": {"made": "ok", "nope": "UNKNOWN_TOPIC_OR_PART"},
        "after_delete": ["known"],
    }, res.describe()
    assert kafka_events(res, api="create_topics", topic="made", error_code=0)


@need_ck
def test_admin_client_describes_topic_configs(jail):
    res = ok(pyrun(jail, rules("noauto.yaml"), """
from confluent_kafka.admin import AdminClient, NewTopic, ConfigResource
a = AdminClient({"bootstrap.servers": "kafka.test:9092"})
a.create_topics([NewTopic("made", 1, 1, config={"retention.ms": "1000"})])["made"].result(10)
out = {}
for t in ["known", "made", "nope"]:
    f = a.describe_configs([ConfigResource("topic", t)])
    try:
        cfg = list(f.values())[0].result(10)
        out[t] = {k: v.value for k, v in cfg.items()}
    except Exception as e:
        out[t] = e.args[0].name()
print(json.dumps(out))
"""))
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["known"]["cleanup.policy"] == "compact", res.describe()
    assert out["known"]["retention.ms"] == "3600000"
    assert out["made"]["cleanup.policy"] == "delete"
    assert out["made"]["retention.ms"] == "1000"
    assert out["nope"] == "UNKNOWN_TOPIC_OR_PART"


@need_ck
def test_leader_epochs_are_validated_and_consumer_groups_deleted(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), """
from confluent_kafka.admin import AdminClient
p = Producer({"bootstrap.servers": "kafka.test:9092"})
for i in range(10):
    p.produce("epochs", value=f"e{i}", partition=0)
p.flush(10)

def conf(g):
    return {"bootstrap.servers": "kafka.test:9092", "group.id": g,
            "auto.offset.reset": "earliest", "enable.auto.commit": False}

def read(c, n):
    got = []
    deadline = time.time() + 20
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append((m.value().decode(), m.leader_epoch()))
            last = m
    return got, last

out = {}
# Read five and commit the position with its leader epoch.
c = Consumer(conf("done"))
c.subscribe(["epochs"])
got, last = read(c, 5)
c.commit(message=last, asynchronous=False)
out["first"] = got
c.close()
# A second member resumes from the committed position and epoch, which
# librdkafka validates with OffsetForLeaderEpoch before fetching.
c = Consumer(conf("done"))
c.subscribe(["epochs"])
out["resumed"], _ = read(c, 5)
tp = c.committed([TopicPartition("epochs", 0)], timeout=10)[0]
out["committed"] = [tp.offset, tp.leader_epoch]
c.close()
# A seek with a leader epoch is validated too.
s = Consumer(conf("seeker"))
s.assign([TopicPartition("epochs", 0, 0)])
read(s, 1)
s.seek(TopicPartition("epochs", 0, 7, leader_epoch=0))
out["after_seek"], _ = read(s, 1)
s.close()
# One group still has a member while the admin client deletes groups.
busy = Consumer(conf("busy"))
busy.subscribe(["epochs"])
read(busy, 1)
a = AdminClient({"bootstrap.servers": "kafka.test:9092"})
res = {}
for g, f in a.delete_consumer_groups(["done", "busy", "nope"], request_timeout=10).items():
    try:
        f.result(); res[g] = "ok"
    except Exception as e:
        res[g] = e.args[0].name()
out["deleted"] = res
busy.close()
# The deleted group's offsets went with it: a new member starts over.
c = Consumer(conf("done"))
c.subscribe(["epochs"])
out["restarted"], _ = read(c, 1)
c.close()
out["groups"] = sorted(g.group_id for g in a.list_consumer_groups().result(10).valid)
print(json.dumps(out))
""", timeout=120))
    out = res.json_out()
    assert out["first"] == [[f"e{i}", 0] for i in range(5)], out
    assert out["resumed"] == [[f"e{i}", 0] for i in range(5, 10)], out
    assert out["committed"] == [5, 0], out
    assert out["after_seek"] == [["e7", 0]], out
    assert out["deleted"] == {"done": "ok", "busy": "NON_EMPTY_GROUP", "nope": "GROUP_ID_NOT_FOUND"}, out
    assert out["restarted"] == [["e0", 0]], out
    assert "done" in out["groups"] and "busy" in out["groups"], out
    validated = kafka_events(res, api="offset_for_leader_epoch", topic="epochs", error_code=0)
    assert validated and all(e["offset"] == 10 for e in validated), res.describe()
    assert sorted(e["error_code"] for e in kafka_events(res, api="delete_groups")) == [0, 68, 69]


# --------------------------------------------------------------------------
# brokers: N


@need_kcat
def test_kcat_lists_three_brokers_and_spread_leaders(jail):
    res = ok(sh(jail, rules("cluster.yaml"), "kcat -b kafka.test:9092 -L -J"))
    meta = json.loads(res.stdout.strip().splitlines()[-1])
    assert sorted((b["id"], b["name"]) for b in meta["brokers"]) == [
        (0, "b0.kafka.test:9092"), (1, "b1.kafka.test:9092"), (2, "b2.kafka.test:9092")]
    spread = next(t for t in meta["topics"] if t["topic"] == "spread")
    assert {p["partition"]: p["leader"] for p in spread["partitions"]} == {
        p: p % 3 for p in range(6)}


@need_ck
def test_three_brokers_each_serve_the_partitions_they_lead(jail):
    res = ok(pyrun(jail, rules("cluster.yaml"), """
p = Producer({"bootstrap.servers": "kafka.test:9092", "enable.idempotence": True, "linger.ms": 5})
errs = []
for i in range(60):
    p.produce("spread", key=f"k{i}", value=f"v{i}", partition=i % 6,
              on_delivery=lambda e, m: errs.append(str(e)) if e else None)
p.flush(20)
c = Consumer({"bootstrap.servers": "kafka.test:9092", "group.id": "spreaders",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe(["spread"])
got = []
deadline = time.time() + 40
while len(got) < 60 and time.time() < deadline:
    m = c.poll(0.2)
    if m is not None and not m.error():
        got.append([m.partition(), m.offset(), m.value().decode()])
c.commit(asynchronous=False)
committed = {tp.partition: tp.offset for tp in c.committed(
    [TopicPartition("spread", q) for q in range(6)], timeout=10)}
c.close()
# Destroying the clients closes their connections, so each flow's event
# (with its host) is written before the script exits.
del c, p
time.sleep(0.5)
print(json.dumps({"errs": errs, "got": sorted(got), "committed": committed}))
""", timeout=90))
    out = res.json_out()
    assert out["errs"] == [], out
    assert sorted(g[2] for g in out["got"]) == sorted(f"v{i}" for i in range(60)), out
    assert all(g[2] in {f"v{i}" for i in range(g[0], 60, 6)} for g in out["got"])
    assert out["committed"] == {str(q): 10 for q in range(6)}, out
    # Every record went over a connection to the broker that leads its
    # partition, and every fetch of records came from that broker too.
    host_of = {e["flow_id"]: e.get("host") for e in res.events if e.get("kind") == "flow"}
    for api in ("produce", "fetch"):
        evs = [e for e in kafka_events(res, api=api, topic="spread") if e["error_code"] == 0
               and (api == "produce" or e["offset"] > 0)]
        assert evs, api
        for e in evs:
            assert host_of.get(e["flow_id"]) == f"b{e['partition'] % 3}.kafka.test", (api, e)


def test_a_broker_answers_not_leader_for_partitions_it_does_not_lead(jail):
    # ListOffsets v1 on the wire, asked of each broker for partitions 0-2
    # of `spread`: only the leader (p % 3) answers; the others say
    # NOT_LEADER_OR_FOLLOWER (6) so a client refreshes its metadata. The
    # bootstrap name belongs to no broker and answers for all.
    code = r"""
import socket, struct, json
def list_offsets(host, parts):
    topic = b"spread"
    body = struct.pack(">hhi", 2, 1, 5) + struct.pack(">h", 3) + b"raw" + struct.pack(">i", -1)
    body += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic + struct.pack(">i", len(parts))
    for p in parts:
        body += struct.pack(">iq", p, -1)
    s = socket.create_connection((host, 9092), timeout=5)
    s.sendall(struct.pack(">i", len(body)) + body)
    n = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
    r = s.recv(n, socket.MSG_WAITALL)[4:]             # correlation id
    r = r[4 + 2 + len(topic):]                        # one topic, its name
    count = struct.unpack(">i", r[:4])[0]; r = r[4:]
    out = {}
    for _ in range(count):
        p, err, ts, off = struct.unpack(">ihqq", r[:22]); r = r[22:]
        out[p] = err
    return out
print(json.dumps({h: list_offsets(h, [0, 1, 2]) for h in
                  ["b0.kafka.test", "b1.kafka.test", "b2.kafka.test", "kafka.test"]}))
"""
    script = jail.write("raw.py", code)
    res = ok(jail.run([PYTHON, script], rules=rules("cluster.yaml")))
    assert res.json_out() == {
        "b0.kafka.test": {"0": 0, "1": 6, "2": 6},
        "b1.kafka.test": {"0": 6, "1": 0, "2": 6},
        "b2.kafka.test": {"0": 6, "1": 6, "2": 0},
        "kafka.test": {"0": 0, "1": 0, "2": 0},
    }, res.describe()
    assert kafka_events(res, api="list_offsets", error_code=6)


# --------------------------------------------------------------------------
# Node kafkajs


@pytest.mark.skipif(not HAVE_KAFKAJS, reason="node or tests/node/node_modules/kafkajs missing")
def test_kafkajs_produces_and_a_group_consumes_by_hostname(jail):
    script = jail.write("kjs.js", r'''
const { Kafka, logLevel } = require(process.argv[2]);
(async () => {
  const kafka = new Kafka({ clientId: "kjs", brokers: ["kafka.test:9092"], logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  const sent = await producer.send({ topic: "work", messages: [
    { key: "a", value: "one", partition: 0 }, { key: "b", value: "two", partition: 1 },
    { key: "c", value: "three", partition: 0 } ] });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: "kjs-group" });
  await consumer.connect();
  await consumer.subscribe({ topic: "work", fromBeginning: true });
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("timeout: " + JSON.stringify(got))), 20000);
    consumer.run({ eachMessage: async ({ partition, message }) => {
      got.push([partition, Number(message.offset), message.key.toString(), message.value.toString()]);
      if (got.length === 3) { clearTimeout(timer); resolve(); }
    } });
  });
  await consumer.disconnect();
  got.sort();
  console.log(JSON.stringify({ sent: sent.map(s => s.errorCode), got }));
})().catch(e => { console.error(e); process.exit(1); });
''')
    res = ok(jail.run(["node", script, str(NODE_DIR / "node_modules" / "kafkajs")],
                      rules=rules("basic.yaml"), timeout=60))
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["got"] == [[0, 0, "a", "one"], [0, 1, "c", "three"], [1, 0, "b", "two"]], res.describe()
    assert set(out["sent"]) == {0}
    assert kafka_events(res, api="offset_commit")
    assert kafka_events(res, api="sync_group")



def test_describe_cluster_v0_raw(jail):
    # librdkafka answers describe_cluster from Metadata, so this speaks the
    # wire directly: header v2 (flexible), then the v0 body.
    code = r"""
import socket, struct, json
body = struct.pack(">hhi", 60, 0, 7) + struct.pack(">h", 3) + b"raw" + b"\x00" + b"\x00" + b"\x00"
s = socket.create_connection(("kafka.test", 9092), timeout=5)
s.sendall(struct.pack(">i", len(body)) + body)
n = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
r = s.recv(n, socket.MSG_WAITALL)
cid = struct.unpack(">i", r[:4])[0]
r = r[5:]                                  # header tagged fields
throttle, err = struct.unpack(">ih", r[:6])
r = r[6:]
assert r[0] == 0                           # null error message
ln = r[1] - 1
cluster = r[2:2 + ln].decode()
r = r[2 + ln:]
controller = struct.unpack(">i", r[:4])[0]
nbrokers = r[4] - 1
bid = struct.unpack(">i", r[5:9])[0]
hl = r[9] - 1
host = r[10:10 + hl].decode()
port = struct.unpack(">i", r[10 + hl:14 + hl])[0]
print(json.dumps([cid, err, cluster, controller, nbrokers, bid, host, port]))
"""
    script = jail.write("raw.py", code)
    res = ok(jail.run([PYTHON, script], rules=rules("basic.yaml")))
    assert res.json_out() == [7, 0, "meshwrap", 1, 1, 1, "kafka.test", 9092], res.describe()
    assert kafka_events(res, api="describe_cluster")
