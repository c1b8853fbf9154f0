"""The control plane with both protocols at once: a long-running program in
the jail calls an HTTP service and a Redis service in a loop while the test
swaps the rules, resets responder state and verifies expectations through
the admin API (python requests on the host side, redis-py and requests
inside the jail).

Network safety: the admin API is on 127.0.0.1; the SUT only uses .test
names, answered by meshwrap's responders.
"""
import json
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import PYTHON, closed_port, jail_env, wait_for

RULES = Path(__file__).resolve().parent / "control_rules" / "mixed.yaml"

SUT = r'''
import json, os, sys, time
import redis, requests
out, stop = sys.argv[1], sys.argv[2]
with open(out, "a") as f:
    while not os.path.exists(stop):
        rec = {"t": time.time()}
        try:
            # A new connection per call, for both protocols: a kept-alive
            # one would keep the rules it started with across a reload, by
            # design. The Redis one is opened after the HTTP answer came.
            with requests.Session() as s:
                s.trust_env = False
                rec["version"] = s.get("http://api.mixed.test/version", timeout=5).json()["version"]
            with redis.Redis(host="cache.mixed.test", port=6379, socket_timeout=5) as r:
                rec["hits"] = r.incr("hits")
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {e}"
        f.write(json.dumps(rec) + "\n")
        f.flush()
        time.sleep(0.03)
'''


def records(path):
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


@pytest.fixture
def mixed(meshwrap_bin, tmp_path):
    port = closed_port()
    admin = f"http://127.0.0.1:{port}"
    out, stop = tmp_path / "sut.jsonl", tmp_path / "stop"
    (tmp_path / "sut.py").write_text(SUT)
    proc = subprocess.Popen(
        [meshwrap_bin, "--quiet", "--no-verify", "--admin", f"127.0.0.1:{port}",
         "--rules", str(RULES), "--", PYTHON, str(tmp_path / "sut.py"), str(out), str(stop)],
        env=jail_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    ready = wait_for(lambda: _ok(f"{admin}/readyz"), 15)
    assert ready, "meshwrap's /readyz never answered 200"
    yield admin, out
    stop.write_text("stop")
    try:
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read().decode()


def _ok(url):
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_reload_reset_and_verify_while_the_sut_loops(mixed):
    admin, out = mixed
    assert wait_for(lambda: len(records(out)) >= 10, 15), records(out)
    first = records(out)
    assert all("error" not in r for r in first), first
    assert all(r["version"] == 1 for r in first)
    # Redis state is shared across the SUT's commands: hits counts up from the seed.
    hits = [r["hits"] for r in first]
    assert hits == list(range(101, 101 + len(hits))), hits

    # Verify: both protocols' journals count.
    v = requests.post(f"{admin}/verify", data=(
        "- { service: api, route: version, at_least: 5 }\n"
        "- { service: cache, command: INCRBY, key: hits, at_least: 5 }\n"  # redis-py sends INCRBY
        "- { service: cache, command: DEL, never: true }\n"), timeout=5).json()
    assert v["ok"], v
    v = requests.post(f"{admin}/verify", data="- { service: cache, command: GET, at_least: 1 }\n",
                      timeout=5).json()
    assert not v["ok"] and v["results"][0]["calls"] == 0, v

    # Reset the Redis service: its keyspace goes back to the seed, so the
    # first INCR after the reset answers 101 again, and the ones after it
    # count up from there.
    n = len(records(out))
    assert records(out)[n - 1]["hits"] > 101  # counted up before the reset
    r = requests.post(f"{admin}/reset?service=cache", timeout=5)
    assert r.status_code == 200 and r.json()["reset"] == ["cache"], r.text
    assert wait_for(lambda: [x for x in records(out)[n:] if x.get("hits") == 101]
                    and len(records(out)) >= n + 5, 15), records(out)[n:]
    after = [x.get("hits") for x in records(out)[n:]]
    restart = after.index(101)
    assert after[restart:] == list(range(101, 101 + len(after) - restart)), after

    # Swap the rules: HTTP answers version 2 and Redis starts from a new seed.
    new = RULES.read_text().replace("version: 1", "version: 2").replace("hits: 100", "hits: 5000")
    r = requests.put(f"{admin}/rules", data=new, timeout=5)
    assert r.status_code == 200 and r.json()["ok"], r.text
    n = len(records(out))
    assert wait_for(lambda: sum(1 for x in records(out)[n:] if x.get("version") == 2) >= 3, 15)
    assert all("error" not in x for x in records(out)), [x for x in records(out) if "error" in x]
    # The new set's Redis service starts from its own seed. A call whose
    # HTTP answer says version 2 opened its Redis connection after that, so
    # under the new rules: it and every call after it count up from 5000
    # (the call just before may too, if the swap fell between its two
    # connections), with no gap.
    recs = records(out)[n:]
    first_v2 = next(i for i, x in enumerate(recs) if x["version"] == 2)
    assert all(x["version"] == 2 for x in recs[first_v2:]), recs
    assert all(x["hits"] > 5000 for x in recs[first_v2:]), recs
    new_seed = [x["hits"] for x in recs if x["hits"] > 5000]
    assert new_seed == list(range(5001, 5001 + len(new_seed))), recs

    # An invalid rule set is refused and the old one keeps answering.
    bad = requests.put(f"{admin}/rules", data="services:\n  - name: x\n    matc: {}\n", timeout=5)
    assert bad.status_code == 400 and ":3:" in bad.json()["error"], bad.text
    n = len(records(out))
    assert wait_for(lambda: len(records(out)) >= n + 3, 15)
    assert all(x.get("version") == 2 for x in records(out)[n:]), records(out)[n:]

    # Metrics count both protocols.
    m = requests.get(f"{admin}/metrics", timeout=5).text
    assert 'protocol="http"' in m and 'protocol="redis"' in m, m
