"""Job queues nobody here wrote, run unchanged against the Redis
responder inside the jail (issue #16): BullMQ (node; Lua scripts with
cmsgpack, streams for its events, BZPOPMIN for its marker) and RQ
(Python; MULTI with XADD for results, pipelines, blocking pops). Every
name is under .test.
"""
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON

HERE = Path(__file__).resolve().parent
RULES = str(HERE / "redis_rules" / "basic.yaml")
NODE_DIR = HERE / "node"

HAVE_BULLMQ = shutil.which("node") is not None and (NODE_DIR / "node_modules" / "bullmq").is_dir()
HAVE_RQ = subprocess.run([PYTHON, "-c", "import rq"], capture_output=True).returncode == 0


def ok(res):
    assert res.returncode == 0, res.describe()
    return res


@pytest.mark.skipif(not HAVE_BULLMQ, reason="bullmq not installed in tests/node")
def test_bullmq_worker_completes_retries_and_delays_jobs(jail):
    script = jail.write("bull.js", r'''
const { Queue, Worker, QueueEvents } = require(process.argv[2]);
const connection = { host: "redis.test", port: 6379, maxRetriesPerRequest: null };
(async () => {
  const events = new QueueEvents("orders", { connection });
  const heard = [];
  events.on("completed", ({ jobId }) => heard.push(jobId));
  await events.waitUntilReady();
  const queue = new Queue("orders", { connection });
  const attempts = {};
  const order = [];
  const worker = new Worker("orders", async job => {
    attempts[job.name] = (attempts[job.name] || 0) + 1;
    if (job.name === "flaky" && attempts[job.name] === 1) throw new Error("boom once");
    order.push(job.name);
    return { name: job.name, doubled: job.data.x * 2 };
  }, { connection });
  const t0 = Date.now();
  const plain = await queue.add("plain", { x: 1 });
  const delayed = await queue.add("delayed", { x: 2 }, { delay: 500 });
  const flaky = await queue.add("flaky", { x: 3 }, { attempts: 2, backoff: { type: "fixed", delay: 100 } });
  const results = await Promise.all([plain, delayed, flaky].map(j => j.waitUntilFinished(events, 20000)));
  const delayedAfter = Date.now() - t0;
  await new Promise(r => setTimeout(r, 300));
  const out = {
    results, order, attempts, delayedAfter,
    counts: await queue.getJobCounts("completed", "failed", "delayed", "wait", "active"),
    heard: heard.sort(),
    flakyState: await (await queue.getJob(flaky.id)).getState(),
    flakyAttempts: (await queue.getJob(flaky.id)).attemptsMade,
  };
  await worker.close(); await queue.close(); await events.close();
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch(e => { console.error(e); process.exit(1); });
''')
    res = ok(jail.run(["timeout", "60", "node", script, str(NODE_DIR / "node_modules" / "bullmq")],
                      rules=RULES))
    out = res.json_out()
    assert out["results"] == [{"name": "plain", "doubled": 2}, {"name": "delayed", "doubled": 4},
                              {"name": "flaky", "doubled": 6}]
    assert out["attempts"] == {"plain": 1, "delayed": 1, "flaky": 2}
    assert out["order"].index("delayed") > out["order"].index("plain")
    assert out["delayedAfter"] >= 500
    assert out["counts"] == {"completed": 3, "failed": 0, "delayed": 0, "wait": 0, "active": 0}
    assert out["heard"] == sorted(["1", "2", "3"])
    assert out["flakyState"] == "completed" and out["flakyAttempts"] == 2
    # Its scripts ran, and its events went through a stream.
    names = {e.get("command") for e in res.events if e.get("kind") == "redis"}
    assert {"EVALSHA", "XREAD"} <= names or {"EVAL", "XREAD"} <= names, names


@pytest.mark.skipif(not HAVE_RQ, reason="python `rq` not installed")
def test_rq_worker_runs_enqueued_jobs(jail):
    jail.write("tasks.py", "def add(a, b):\n    return a + b\n\ndef shout(s):\n    return s.upper()\n")
    script = jail.write("rq_run.py", r'''
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from redis import Redis
from rq import Queue, Worker
from rq.job import Job

r = Redis(host="redis.test", port=6379)
q = Queue("default", connection=r)
jobs = [q.enqueue("tasks.add", 2, 3), q.enqueue("tasks.shout", "hi")]
failing = q.enqueue("tasks.add", 1, "x")
# The worker's command channel (a pub/sub thread) is left out: redis-py's
# thread can hang on unsubscribe, a client race, whatever the server says.
Worker.subscribe = lambda self: None
Worker.unsubscribe = lambda self: None
worked = Worker([q], connection=r).work(burst=True)
out = {"worked": worked}
out["results"] = [Job.fetch(j.id, connection=r).return_value() for j in jobs]
out["statuses"] = [Job.fetch(j.id, connection=r).get_status() for j in jobs]
f = Job.fetch(failing.id, connection=r)
out["failed"] = [f.get_status(), "TypeError" in (f.latest_result().exc_string or "")]
out["queue_left"] = q.count
print(json.dumps(out))
''')
    res = ok(jail.run(["timeout", "60", PYTHON, script], rules=RULES))
    out = res.json_out()
    assert out["worked"] is True
    assert out["results"] == [5, "HI"]
    assert out["statuses"] == ["finished", "finished"]
    assert out["failed"] == ["failed", True]
    assert out["queue_left"] == 0
    assert any(e.get("command") == "XADD" for e in res.events if e.get("kind") == "redis")
