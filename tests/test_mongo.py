"""Integration tests for meshwrap's MongoDB responder (`services[].mongo`).

pymongo runs inside the jail against services mocked from the YAML files
in tests/mongo_rules/ (CRUD, cursors, aggregation, unique indexes, SCRAM,
transactions in replica-set mode), plus raw sockets for the legacy
OP_QUERY handshake and malformed messages. Every name is under .test;
nothing leaves the jail.
"""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON

HERE = Path(__file__).resolve().parent
RULES = HERE / "mongo_rules"
NODE_DIR = HERE / "node"

HAVE_PYMONGO = subprocess.run([PYTHON, "-c", "import pymongo"], capture_output=True).returncode == 0
HAVE_NODE_MONGO = shutil.which("node") is not None and (NODE_DIR / "node_modules" / "mongodb").is_dir()

pytestmark = pytest.mark.skipif(not HAVE_PYMONGO, reason="pymongo not installed")


def rules(name):
    return str(RULES / name)


def ok(res, code=0):
    assert res.returncode == code, (
        f"expected exit code {code}, got {res.returncode}\n{res.describe()}")
    return res


def mongo_events(res, **match):
    return [e for e in res.events if e.get("kind") == "mongo"
            and all(e.get(k) == v for k, v in match.items())]


PRELUDE = """
import json, sys
import pymongo
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError, OperationFailure
from bson import ObjectId
out = {}
"""


def pyrun(jail, rules_file, code, **kw):
    """Runs a pymongo script in the jail; it prints `out` as JSON last."""
    script = jail.write("script.py", PRELUDE + code + "\nprint(json.dumps(out, default=str))\n")
    return jail.run([PYTHON, script], rules=rules_file, **kw)


def last_json(res):
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_crud_and_seeds(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), """
c = MongoClient("mongodb://mongo.test:27017/", serverSelectionTimeoutMS=5000)
out["ping"] = c.admin.command("ping")["ok"]
out["version"] = c.server_info()["version"]
users = c.app.users
out["alice"] = users.find_one({"_id": 1})["name"]
out["carol_id"] = str(users.find_one({"name": "carol"})["_id"])
out["adults"] = sorted(u["name"] for u in users.find({"age": {"$gte": 26}}))
out["devs"] = sorted(u["name"] for u in users.find({"tags": "dev"}))
out["regex"] = [u["name"] for u in users.find({"email": {"$regex": "^BOB", "$options": "i"}})]
out["proj"] = users.find_one({"_id": 2}, {"name": 1, "_id": 0})
out["or"] = users.count_documents({"$or": [{"age": {"$lt": 26}}, {"name": "carol"}]})
r = users.insert_one({"name": "dave", "email": "dave@example.test", "age": 19})
out["inserted_is_oid"] = isinstance(r.inserted_id, ObjectId)
r = users.update_one({"name": "dave"}, {"$inc": {"age": 1}, "$push": {"tags": "new"}, "$set": {"addr.city": "Oslo"}})
out["upd"] = [r.matched_count, r.modified_count]
d = users.find_one({"name": "dave"})
out["dave"] = [d["age"], d["tags"], d["addr"]]
r = users.update_many({}, {"$set": {"seen": True}})
out["many"] = r.modified_count
r = users.update_one({"name": "erin"}, {"$set": {"age": 50}, "$setOnInsert": {"email": "erin@example.test"}}, upsert=True)
out["upserted"] = r.upserted_id is not None
out["erin"] = users.find_one({"name": "erin"}, {"_id": 0, "name": 1, "age": 1, "email": 1})
out["fam"] = users.find_one_and_update({"name": "bob"}, {"$set": {"age": 26}}, return_document=pymongo.ReturnDocument.AFTER)["age"]
users.replace_one({"_id": 2}, {"name": "bobby", "email": "bob@example.test"})
out["replaced"] = users.find_one({"_id": 2})
r = users.delete_many({"age": {"$lt": 21}})
out["deleted"] = r.deleted_count
out["distinct"] = sorted(users.distinct("tags"))
out["count"] = users.count_documents({})
out["est"] = users.estimated_document_count()
out["dbs"] = "app" in c.list_database_names()
out["colls"] = c.app.list_collection_names()
c.app.create_collection("other")
out["colls2"] = sorted(c.app.list_collection_names())
c.app.drop_collection("other")
out["sorted"] = [u["name"] for u in users.find().sort([("age", -1)]).skip(1).limit(2)]
"""))
    out = last_json(res)
    assert out["ping"] == 1.0
    assert out["version"].startswith("7.0")
    assert out["alice"] == "alice"
    assert out["carol_id"] == "65a1b2c3d4e5f60718293a4b"
    assert out["adults"] == ["alice", "carol"]
    assert out["devs"] == ["alice", "bob"]
    assert out["regex"] == ["bob"]
    assert out["proj"] == {"name": "bob"}
    assert out["or"] == 2
    assert out["inserted_is_oid"] is True
    assert out["upd"] == [1, 1]
    assert out["dave"] == [20, ["new"], {"city": "Oslo"}]
    assert out["many"] == 4
    assert out["upserted"] is True
    assert out["erin"] == {"name": "erin", "age": 50, "email": "erin@example.test"}
    assert out["fam"] == 26
    assert out["replaced"] == {"_id": 2, "name": "bobby", "email": "bob@example.test"}
    assert out["deleted"] == 1
    assert out["distinct"] == ["admin", "dev"]
    assert out["count"] == 4
    assert out["est"] == 4
    assert out["dbs"] is True
    assert out["colls"] == ["users"]
    assert out["colls2"] == ["other", "users"]
    assert out["sorted"] == ["carol", "alice"]
    evs = mongo_events(res, command="insert")
    assert evs and evs[0]["collection"] == "app.users" and evs[0]["matched"] == 1
    assert "MongoDB commands per service" in res.stderr


def test_array_updates(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), """
c = MongoClient("mongodb://mongo.test:27017/", serverSelectionTimeoutMS=5000)
s = c.t.students
s.insert_one({"_id": 1, "grades": [{"g": 80, "n": 1}, {"g": 95, "n": 2}], "tags": ["a", "b", "c"], "q": [3, 1, 2]})
s.update_one({"_id": 1, "grades.n": 2}, {"$set": {"grades.$.g": 99}})
s.update_one({"_id": 1}, {"$inc": {"grades.$[low].g": 5}}, array_filters=[{"low.g": {"$lt": 90}}])
s.update_one({"_id": 1}, {"$pull": {"tags": "b"}, "$addToSet": {"q": 3}})
s.update_one({"_id": 1}, {"$push": {"q": {"$each": [9, 0], "$sort": 1, "$slice": 3}}})
s.update_one({"_id": 1}, {"$pop": {"tags": -1}, "$rename": {"q": "r"}})
out["doc"] = s.find_one({"_id": 1})
out["elem"] = s.count_documents({"grades": {"$elemMatch": {"g": {"$gt": 98}, "n": 2}}})
out["size"] = s.count_documents({"tags": {"$size": 1}})
"""))
    out = last_json(res)
    assert out["doc"] == {"_id": 1, "grades": [{"g": 85, "n": 1}, {"g": 99, "n": 2}],
                          "tags": ["c"], "r": [0, 1, 2]}
    assert out["elem"] == 1
    assert out["size"] == 1


def test_cursors_with_small_batches(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), """
c = MongoClient("mongodb://mongo.test:27017/", serverSelectionTimeoutMS=5000)
col = c.t.items
col.insert_many([{"_id": i, "v": i * i} for i in range(10)])
out["all"] = [d["_id"] for d in col.find({}, batch_size=2).sort("_id", 1)]
cur = col.find({}, batch_size=3)
first = next(cur)
cur.close()
out["first"] = first["_id"]
out["agg"] = [d["_id"] for d in col.aggregate([{"$match": {"v": {"$gt": 10}}}, {"$sort": {"v": -1}}], batchSize=2)]
"""))
    out = last_json(res)
    assert out["all"] == list(range(10))
    assert out["first"] == 0
    assert out["agg"] == [9, 8, 7, 6, 5, 4]
    assert len(mongo_events(res, command="getMore")) >= 4
    assert mongo_events(res, command="killCursors")


def test_aggregation(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), """
c = MongoClient("mongodb://mongo.test:27017/", serverSelectionTimeoutMS=5000)
o = c.shop.orders
o.insert_many([
    {"cust": "a", "amount": 10, "items": ["x", "y"]},
    {"cust": "b", "amount": 5, "items": ["x"]},
    {"cust": "a", "amount": 7, "items": []},
])
c.shop.customers.insert_many([{"_id": "a", "name": "Ann"}, {"_id": "b", "name": "Ben"}])
out["group"] = list(o.aggregate([
    {"$group": {"_id": "$cust", "total": {"$sum": "$amount"}, "n": {"$sum": 1}, "avg": {"$avg": "$amount"}}},
    {"$sort": {"_id": 1}},
]))
out["unwind"] = list(o.aggregate([{"$unwind": "$items"}, {"$sortByCount": "$items"}]))
out["count"] = list(o.aggregate([{"$match": {"amount": {"$gte": 7}}}, {"$count": "n"}]))
out["lookup"] = [d["who"][0]["name"] for d in o.aggregate([
    {"$sort": {"amount": -1}},
    {"$lookup": {"from": "customers", "localField": "cust", "foreignField": "_id", "as": "who"}},
])]
out["project"] = list(o.aggregate([{"$sort": {"amount": 1}}, {"$limit": 1}, {"$project": {"_id": 0, "double": {"$multiply": ["$amount", 2]}}}]))
out["cd"] = o.count_documents({"cust": "a"})
out["facet"] = list(o.aggregate([{"$facet": {"big": [{"$match": {"amount": {"$gt": 6}}}, {"$count": "n"}], "all": [{"$count": "n"}]}}]))
"""))
    out = last_json(res)
    assert out["group"] == [
        {"_id": "a", "total": 17, "n": 2, "avg": 8.5},
        {"_id": "b", "total": 5, "n": 1, "avg": 5.0},
    ]
    assert out["unwind"] == [{"_id": "x", "count": 2}, {"_id": "y", "count": 1}]
    assert out["count"] == [{"n": 2}]
    assert out["lookup"] == ["Ann", "Ann", "Ben"]
    assert out["project"] == [{"double": 10}]
    assert out["cd"] == 2
    assert out["facet"] == [{"big": [{"n": 2}], "all": [{"n": 3}]}]


def test_unique_index_violation(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), """
c = MongoClient("mongodb://mongo.test:27017/", serverSelectionTimeoutMS=5000)
users = c.app.users
try:
    users.insert_one({"name": "fake", "email": "alice@example.test"})
    out["dup"] = "no error"
except DuplicateKeyError as e:
    out["dup"] = e.code
    out["msg"] = str(e)
    out["kv"] = e.details.get("keyValue")
try:
    users.insert_one({"_id": 1})
except DuplicateKeyError as e:
    out["dup_id"] = e.code
c.t.x.create_index("k", unique=True)
c.t.x.insert_one({"k": 1})
try:
    c.t.x.insert_one({"k": 1})
except DuplicateKeyError as e:
    out["dup2"] = e.code
out["indexes"] = sorted(i["name"] for i in c.t.x.list_indexes())
try:
    c.app.command("frobnicate")
except OperationFailure as e:
    out["unknown"] = [e.code, e.details.get("errmsg"), e.details.get("codeName")]
"""))
    out = last_json(res)
    assert out["dup"] == 11000
    assert "E11000 duplicate key error collection: app.users index: email_1 dup key" in out["msg"]
    assert out["kv"] == {"email": "alice@example.test"}
    assert out["dup_id"] == 11000
    assert out["dup2"] == 11000
    assert out["indexes"] == ["_id_", "k_1"]
    assert out["unknown"] == [59, "no such command: 'frobnicate'", "CommandNotFound"]


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_auth_success_and_failure(jail, mech):
    res = ok(pyrun(jail, rules("auth.yaml"), f"""
good = MongoClient("mongodb://app:s3cret@mongo.test:27017/?authMechanism={mech}", serverSelectionTimeoutMS=5000)
good.app.t.insert_one({{"a": 1}})
out["good"] = good.app.t.count_documents({{}})
bad = MongoClient("mongodb://app:wrong@mongo.test:27017/?authMechanism={mech}", serverSelectionTimeoutMS=5000)
try:
    bad.app.t.find_one()
    out["bad"] = "no error"
except OperationFailure as e:
    out["bad"] = [e.code, str(e)]
anon = MongoClient("mongodb://mongo.test:27017/", serverSelectionTimeoutMS=5000)
try:
    anon.app.t.find_one()
    out["anon"] = "no error"
except OperationFailure as e:
    out["anon"] = e.code
"""))
    out = last_json(res)
    assert out["good"] == 1
    assert out["bad"][0] == 18 and "Authentication failed." in out["bad"][1]
    assert out["anon"] == 13


def test_transaction_in_replica_set(jail):
    res = ok(pyrun(jail, rules("replset.yaml"), """
c = MongoClient("mongodb://mongo.test:27017/?replicaSet=rs0", serverSelectionTimeoutMS=5000)
acc = c.bank.accounts
acc.insert_many([{"_id": "a", "bal": 100}, {"_id": "b", "bal": 0}])
with c.start_session() as s:
    with s.start_transaction():
        acc.update_one({"_id": "a"}, {"$inc": {"bal": -30}}, session=s)
        acc.update_one({"_id": "b"}, {"$inc": {"bal": 30}}, session=s)
out["after_commit"] = [d["bal"] for d in acc.find().sort("_id", 1)]
with c.start_session() as s:
    s.start_transaction()
    acc.update_one({"_id": "a"}, {"$inc": {"bal": -1000}}, session=s)
    s.abort_transaction()
out["after_abort"] = [d["bal"] for d in acc.find().sort("_id", 1)]
out["primary"] = c.primary
"""))
    out = last_json(res)
    assert out["after_commit"] == [70, 30]
    assert out["after_abort"] == [70, 30]
    assert out["primary"] == ["mongo.test", 27017]
    assert mongo_events(res, command="commitTransaction")


def test_legacy_op_query_handshake_and_malformed(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), """
import socket, struct, bson
def query(sock, doc, rid=1):
    body = struct.pack("<i", 0) + b"admin.$cmd\\0" + struct.pack("<ii", 0, -1) + bson.encode(doc)
    sock.sendall(struct.pack("<iiii", 16 + len(body), rid, 0, 2004) + body)
    return read(sock)
def read(sock):
    hdr = b""
    while len(hdr) < 16:
        chunk = sock.recv(16 - len(hdr))
        if not chunk:
            return None
        hdr += chunk
    length, rid, to, op = struct.unpack("<iiii", hdr)
    rest = b""
    while len(rest) < length - 16:
        rest += sock.recv(length - 16 - len(rest))
    return op, to, rest
s = socket.create_connection(("mongo.test", 27017), timeout=5)
op, to, rest = query(s, {"isMaster": 1, "helloOk": True, "client": {"driver": {"name": "raw"}}}, rid=42)
reply = bson.decode(rest[20:])
out["op"] = op
out["to"] = to
out["ismaster"] = reply.get("ismaster")
out["wire"] = reply.get("maxWireVersion")
out["topo"] = "topologyVersion" in reply
# An OP_MSG whose body is not valid BSON: an error reply, connection kept.
body = struct.pack("<I", 0) + b"\\0" + struct.pack("<i", 10) + b"\\x10abc\\0\\0\\0\\0\\0"
s.sendall(struct.pack("<iiii", 16 + len(body), 2, 0, 2013) + body)
op, to, rest = read(s)
err = bson.decode(rest[5:])
out["bad_bson"] = [err.get("ok"), err.get("code")]
# Unknown opcode inside a well-formed frame: error reply too.
s.sendall(struct.pack("<iiii", 20, 3, 0, 9999) + b"\\0\\0\\0\\0")
op, to, rest = read(s)
out["bad_op"] = bson.decode(rest[5:]).get("ok")
# A bad length closes only this connection.
s.sendall(struct.pack("<iiii", 5, 4, 0, 2013))
out["closed"] = read(s) is None
s2 = socket.create_connection(("mongo.test", 27017), timeout=5)
op, to, rest = query(s2, {"ping": 1})
out["second"] = bson.decode(rest[20:]).get("ok")
"""))
    out = last_json(res)
    assert out["op"] == 1 and out["to"] == 42
    assert out["ismaster"] is True and out["wire"] == 21 and out["topo"] is False
    assert out["bad_bson"] == [0.0, 2]
    assert out["bad_op"] == 0.0
    assert out["closed"] is True
    assert out["second"] == 1.0


def test_unacknowledged_writes_get_no_reply(jail):
    res = ok(pyrun(jail, rules("basic.yaml"), """
from pymongo import WriteConcern
c = MongoClient("mongodb://mongo.test:27017/", serverSelectionTimeoutMS=5000)
col = c.t.get_collection("w0", write_concern=WriteConcern(w=0))
for i in range(5):
    col.insert_one({"i": i})
out["n"] = c.t.w0.count_documents({})
"""))
    assert last_json(res)["n"] == 5


def test_faults(jail):
    res = ok(pyrun(jail, rules("faults.yaml"), """
import time
from pymongo.errors import AutoReconnect
c = MongoClient("mongodb://mongo.test:27017/", serverSelectionTimeoutMS=5000, retryReads=False, retryWrites=False)
try:
    c.app.orders.insert_one({"a": 1})
    out["err"] = "no error"
except OperationFailure as e:
    out["err"] = [e.code, str(e)]
c.app.other.insert_one({"a": 1})
out["other"] = c.app.other.count_documents({})
t = time.monotonic()
c.app.slowly.find_one()
out["slow"] = time.monotonic() - t
try:
    c.app.other.distinct("a")
    out["reset"] = "answered"
except AutoReconnect:
    out["reset"] = "AutoReconnect"
"""))
    out = last_json(res)
    assert out["err"][0] == 2 and "injected write failure" in out["err"][1]
    assert out["other"] == 1
    assert out["slow"] >= 0.25
    assert out["reset"] == "AutoReconnect"


def test_expectations(jail):
    code = """
c = MongoClient("mongodb://mongo.test:27017/", serverSelectionTimeoutMS=5000)
c.app.orders.insert_one({"sku": "x"})
"""
    good = ok(pyrun(jail, rules("expect.yaml"), code))
    assert "expectations: 2 of 2 met" in good.stderr, good.describe()
    assert "FAIL" not in good.stderr, good.describe()
    bad = """
services:
  - name: db
    match: { host: mongo.test, port: 27017 }
    mongo: {}
expect:
  - { service: db, command: insert, collection: app.invoices, at_least: 1 }
"""
    # The command succeeds: exit code 1 is meshwrap's, for the unmet
    # expectation, which the report names with the calls the service got.
    res = ok(pyrun(jail, bad, code), 1)
    err = res.stderr
    assert "expectations: 0 of 1 met" in err, res.describe()
    assert re.search(r"FAIL db / INSERT\b.*\bapp\.invoices: expected at least 1 time, "
                     r"called 0 times", err), res.describe()
    assert re.search(r"^\s*insert app\.orders -> ok$", err, re.M), res.describe()


def test_rules_errors_are_positioned(jail):
    path = jail.write("typo.yaml", """
services:
  - name: db
    match: { host: mongo.test }
    mongo:
      colections: {}
""")
    marker = jail.workdir / "sut-ran"
    res = jail.run(["touch", str(marker)], rules=path)
    assert res.returncode == 2, res.describe()
    assert not marker.exists(), "the SUT ran although the rules file is invalid"
    # file:line:column of the misspelled key, its path in the document and
    # the field name, with the names that are allowed there
    assert re.search(re.escape(path) + r":6:7: services\[0\]\.mongo\.colections: "
                     r"unknown field `colections`, expected one of .*`collections`",
                     res.stderr), res.describe()


@pytest.mark.skipif(not HAVE_NODE_MONGO, reason="node `mongodb` driver not installed in tests/node")
def test_node_driver(jail):
    script = jail.write("m.js", """
const { MongoClient } = require(process.argv[2]);
(async () => {
  const c = new MongoClient('mongodb://mongo.test:27017/', { serverSelectionTimeoutMS: 5000 });
  await c.connect();
  const col = c.db('app').collection('users');
  await col.insertOne({ name: 'node' });
  const n = await col.countDocuments({});
  const names = (await col.find({}, { batchSize: 2 }).sort({ name: 1 }).toArray()).map(d => d.name);
  console.log(JSON.stringify({ n, names }));
  await c.close();
})().catch(e => { console.error(e); process.exit(1); });
""")
    res = ok(jail.run(["node", script, str(NODE_DIR / "node_modules" / "mongodb")],
                      rules=rules("basic.yaml")))
    out = last_json(res)
    assert out["n"] == 4
    assert out["names"] == ["alice", "bob", "carol", "node"]
