"""What a newcomer runs into in the first hour (#15): where the events go,
and what the exit summary tells about requests no rule answered.

Network safety: names under .test only, answered by meshwrap's mocks.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import CURL, PYTHON, jail_env

RULES = """
services:
  - name: api
    match: { host: api.new.test }
    http:
      routes:
        - name: charge
          when: { method: POST, path: /v1/charges, form: { currency: eur } }
          respond: { status: 201, json: { id: ch_1 } }
"""


def test_events_to_a_descriptor_keep_stdout_the_suts(jail, tmp_path):
    """`--events fd:3` writes the JSON lines to descriptor 3 (here a file
    the caller opened); the SUT's stdout holds only what it printed, and
    the SUT does not inherit descriptor 3."""
    out_path = tmp_path / "events-fd.jsonl"
    args, _ = jail.command([*CURL, "-o", "/dev/null", "-w", "%{http_code}\\n",
                            "http://api.new.test/v1/charges", "-d", "currency=eur"],
                           rules=RULES, events=False, opts=["--events", "fd:3"])
    script = jail.write("fd3.sh", 'exec "$@" 3>"$EVENTS"\n')
    probe = jail.command(["sh", "-c", "if [ -e /proc/$$/fd/3 ]; then echo leaked; else echo closed; fi"],
                         events=False,
                         opts=["--events", "fd:3"])[0]
    env = jail_env({"EVENTS": str(out_path)})
    res = subprocess.run(["sh", script, *args], capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "201\n", res.stdout
    kinds = [json.loads(l)["kind"] for l in out_path.read_text().splitlines()]
    assert "flow" in kinds and "http" in kinds, kinds
    fds = subprocess.run(["sh", script, *probe], capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, timeout=120)
    assert fds.returncode == 0, fds.stderr
    assert fds.stdout == "closed\n", f"the SUT inherited the events descriptor: {fds.stdout}"


def test_events_to_stderr_and_dash_refused_in_a_run(jail):
    res = jail.run([*CURL, "-o", "/dev/null", "http://api.new.test/v1/charges", "-d", "currency=eur"],
                   rules=RULES, events=False, opts=["--events", "stderr"])
    assert res.returncode == 0, res.describe()
    lines = [json.loads(l) for l in res.stderr.splitlines() if l.startswith("{")]
    assert any(e["kind"] == "http" for e in lines), res.describe()
    assert res.stdout == "", res.describe()
    dash = jail.run(["true"], events=False, opts=["--events", "-"])
    assert dash.returncode == 2, dash.describe()
    assert "stdout is the SUT's in a run" in dash.stderr and "--events fd:3" in dash.stderr, dash.describe()
    closed = jail.run(["true"], events=False, opts=["--events", "fd:7"])
    assert closed.returncode == 2 and "descriptor 7 is not open" in closed.stderr, closed.describe()


def test_summary_shows_why_requests_went_unanswered(jail):
    """The near-miss of each request no route answered is in the exit
    summary, not only in the events: the first few, then a count."""
    script = " ; ".join(
        [f"{' '.join(CURL)} -s -o /dev/null http://api.new.test/v1/charges -d currency=usd"] * 7)
    res = jail.run(["sh", "-c", script], rules=RULES)
    assert res.returncode == 0, res.describe()
    assert "requests no rule answered (7):" in res.stderr, res.describe()
    assert "    api: POST /v1/charges -> 404 (fallback)" in res.stderr, res.describe()
    assert "      nearly `charge`: form field currency" in res.stderr, res.describe()
    assert res.stderr.count("nearly `charge`") == 5, res.describe()
    assert "… and 2 more" in res.stderr, res.describe()


def test_refused_https_gets_the_mock_snippet_first(jail):
    """A refused call to port 443 is offered a mock to paste, with `pass`
    only as the alternative that sends real traffic out."""
    res = jail.run([*CURL, "-s", "https://pay.real.test/"], unmatched="refuse")
    lines = res.stderr.splitlines()
    at = lines.index("      match: { host: pay.real.test, port: 443 }")
    assert lines[at + 1].strip().startswith("http: { routes:"), res.describe()
    assert "pass: {}" in lines[at + 2] and "traffic leaves the jail" in lines[at + 2], res.describe()
    # The snippet, pasted as it is, mocks the call on the next run.
    snippet = "services:\n" + "\n".join(lines[at - 1:at + 2]) + "\n"
    again = jail.run([*CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}", "https://pay.real.test/"],
                     rules=snippet, unmatched="refuse")
    assert again.stdout == "200", again.describe()


KAFKA_REDIS_RULES = """
services:
  - name: bus
    match: { host: kafka.new.test, port: 9092 }
    kafka:
      topics:
        orders: { partitions: 1, messages: [ { key: o1, value: paid } ] }
  - name: cache
    match: { host: redis.new.test, port: 6379 }
    redis: {}
"""

HANDSHAKES = """
import time
import redis
from confluent_kafka import Consumer
r = redis.Redis(host="redis.new.test", protocol=3)
r.set("k", "v")
print("redis", r.get("k").decode())
c = Consumer({"bootstrap.servers": "kafka.new.test:9092", "group.id": "g",
              "auto.offset.reset": "earliest"})
c.subscribe(["orders"])
got, deadline = None, time.time() + 30
while got is None and time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and not m.error():
        got = m.value().decode()
c.close()
print("kafka", got)
"""


def test_protocol_handshake_replies_are_not_errors(jail):
    """A consumer group join starts with MEMBER_ID_REQUIRED and redis-py
    probes CLIENT MAINT_NOTIFICATIONS, expecting the error Redis gives:
    both are steps of the protocol, reported as `handshake`, and the
    summary counts no error for them."""
    pytest.importorskip("confluent_kafka")
    res = jail.run([PYTHON, jail.write("hs.py", HANDSHAKES)],
                   rules=KAFKA_REDIS_RULES)
    assert res.returncode == 0, res.describe()
    assert "redis v" in res.stdout and "kafka paid" in res.stdout, res.describe()
    steps = [(e["kind"], e["operation"]) for e in res.events if e.get("outcome") == "handshake"]
    assert ("kafka", "join_group") in steps, res.describe()
    assert not [e for e in res.events if e.get("outcome") == "error"], res.describe()
    for line in res.stderr.splitlines():
        if line.strip().startswith(("bus:", "cache:")):
            assert ", 0 errors (" in line, res.describe()


def test_the_gateway_reaches_a_host_server_bound_to_one_family(jail, echo_server):
    """host.meshwrap.internal has an IPv4 and an IPv6 address; a client
    that picks IPv6 and does not fall back (iperf3 does this) still
    reaches a server bound to 127.0.0.1 only: meshwrap tries the other
    loopback before it tells the SUT the connection was refused."""
    code = ("import socket\n"
            f"s = socket.create_connection(('fd00:6d77::2', {echo_server.port}), timeout=10)\n"
            "s.sendall(b'ping'); s.shutdown(socket.SHUT_WR)\n"
            "print(s.recv(100).decode())\n")
    res = jail.run([PYTHON, "-c", code])
    assert res.returncode == 0, res.describe()
    assert res.stdout.strip() == "ping", res.describe()
    flow = [f for f in res.flows() if f["dst_port"] == echo_server.port]
    assert flow and flow[0]["decision"] == "pass" and flow[0]["upstream"].startswith("127.0.0.1:"), \
        res.describe()


def test_secrets_the_sut_sends_are_redacted_in_what_is_recorded(jail):
    """Credentials in headers, keys in the query and passwords in a form
    body never reach the events, the journal or the summary by default;
    `--no-redact` records them as sent. The mock still sees them: a route
    that needs the key answers."""
    rules = """
services:
  - name: auth
    match: { host: auth.new.test }
    http:
      routes:
        - name: token
          when: { method: POST, path: /oauth/token, headers: { x-api-key: key-4711 } }
          respond: { json: { access_token: minted } }
"""
    cmd = [*CURL, "-s", "http://auth.new.test/oauth/token?api_key=qk-0815&page=2",
           "-H", "Authorization: Bearer tok-abcdef", "-H", "X-Api-Key: key-4711",
           "-d", "grant_type=password&username=ann&password=hunter2-pw",
           "-o", "/dev/null", "-w", "%{http_code} ",
           "--next", "-s", "http://auth.new.test/other?token=tk-miss", "-H", "X-Api-Key: key-0000",
           "-o", "/dev/null", "-w", "%{http_code}"]
    res = jail.run(cmd, rules=rules)
    assert res.stdout == "200 404", res.describe()
    text = open(res.events_path).read() + res.stderr
    # key-4711 is also the rules' own value, which a near miss quotes.
    for secret in ("tok-abcdef", "qk-0815", "hunter2-pw", "tk-miss", "key-0000"):
        assert secret not in text, f"{secret} was recorded: {res.describe()}"
    assert 'header x-api-key: "[redacted]" does not match "key-4711"' in res.stderr, res.describe()
    ex = [e for e in res.events if e["kind"] == "http"]
    hit = ex[0]
    assert hit["request_headers"]["authorization"] == "Bearer [redacted]", hit
    assert hit["query"] == "api_key=[redacted]&page=2", hit
    assert "username=ann" in hit["request_body"] and "password=[redacted]" in hit["request_body"], hit
    kept = jail.run(cmd, rules=rules, opts=["--no-redact"])
    kept_text = open(kept.events_path).read()
    assert "tok-abcdef" in kept_text and "hunter2-pw" in kept_text, kept.describe()


def check_golden(meshwrap_bin, tmp_path, cases):
    """Each file of `cases` fails `meshwrap check` with exactly its line."""
    for i, (text, want) in enumerate(cases):
        path = tmp_path / f"golden{i}.yaml"
        path.write_text(text)
        res = subprocess.run([meshwrap_bin, "check", str(path)], capture_output=True, text=True)
        assert res.returncode == 1, (text, res.stdout, res.stderr)
        assert f"{path}:{want}" in res.stderr, f"{text!r}\nwant: {want}\ngot:  {res.stderr}"


# (file text, the line `meshwrap check` prints for it, after "FILE:")
CHECK_GOLDEN = [
    ("services:\n  - name: a\n    match: { host: a.test }\n    http:\n      routes:\n"
     "        - when: { path: /x }\n          respond: { status: 200\n",
     "8:1: services[0].http.routes[0].respond: a `{ … }` mapping is not closed: expected `,` or `}` "
     "(a value with `,`, `:` or `}` in it needs quotes)"),
    ("services:\n  - name: a\n    match: { host: a.test, port: https }\n    http: {}\n",
     "3:34: services[0].match.port: `https` is a service name, not a port: write its number (443)"),
    ("services:\n  - name: a\n    match: { host: a.test, port: 80-eighty }\n    http: {}\n",
     "3:34: services[0].match.port: `eighty` is not a port (1-65535) in the range `80-eighty`"),
    ("services:\n  - name: a\n    match: { host: a.test }\n    http:\n      routes:\n"
     "        - when: { path: /x }\n          respond: { status: two }\n",
     "7:30: services[0].http.routes[0].respond.status: expected a whole number from 0 to 65535, "
     "found the text \"two\""),
    ("services:\n  - name: a\n    match: { host: a.test }\n   http: {}\n",
     "4:4: services: this line does not line up with the list above it: list entries start with `- ` "
     "at the same indentation; check the indentation"),
    ("services:\n  - name: a\n    match: { host: a.test }\n    http:\n      routes:\n"
     "        - when: path: /x\n",
     "6:17: services[0].http.routes[0].when: expected a mapping (`key: value` lines or "
     "`{ key: value }`), found the text \"path\""),
]


def test_check_explains_yaml_and_type_mistakes_in_plain_words(meshwrap_bin, tmp_path):
    """Golden: the parser's wording (`did not find expected …`, a path
    ending in `?`) and Rust's types (`u16`, `struct MatchSpec`) become
    sentences that say what to fix; a port written as a name says so."""
    check_golden(meshwrap_bin, tmp_path, CHECK_GOLDEN)


EXPECT_GOLDEN = [
    ("services:\n  - name: cache\n    match: { host: r.test, port: 6379 }\n    redis: {}\n"
     "expect:\n  - { service: cache, command: insrt }\n",
     "6:23: expect[0]: `insrt` is not a Redis command meshwrap answers; did you mean `incr`?"),
    ("services:\n  - name: bus\n    match: { host: k.test, port: 9092 }\n    kafka:\n"
     "      auto_create_topics: false\n      topics: { orders: { partitions: 1 } }\n"
     "expect:\n  - { service: bus, topic: order }\n",
     "8:21: expect[0]: topic `order` is not declared and `auto_create_topics` is off, so no record "
     "can reach it; did you mean `orders`?"),
    ("services:\n  - name: cache\n    match: { host: r.test, port: 6379 }\n    redis: {}\n"
     "expect:\n  - { service: cache, route: INCRBY }\n",
     "6:23: expect[0]: `route` is not a field of Redis expectations: such fields apply to HTTP "
     "services, and `cache` is not one (Redis expectations take `command`, `key`)"),
]


def test_check_refuses_expectations_that_cannot_match(meshwrap_bin, tmp_path):
    """Golden: an expectation that no call could ever meet is a `check`
    error with the closest valid name, not a failure after the run."""
    check_golden(meshwrap_bin, tmp_path, EXPECT_GOLDEN)
    ok = tmp_path / "autocreate.yaml"
    ok.write_text(EXPECT_GOLDEN[1][0].replace("auto_create_topics: false", "auto_create_topics: true"))
    res = subprocess.run([meshwrap_bin, "check", str(ok)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_a_files_default_fallback_gives_api_shaped_errors(jail):
    """`defaults: { http: { fallback } }` answers unmatched requests of
    every service of the file in the API's error shape (what a typed SDK
    can read); a service's own `fallback` wins. The example file is the
    one rules/README shows."""
    example = str(Path(__file__).resolve().parent.parent / "rules" / "examples" / "api-errors.yaml")
    script = (f"{' '.join(CURL)} -s -i http://api.payments.test/v1/nope; echo; echo ===; "
              f"{' '.join(CURL)} -s http://api.ledger.test/v1/nope")
    res = jail.run(["sh", "-c", script], rules=example)
    assert res.returncode == 0, res.describe()
    typed, own = res.stdout.split("===")
    head, body = typed.split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 404"), res.describe()
    assert "request-id: req_" in head.lower(), res.describe()
    assert json.loads(body) == {"error": {"type": "invalid_request_error",
                                          "message": "Unrecognized request URL (GET: /v1/nope)"}}
    assert json.loads(own)["error"] == "no route matched", res.describe()
    other = jail.run([*CURL, "-s", "http://api.other.test/x"], rules=[example, """
services:
  - name: other
    match: { host: api.other.test }
    http: {}
"""])
    assert json.loads(other.stdout)["error"] == "no route matched", other.describe()
