"""Integration tests for meshwrap's HTTP responder (`services[].http`).

Every test runs the real binary with real clients inside the jail (curl,
python requests, httpx, raw sockets) against services mocked from the YAML
files in tests/http_rules/. Requests go to names under .test (claimed by a
service) or, for `fallback: pass`, to the test's own server on 127.0.0.1.

To keep the file fast, a test usually runs one in-jail python script that
makes many requests and prints their results as one JSON line.
"""
import base64
import importlib.util
import json
import re
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import CURL, PYTHON

RULES = Path(__file__).resolve().parent / "http_rules"

HAVE_H2 = importlib.util.find_spec("h2") is not None

# RFC 3339 as meshwrap writes it: 2026-11-25T15:12:50.306298024Z
RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")

BIG_BODY = b"0123456789" * 2000  # faults.yaml's reset-mid / truncate bodies


def rules(name):
    return str(RULES / name)


def ok(res, code=0):
    assert res.returncode == code, (
        f"expected exit code {code}, got {res.returncode}\n{res.describe()}")
    return res


def http_events(res, **match):
    return [e for e in res.events if e.get("kind") == "http"
            and all(e.get(k) == v for k, v in match.items())]


def parse_time(s):
    m = RFC3339.match(s or "")
    assert m, f"not an RFC 3339 timestamp: {s!r}"
    return datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))


def assert_recent(s):
    t = parse_time(s)
    now = datetime.now(timezone.utc)
    assert abs((now - t).total_seconds()) < 300, f"timestamp {s} is not now ({now})"


def is_uuid(s):
    try:
        return str(uuid.UUID(s)) == s.lower()
    except (ValueError, TypeError, AttributeError):
        return False


# --------------------------------------------------------------------------
# in-jail clients

# Runs a list of requests (a JSON file) with one requests.Session and prints
# the results as one JSON line.
BATCH = r'''
import base64, json, sys, time
import requests

reqs = json.load(open(sys.argv[1]))
s = requests.Session()
s.trust_env = False
out = []
for r in reqs:
    t0 = time.monotonic()
    try:
        resp = s.request(r.get("method", "GET"), r["url"], headers=r.get("headers"),
                         data=r.get("data"), json=r.get("json"),
                         timeout=r.get("timeout", 30), allow_redirects=False)
        out.append({"status": resp.status_code, "text": resp.text,
                    "headers": {k.lower(): v for k, v in resp.headers.items()},
                    "b64": base64.b64encode(resp.content).decode(),
                    "elapsed": time.monotonic() - t0})
    except Exception as e:
        out.append({"exc": type(e).__name__, "error": str(e),
                    "elapsed": time.monotonic() - t0})
print(json.dumps(out))
'''


def batch(jail, rules_file, reqs, **kw):
    """Runs `reqs` (dicts: method, url, headers, data, json, timeout) in
    the jail; returns the JailResult and the list of results."""
    script = jail.write("batch.py", BATCH)
    req_file = jail.write("requests.json", json.dumps(reqs))
    res = jail.run([PYTHON, script, req_file], rules=rules_file, **kw)
    ok(res)
    out = res.json_out()
    assert len(out) == len(reqs), res.describe()
    return res, out


def pyrun(jail, rules_file, code, *args, **kw):
    """Runs a python script in the jail; it must print one JSON line last."""
    script = jail.write("script.py", "import json, sys, time, subprocess\n"
                        f"CURL = {CURL!r}\n" + code)
    res = jail.run([PYTHON, script, *map(str, args)], rules=rules_file, **kw)
    return res


def b64(result):
    return base64.b64decode(result["b64"])


# ==========================================================================
# 1: clients and HTTP versions


CLIENT_CODE = r'''
kind = sys.argv[1]
url = "http://api.clients.test/hello"
if kind.startswith("curl"):
    flag = "--http1.1" if kind == "curl-http1.1" else "--http2-prior-knowledge"
    p = subprocess.run(CURL + [flag, "-i", url], capture_output=True)
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status_line = lines[0]
    headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
    print(json.dumps({"rc": p.returncode, "stderr": p.stderr.decode(),
                      "version": status_line.split()[0], "status": int(status_line.split()[1]),
                      "headers": headers, "body": body.decode()}))
elif kind == "requests":
    import requests
    s = requests.Session(); s.trust_env = False
    r = s.get(url, timeout=30)
    print(json.dumps({"rc": 0, "version": "HTTP/1.1" if r.raw.version == 11 else str(r.raw.version),
                      "status": r.status_code, "headers": {k.lower(): v for k, v in r.headers.items()},
                      "body": r.text}))
else:
    import httpx
    h2 = kind == "httpx-http2"
    with httpx.Client(http1=not h2, http2=h2, trust_env=False, timeout=30) as c:
        r = c.get(url)
        r2 = c.get(url)  # a second request on the same connection
    print(json.dumps({"rc": 0, "version": r.http_version, "status": r.status_code,
                      "headers": {k.lower(): v for k, v in r.headers.items()},
                      "body": r.text, "second": [r2.status_code, r2.text]}))
'''

CLIENTS = [
    pytest.param("curl-http1.1", "HTTP/1.1", "HTTP/1.1", "http1", id="curl-http1.1"),
    pytest.param("curl-http2", "HTTP/2", "HTTP/2.0", "http2", id="curl-http2-prior-knowledge"),
    pytest.param("requests", "HTTP/1.1", "HTTP/1.1", "http1", id="requests"),
    pytest.param("httpx-http1", "HTTP/1.1", "HTTP/1.1", "http1", id="httpx"),
    pytest.param("httpx-http2", "HTTP/2", "HTTP/2.0", "http2", id="httpx-http2",
                 marks=pytest.mark.skipif(not HAVE_H2, reason="the h2 package is not installed")),
]


@pytest.mark.parametrize("kind,client_version,event_version,protocol", CLIENTS)
def test_clients_get_the_mocked_answer(jail, kind, client_version, event_version, protocol):
    res = ok(pyrun(jail, rules("clients.yaml"), CLIENT_CODE, kind))
    got = res.json_out()
    assert got["rc"] == 0, f"{got}\n{res.describe()}"
    assert got["version"] == client_version, got
    assert got["status"] == 200, got
    assert json.loads(got["body"]) == {"hello": "world", "n": 42}, got
    assert got["headers"].get("x-mock") == "clients", got
    assert got["headers"].get("content-type") == "application/json", got
    if "second" in got:
        assert got["second"][0] == 200 and json.loads(got["second"][1])["n"] == 42, got
    evs = http_events(res, service="clients")
    assert evs, res.describe()
    assert all(e["route"] == "hello" and e["status"] == 200 for e in evs), evs
    assert all(e["version"] == event_version for e in evs), evs
    flows = res.flows(host="api.clients.test")
    assert flows and all(f["decision"] == "mock" and f["protocol"] == protocol
                         for f in flows), flows


# ==========================================================================
# 2: matchers


M = "http://api.match.test"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

# Each case: requests with the route expected to answer (None: the 404
# fallback) and, where the route templates it, the expected body.
MATCHER_CASES = {
    "method": [
        ({"method": "DELETE", "url": f"{M}/m"}, "method-delete", None),
        ({"method": "GET", "url": f"{M}/m"}, "method-get-or-put", None),
        ({"method": "PUT", "url": f"{M}/m", "data": "x"}, "method-get-or-put", None),
        ({"method": "POST", "url": f"{M}/m", "data": "x"}, None, None),
        ({"method": "PATCH", "url": f"{M}/m", "data": "x"}, None, None),
    ],
    "exact-path": [
        ({"url": f"{M}/exact/path"}, "exact", None),
        ({"url": f"{M}/exact/path?with=query"}, "exact", None),
        ({"url": f"{M}/exact/path/more"}, None, None),
        ({"url": f"{M}/exact"}, None, None),
        ({"url": f"{M}/exact/pathX"}, None, None),
    ],
    "param": [
        ({"url": f"{M}/users/42/orders/abc"}, "param", "param 42 abc"),
        ({"url": f"{M}/users/a%20b/orders/x-1"}, "param", "param a b x-1"),
        ({"url": f"{M}/users/42/orders"}, None, None),
        ({"url": f"{M}/users/42/orders/abc/extra"}, None, None),
    ],
    "star": [
        ({"url": f"{M}/star/anything/end"}, "star", None),
        ({"url": f"{M}/star/x.y-z/end"}, "star", None),
        ({"url": f"{M}/star/a/b/end"}, None, None),
        ({"url": f"{M}/star/end"}, None, None),
    ],
    "doublestar": [
        ({"url": f"{M}/deep/leaf"}, "doublestar", None),
        ({"url": f"{M}/deep/a/leaf"}, "doublestar", None),
        ({"url": f"{M}/deep/a/b/c/leaf"}, "doublestar", None),
        ({"url": f"{M}/deep/a/b/c"}, None, None),
        ({"url": f"{M}/deep/a/leaf/x"}, None, None),
    ],
    "path-regex": [
        ({"url": f"{M}/re/2024-hello"}, "regex", "regex 2024 hello"),
        ({"url": f"{M}/re/1999-x"}, "regex", "regex 1999 x"),
        ({"url": f"{M}/re/24-hello"}, None, None),
        ({"url": f"{M}/re/2024-Hello"}, None, None),
        ({"url": f"{M}/re/2024-hello/x"}, None, None),
    ],
    "query": [
        ({"url": f"{M}/q?kind=blueberry&page=3"}, "query", None),
        ({"url": f"{M}/q?page=12&other=z&kind=blue"}, "query", None),
        ({"url": f"{M}/q?kind=blue%20sky&page=1"}, "query", None),
        ({"url": f"{M}/q?kind=red&page=3"}, None, None),
        ({"url": f"{M}/q?kind=blue&page=x"}, None, None),
        ({"url": f"{M}/q?kind=blue"}, None, None),
        ({"url": f"{M}/q"}, None, None),
    ],
    "headers": [
        ({"url": f"{M}/h", "headers": {"X-Api-Key": "secret", "Accept": "application/json",
                                       "X-Trace": "0a1b2c3d", "X-Other": "extra"}}, "headers", None),
        ({"url": f"{M}/h", "headers": {"x-api-key": "secret", "ACCEPT": "application/xml",
                                       "x-trace": "deadbeef"}}, "headers", None),
        ({"url": f"{M}/h", "headers": {"X-Api-Key": "wrong", "Accept": "application/json",
                                       "X-Trace": "0a1b2c3d"}}, None, None),
        ({"url": f"{M}/h", "headers": {"X-Api-Key": "secret", "Accept": "text/html",
                                       "X-Trace": "0a1b2c3d"}}, None, None),
        ({"url": f"{M}/h", "headers": {"X-Api-Key": "secret", "Accept": "application/json",
                                       "X-Trace": "0A1B2C3D"}}, None, None),
        ({"url": f"{M}/h", "headers": {"X-Api-Key": "secret", "Accept": "application/json"}},
         None, None),
    ],
    "body": [
        ({"method": "POST", "url": f"{M}/body", "data": "ping"}, "body-exact", None),
        ({"method": "POST", "url": f"{M}/body", "data": "ping\n"}, None, None),
        ({"method": "POST", "url": f"{M}/body", "data": "PING"}, None, None),
        ({"method": "GET", "url": f"{M}/body", "data": "ping"}, None, None),
    ],
    "body-regex": [
        ({"method": "POST", "url": f"{M}/body", "data": "please ship order-1234 today"},
         "body-regex", None),
        ({"method": "POST", "url": f"{M}/body", "data": "order-7"}, "body-regex", None),
        ({"method": "POST", "url": f"{M}/body", "data": "order-x"}, None, None),
        ({"method": "POST", "url": f"{M}/body"}, None, None),
    ],
    "json": [
        ({"method": "POST", "url": f"{M}/json", "json": {"b": [1, 2], "a": 1}}, "json-eq", None),
        ({"method": "POST", "url": f"{M}/json", "data": '{ "a" : 1, "b" : [ 1 , 2 ] }'},
         "json-eq", None),
        ({"method": "POST", "url": f"{M}/json", "json": {"a": 1, "b": [2, 1]}}, None, None),
        ({"method": "POST", "url": f"{M}/json", "json": {"a": 1, "b": [1, 2], "c": 0}},
         None, None),
        ({"method": "POST", "url": f"{M}/json", "json": {"a": "1", "b": [1, 2]}}, None, None),
    ],
    "json-contains": [
        ({"method": "POST", "url": f"{M}/json",
          "json": {"user": {"role": "admin", "name": "ada"}, "tags": ["y", "x"], "extra": 1}},
         "json-contains", None),
        ({"method": "POST", "url": f"{M}/json",
          "json": {"tags": ["x"], "user": {"role": "admin"}}}, "json-contains", None),
        ({"method": "POST", "url": f"{M}/json",
          "json": {"user": {"role": "user"}, "tags": ["x"]}}, None, None),
        ({"method": "POST", "url": f"{M}/json", "json": {"user": {"role": "admin"}}}, None, None),
        ({"method": "POST", "url": f"{M}/json",
          "json": {"user": {"role": "admin"}, "tags": ["y"]}}, None, None),
        ({"method": "POST", "url": f"{M}/json", "data": "user role admin tags x"}, None, None),
    ],
    "form": [
        ({"method": "POST", "url": f"{M}/form", "headers": FORM, "data": "user=alice&pin=1234"},
         "form", None),
        ({"method": "POST", "url": f"{M}/form", "headers": FORM,
          "data": "pin=0000&x=1&user=al%69ce"}, "form", None),
        ({"method": "POST", "url": f"{M}/form", "headers": FORM, "data": "user=alice&pin=12345"},
         None, None),
        ({"method": "POST", "url": f"{M}/form", "headers": FORM, "data": "user=bob&pin=1234"},
         None, None),
        ({"method": "POST", "url": f"{M}/form", "headers": {"Content-Type": "text/plain"},
          "data": "user=alice&pin=1234"}, None, None),
    ],
    "first-match-wins": [
        ({"url": f"{M}/order/special"}, "order-first", None),
        ({"url": f"{M}/order/other"}, "order-first", None),
    ],
    "times": [
        ({"url": f"{M}/limited"}, "limited", None),
        ({"url": f"{M}/limited"}, "limited", None),
        ({"url": f"{M}/limited"}, "after-limit", None),
        ({"url": f"{M}/limited"}, "after-limit", None),
        ({"url": f"{M}/limited-alone"}, "limited-alone", None),
        ({"url": f"{M}/limited-alone"}, None, None),
        ({"url": f"{M}/limited-alone"}, None, None),
    ],
}


@pytest.mark.parametrize("kind", list(MATCHER_CASES))
def test_matcher(jail, kind):
    cases = MATCHER_CASES[kind]
    res, out = batch(jail, rules("matchers.yaml"), [c[0] for c in cases])
    for (req, route, body), got in zip(cases, out):
        what = f"{req.get('method', 'GET')} {req['url']} {req.get('headers') or ''} " \
               f"{req.get('data') or req.get('json') or ''}"
        assert "exc" not in got, f"{what}: {got}"
        if route is None:
            assert got["status"] == 404, f"{what}: expected the 404 fallback, got {got}"
            assert json.loads(got["text"])["error"] == "no route matched", got
        else:
            assert (got["status"], got["text"]) == (200, body or route), (
                f"{what}: expected route {route!r}, got {got['status']} {got['text']!r}")
    evs = http_events(res, service="match")
    assert [e["route"] for e in evs] == [c[1] for c in cases], (
        f"routes in the events: {[e['route'] for e in evs]}")
    assert [e["answered_by"] for e in evs] == [
        "route" if c[1] else "fallback" for c in cases], evs


# ==========================================================================
# 3: templating


def test_templating(jail):
    T = "http://api.tpl.test"
    reqs = [
        {"method": "POST", "url": f"{T}/items/abc?q=search", "headers": {"X-Client": "cli-1"},
         "json": {"amount": 12.5, "count": 7, "flag": True, "meta": {"k": [1, "two"]}}},
        {"method": "POST", "url": f"{T}/items/42?q=x%20y", "headers": {"X-Client": "cli-2"},
         "json": {"amount": 3}},
        {"url": f"{T}/text?name=ada"},
        {"url": f"{T}/text?name=bob"},
        {"method": "POST", "url": f"{T}/form", "data": "user=bob&x=1",
         "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    ]
    res, out = batch(jail, rules("templates.yaml"), reqs)
    r1, r2, t1, t2, f = out
    assert r1["status"] == 201 and r2["status"] == 201, out
    j1, j2 = json.loads(r1["text"]), json.loads(r2["text"])
    # path param, query, header
    assert j1["item"] == "abc" and j2["item"] == "42", (j1, j2)
    assert j1["q"] == "search" and j2["q"] == "x y", (j1, j2)
    assert j1["client"] == "cli-1" and j2["client"] == "cli-2", (j1, j2)
    # a JSON string that is exactly one {{ expr }} keeps the expression's type
    assert j1["amount"] == 12.5 and isinstance(j1["amount"], float), j1
    assert j1["count"] == 7 and isinstance(j1["count"], int), j1
    assert j1["flag"] is True, j1
    assert j1["meta"] == {"k": [1, "two"]}, j1
    assert j2["amount"] == 3 and isinstance(j2["amount"], int), j2
    assert j2["count"] is None and j2["flag"] is None, j2  # undefined -> null
    # inside a longer string it renders to text
    assert j1["label"] == "amount=12.5" and j2["label"] == "amount=3", (j1, j2)
    assert j1["method"] == "POST", j1
    assert j1["fixed"] == 7, j1
    # counter: the route's call number, typed
    assert (j1["call"], j2["call"]) == (1, 2), (j1, j2)
    # uuid: a fresh UUID per response
    assert is_uuid(j1["id"]) and is_uuid(j2["id"]) and j1["id"] != j2["id"], (j1, j2)
    # now: the current time, RFC 3339
    assert_recent(j1["at"])
    assert_recent(j2["at"])
    # templated response headers
    assert r1["headers"].get("x-item") == "item-abc", r1["headers"]
    assert r2["headers"].get("x-item") == "item-42", r2["headers"]
    assert r1["headers"].get("x-client-echo") == "cli-1/search", r1["headers"]
    # text body: filters, and a counter of its own route
    assert (t1["status"], t1["text"]) == (200, "hello ADA #1\n"), t1
    assert (t2["status"], t2["text"]) == (200, "hello BOB #2\n"), t2
    assert t1["headers"]["content-type"].startswith("text/plain"), t1
    # form fields and the raw body
    assert json.loads(f["text"]) == {"user": "bob", "raw": "user=bob&x=1"}, f


# ==========================================================================
# 4: responses


def test_response_bodies_status_headers(jail):
    R = "http://api.resp.test"
    paths = ["/text", "/json", "/bytes", "/file", "/binfile", "/custom", "/empty"]
    res, out = batch(jail, rules("responses.yaml"), [{"url": R + p} for p in paths])
    text, js, byt, fil, binf, custom, empty = out

    assert (text["status"], text["text"]) == (200, "plain text body\n"), text
    assert text["headers"]["content-type"].startswith("text/plain"), text

    assert js["status"] == 200 and js["headers"]["content-type"] == "application/json", js
    assert json.loads(js["text"]) == {"a": 1, "list": [True, None, "x", 2.5],
                                      "nested": {"k": "v"}}, js

    assert byt["status"] == 200, byt
    assert b64(byt) == base64.b64decode("AAEC/f7/iVBORw0KGgo="), b64(byt)
    assert byt["headers"]["content-type"] == "application/octet-stream", byt

    # file: relative to the rules file (the jail's cwd is elsewhere)
    assert fil["status"] == 200, fil
    assert b64(fil) == (RULES / "fixtures" / "report.json").read_bytes(), fil
    assert fil["headers"]["content-type"] == "application/json", fil
    assert b64(binf) == (RULES / "fixtures" / "blob.bin").read_bytes(), binf

    assert custom["status"] == 418, custom
    assert custom["text"] == "short and stout", custom
    assert custom["headers"].get("x-custom") == "abc", custom
    assert custom["headers"].get("content-type") == "text/x-teapot", custom
    assert custom["headers"].get("cache-control") == "no-store", custom

    assert empty["status"] == 204 and b64(empty) == b"", empty


def test_response_delay(jail):
    res, out = batch(jail, rules("responses.yaml"),
                     [{"url": "http://api.resp.test/delayed"}, {"url": "http://api.resp.test/text"}])
    delayed, _ = out
    assert (delayed["status"], delayed["text"]) == (200, "late"), delayed
    assert delayed["elapsed"] >= 0.4, f"answered after {delayed['elapsed']:.3f}s, delay is 400ms"


# ==========================================================================
# 5: sequences


def test_sequences(jail):
    S = "http://api.seq.test"
    reqs = ([{"url": f"{S}/repeat"}] * 4 + [{"url": f"{S}/default"}] * 3
            + [{"url": f"{S}/cycle"}] * 7 + [{"url": f"{S}/error"}] * 3)
    res, out = batch(jail, rules("sequences.yaml"), reqs)
    repeat, default, cycle, error = out[:4], out[4:7], out[7:14], out[14:]

    assert [r["status"] for r in repeat] == [503, 200, 200, 200], repeat
    assert json.loads(repeat[0]["text"]) == {"error": "try again"}, repeat
    assert all(json.loads(r["text"]) == {"available": 1000} for r in repeat[1:]), repeat

    assert [r["text"] for r in default] == ["one", "two", "two"], default

    assert [r["text"] for r in cycle] == list("abcabca"), cycle
    assert all(r["status"] == 200 for r in cycle), cycle

    assert (error[0]["status"], error[0]["text"]) == (200, "only-once"), error
    for r in error[1:]:
        assert r["status"] == 500, f"after exhaustion (on_exhausted: error): {r}"
        assert "once-then-error" in json.loads(r["text"])["error"], r
    evs = http_events(res, service="seq", route="once-then-error")
    assert [e["status"] for e in evs] == [200, 500, 500], evs


# ==========================================================================
# 6: stateful resources


def test_resources_crud(jail):
    C = "http://api.store.test/v1/customers"
    reqs = [
        {"method": "POST", "url": C, "json": {"name": "Ada", "email": "ada@x.test"}},  # 0
        {"method": "POST", "url": C, "json": {"name": "Bob"}},                         # 1
        {"url": f"{C}/1"},                                                             # 2
        {"url": C},                                                                    # 3
        {"method": "PATCH", "url": f"{C}/1", "json": {"tier": "gold"}},                # 4
        {"method": "PUT", "url": f"{C}/1", "json": {"name": "Ada L", "id": 99}},       # 5
        {"url": f"{C}/1"},                                                             # 6
        {"method": "DELETE", "url": f"{C}/2"},                                         # 7
        {"url": f"{C}/2"},                                                             # 8
        {"method": "DELETE", "url": f"{C}/2"},                                         # 9
        {"url": f"{C}/999"},                                                           # 10
        {"url": C},                                                                    # 11
        {"method": "POST", "url": C, "json": {"name": "Cy"}},                          # 12
        {"method": "POST", "url": C, "json": {"id": 1, "name": "dup"}},                # 13
        {"url": f"{C}?name=Cy"},                                                       # 14
    ]
    res, out = batch(jail, rules("resources.yaml"), reqs)
    j = [json.loads(o["text"]) if o.get("text") else None for o in out]

    assert out[0]["status"] == 201 and out[1]["status"] == 201, out[:2]
    assert j[0]["id"] == 1 and j[0]["name"] == "Ada" and j[0]["email"] == "ada@x.test", j[0]
    assert j[1]["id"] == 2 and j[1]["name"] == "Bob", j[1]
    assert_recent(j[0]["created_at"])
    assert out[2]["status"] == 200 and j[2] == j[0], (out[2], j[0])
    assert out[3]["status"] == 200 and j[3] == [j[0], j[1]], j[3]
    # PATCH merges
    assert out[4]["status"] == 200, out[4]
    assert j[4]["tier"] == "gold" and j[4]["name"] == "Ada" and j[4]["email"] == "ada@x.test", j[4]
    assert j[4]["id"] == 1 and j[4]["created_at"] == j[0]["created_at"], j[4]
    assert_recent(j[4]["updated_at"])
    # PUT replaces; the id and created_at stay the server's
    assert out[5]["status"] == 200, out[5]
    assert j[5]["name"] == "Ada L" and j[5]["id"] == 1, j[5]
    assert "tier" not in j[5] and "email" not in j[5], j[5]
    assert j[5]["created_at"] == j[0]["created_at"], j[5]
    assert j[6] == j[5], (j[6], j[5])
    # DELETE: 204, then 404
    assert out[7]["status"] == 204 and out[7]["text"] == "", out[7]
    assert out[8]["status"] == 404, out[8]
    assert out[9]["status"] == 404, out[9]
    assert out[10]["status"] == 404, out[10]
    assert [c["id"] for c in j[11]] == [1], j[11]
    assert out[12]["status"] == 201 and j[12]["id"] == 3, out[12]
    assert out[13]["status"] == 409, out[13]
    assert out[14]["status"] == 200 and [c["name"] for c in j[14]] == ["Cy"], out[14]
    evs = http_events(res, service="store")
    assert len(evs) == len(reqs) and all(e["answered_by"] == "resource" for e in evs), evs


def test_resources_uuid_ids_and_seed(jail):
    O = "http://api.store.test/v1/orders"
    P = "http://api.store.test/v1/products"
    reqs = [
        {"method": "POST", "url": O, "json": {"total": 5}},
        {"method": "POST", "url": O, "json": {"total": 6}},
        {"url": O},
        {"url": P},
        {"url": f"{P}/2"},
        {"method": "POST", "url": P, "json": {"name": "plum"}},
        {"url": f"{P}/3"},
        {"method": "DELETE", "url": f"{P}/1"},
        {"url": P},
    ]
    res, out = batch(jail, rules("resources.yaml"), reqs)
    o1, o2 = json.loads(out[0]["text"]), json.loads(out[1]["text"])
    assert out[0]["status"] == 201 and is_uuid(o1["id"]), o1
    assert is_uuid(o2["id"]) and o1["id"] != o2["id"], (o1, o2)
    assert sorted(o["id"] for o in json.loads(out[2]["text"])) == sorted([o1["id"], o2["id"]])

    # seeded items, and new ids continue after the largest seeded one
    assert json.loads(out[3]["text"]) == [{"sku": 1, "name": "apple"}, {"sku": 2, "name": "pear"}]
    assert json.loads(out[4]["text"]) == {"sku": 2, "name": "pear"}, out[4]
    plum = json.loads(out[5]["text"])
    assert out[5]["status"] == 201 and plum["sku"] == 3 and plum["name"] == "plum", plum
    assert json.loads(out[6]["text"]) == plum, out[6]
    assert out[7]["status"] == 204, out[7]
    assert [p["sku"] for p in json.loads(out[8]["text"])] == [2, 3], out[8]


UUID_GET = r'''
import requests
s = requests.Session(); s.trust_env = False
O = "http://api.store.test/v1/orders"
created = s.post(O, json={"total": 9}, timeout=30)
oid = created.json()["id"]
got = s.get(f"{O}/{oid}", timeout=30)
gone = s.delete(f"{O}/{oid}", timeout=30)
after = s.get(f"{O}/{oid}", timeout=30)
print(json.dumps({"created": [created.status_code, created.json()],
                  "got": [got.status_code, got.json()], "deleted": gone.status_code,
                  "after": after.status_code}))
'''


def test_resources_uuid_item_roundtrip(jail):
    got = ok(pyrun(jail, rules("resources.yaml"), UUID_GET)).json_out()
    status, item = got["created"]
    assert status == 201 and is_uuid(item["id"]) and item["total"] == 9, got
    assert got["got"] == [200, item], got
    assert got["deleted"] == 204 and got["after"] == 404, got


# ==========================================================================
# 7: faults


def test_fault_latency(jail):
    code = r'''
res = {}
for path in ("/slow", "/slow-range"):
    t0 = time.monotonic()
    p = subprocess.run(CURL + ["-w", "\n%{time_total}", "http://api.faults.test" + path],
                       capture_output=True)
    body, _, total = p.stdout.decode().rpartition("\n")
    res[path] = {"rc": p.returncode, "body": body, "time_total": float(total),
                 "elapsed": time.monotonic() - t0}
import requests
t0 = time.monotonic()
r = requests.get("http://api.faults.test/slow", timeout=30)
res["requests"] = {"status": r.status_code, "json": r.json(), "elapsed": time.monotonic() - t0}
print(json.dumps(res))
'''
    res = ok(pyrun(jail, rules("faults.yaml"), code))
    got = res.json_out()
    slow, rng, req = got["/slow"], got["/slow-range"], got["requests"]
    assert slow["rc"] == 0 and json.loads(slow["body"]) == {"ok": True}, slow
    assert slow["time_total"] >= 0.4, f"latency 400ms, curl measured {slow['time_total']}s"
    assert rng["rc"] == 0 and rng["body"] == "ok", rng
    assert rng["time_total"] >= 0.25, f"latency 250-350ms, curl measured {rng['time_total']}s"
    assert req["status"] == 200 and req["json"] == {"ok": True}, req
    assert req["elapsed"] >= 0.4, req
    evs = http_events(res, route="slow")
    assert len(evs) == 2 and all(e["fault"] == "latency" and e["status"] == 200 for e in evs), evs


def test_fault_hang(jail):
    code = r'''
t0 = time.monotonic()
p = subprocess.run(CURL + ["-m", "1", "http://api.faults.test/hang"], capture_output=True)
hang = {"rc": p.returncode, "out": p.stdout.decode(errors="replace"),
        "elapsed": time.monotonic() - t0}
q = subprocess.run(CURL + ["http://api.faults.test/p0"], capture_output=True)
print(json.dumps({"hang": hang, "after": [q.returncode, q.stdout.decode()]}))
'''
    res = ok(pyrun(jail, rules("faults.yaml"), code))
    got = res.json_out()
    assert got["hang"]["rc"] == 28, f"curl -m 1 should time out (exit 28): {got}"
    assert got["hang"]["out"] == "", got
    assert got["hang"]["elapsed"] >= 1.0, got
    assert got["after"] == [0, "fine"], f"the service stopped answering after a hang: {got}"
    evs = http_events(res, route="hang")
    assert len(evs) == 1 and evs[0]["fault"] == "hang" and evs[0]["status"] is None, evs


def test_fault_reset_before_response(jail):
    code = r'''
out = {}
for path in ("/reset", "/reset-before"):
    p = subprocess.run(CURL + ["http://api.faults.test" + path], capture_output=True)
    out[path] = [p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")]
import requests
try:
    r = requests.get("http://api.faults.test/reset", timeout=10)
    out["requests"] = ["no error", r.status_code, r.text]
except requests.exceptions.ConnectionError as e:
    out["requests"] = ["ConnectionError", str(e)]
except Exception as e:
    out["requests"] = [type(e).__name__, str(e)]
q = subprocess.run(CURL + ["http://api.faults.test/p0"], capture_output=True)
out["after"] = [q.returncode, q.stdout.decode()]
print(json.dumps(out))
'''
    res = ok(pyrun(jail, rules("faults.yaml"), code))
    got = res.json_out()
    for path in ("/reset", "/reset-before"):
        rc, body, err = got[path]
        assert rc in (52, 56), f"curl {path}: expected exit 52 or 56 (reset), got {rc}: {err}"
        assert body == "", got
    assert got["requests"][0] == "ConnectionError", got
    assert got["after"] == [0, "fine"], got
    evs = http_events(res, service="faulty")
    resets = [e for e in evs if e["route"] in ("reset", "reset-before")]
    assert len(resets) == 3 and all(e["fault"] == "reset" and e["status"] is None
                                    for e in resets), resets


PARTIAL_BODY = r"""
import http.client
path = sys.argv[1]
status = length = None
got, error = b"", None
c = http.client.HTTPConnection("api.faults.test", 80, timeout=10)
try:
    c.request("GET", path)
    r = c.getresponse()
    status, length = r.status, r.getheader("content-length")
    while True:
        d = r.read1(4096)
        if not d:
            break
        got += d
    # read1() returns b"" at a FIN even when the body is short; a client
    # that checks Content-Length (as read() does) sees the truncation.
    if length is not None and len(got) < int(length):
        error = f"IncompleteRead: {len(got)} of {length} bytes"
except Exception as e:
    error = f"{type(e).__name__}: {e}"
p = subprocess.run(CURL + ["-o", "curl.out", "http://api.faults.test" + path], capture_output=True)
try:
    curl_body = open("curl.out", "rb").read()
except FileNotFoundError:
    curl_body = b""
q = subprocess.run(CURL + ["http://api.faults.test/p0"], capture_output=True)
print(json.dumps({"status": status, "length": length, "got": got.decode(), "error": error,
                  "curl": [p.returncode, p.stderr.decode(errors="replace")],
                  "curl_len": len(curl_body), "after": [q.returncode, q.stdout.decode()]}))
"""


@pytest.mark.parametrize("path,fault,curl_codes", [
    ("/reset-mid", "reset_mid_body", (56, 18)),
    ("/truncate", "truncate", (18,)),
])
def test_fault_partial_body(jail, path, fault, curl_codes):
    """reset: mid_body and truncate: the client gets the status, the headers
    announcing the full length and the first half of the body, then an error
    (curl: 56 connection reset / 18 partial file)."""
    res = ok(pyrun(jail, rules("faults.yaml"), PARTIAL_BODY, path))
    got = res.json_out()
    assert got["status"] == 200 and got["length"] == str(len(BIG_BODY)), (
        f"{path}: expected status 200 with content-length {len(BIG_BODY)}, got {got}")
    n = len(got["got"])
    assert 0 < n < len(BIG_BODY), f"expected a partial body, got {n} bytes: {got['error']}"
    assert got["got"].encode() == BIG_BODY[:n], "the partial body is not the body's start"
    assert got["error"], f"the client saw no error after {n} bytes"
    assert got["curl"][0] in curl_codes, f"curl exit {got['curl']}, expected one of {curl_codes}"
    assert 0 < got["curl_len"] < len(BIG_BODY), got["curl_len"]
    assert got["after"] == [0, "fine"], got
    evs = http_events(res, route=path.strip("/"))
    assert len(evs) == 2 and all(e["fault"] == fault and e["status"] == 200 for e in evs), evs
    assert all(e["response_bytes"] == len(BIG_BODY) // 2 for e in evs), evs


def test_fault_invalid_json_and_status(jail):
    code = r'''
import requests
s = requests.Session(); s.trust_env = False
r = s.get("http://api.faults.test/invalid-json", timeout=30)
try:
    r.json()
    parsed = "parsed"
except ValueError as e:
    parsed = type(e).__name__
st = s.get("http://api.faults.test/status", timeout=30)
p0 = [s.get("http://api.faults.test/p0", timeout=30) for _ in range(30)]
print(json.dumps({"invalid": [r.status_code, r.headers.get("content-type"), parsed, r.text],
                  "status": [st.status_code, st.json()],
                  "p0": [[x.status_code, x.text] for x in p0]}))
'''
    res = ok(pyrun(jail, rules("faults.yaml"), code))
    got = res.json_out()
    status, ctype, parsed, text = got["invalid"]
    assert status == 200 and ctype == "application/json", got["invalid"]
    assert parsed != "parsed", f"invalid_json: response.json() parsed {text!r}"
    assert got["status"] == [503, {"ok": True}], got["status"]
    assert all(x == [200, "fine"] for x in got["p0"]), got["p0"]
    assert [e["fault"] for e in http_events(res, route="invalid-json")] == ["invalid_json"]
    st = http_events(res, route="status")
    assert [(e["fault"], e["status"]) for e in st] == [("status", 503)], st
    p0 = http_events(res, route="never-fires")
    assert len(p0) == 30 and all(e["fault"] is None for e in p0), p0


def test_service_level_faults(jail):
    S = "http://api.svcfaults.test"
    res, out = batch(jail, rules("faults.yaml"), [
        {"url": f"{S}/plain"}, {"url": f"{S}/own"},
        {"method": "POST", "url": f"{S}/items", "json": {"a": 1}}])
    plain, own, item = out
    assert (plain["status"], plain["text"]) == (502, "plain"), plain
    assert (own["status"], own["text"]) == (418, "own"), f"the route's own fault comes first: {own}"
    assert item["status"] == 502 and json.loads(item["text"])["a"] == 1, item
    evs = http_events(res, service="faulty-svc")
    assert [(e["status"], e["fault"]) for e in evs] == [
        (502, "status"), (418, "status"), (502, "status")], evs


# ==========================================================================
# 8: fallback


def test_fallback_default_404_lists_routes(jail):
    F = "http://api.fb404.test"
    res, out = batch(jail, rules("fallback.yaml"), [
        {"url": f"{F}/nope?x=1"}, {"method": "POST", "url": f"{F}/unnamed", "data": "z"},
        {"url": f"{F}/unnamed"}, {"url": f"{F}/known"}])
    nope, post, unnamed, known = out
    assert nope["status"] == 404, nope
    assert nope["headers"]["content-type"] == "application/json", nope
    body = json.loads(nope["text"])
    assert body["error"] == "no route matched", body
    assert body["service"] == "fb-default", body
    assert body["request"] == "GET /nope?x=1", body
    assert body["routes"] == ["known", "GET /unnamed"], body
    assert body["resources"] == ["/v1/things"], body
    assert post["status"] == 404 and json.loads(post["text"])["request"] == "POST /unnamed", post
    assert (unnamed["status"], unnamed["text"]) == (200, "unnamed"), unnamed
    assert (known["status"], known["text"]) == (200, "known"), known
    evs = http_events(res, service="fb-default")
    assert [(e["route"], e["answered_by"], e["status"]) for e in evs] == [
        (None, "fallback", 404), (None, "fallback", 404),
        ("GET /unnamed", "route", 200), ("known", "route", 200)], evs


def test_fallback_pass_forwards_to_real_server(jail, http_server):
    port = http_server.port
    base = f"http://api.fallback.test:{port}"
    payload = "forward me " * 100
    res, out = batch(jail, rules("fallback.yaml"), [
        {"url": f"{base}/hello"},
        {"url": f"{base}/mocked"},
        {"method": "POST", "url": f"{base}/sha256", "data": payload},
        {"url": f"{base}/missing-upstream"},
    ])
    hello, mocked, sha, missing = out
    assert (hello["status"], hello["text"]) == (200, "hello from host 127.0.0.1\n"), hello
    assert (mocked["status"], mocked["text"]) == (200, "mocked, not forwarded\n"), mocked
    import hashlib
    assert sha["status"] == 200, sha
    assert json.loads(sha["text"]) == {"sha256": hashlib.sha256(payload.encode()).hexdigest(),
                                       "bytes": len(payload)}, sha
    assert (missing["status"], missing["text"]) == (404, "not found\n"), missing
    evs = http_events(res, service="fb-pass")
    assert [(e["route"], e["answered_by"], e["status"]) for e in evs] == [
        (None, "pass", 200), ("mocked", "route", 200), (None, "pass", 200),
        (None, "pass", 404)], evs


def test_fallback_configured_response(jail):
    F = "http://api.fbcustom.test"
    res, out = batch(jail, rules("fallback.yaml"), [
        {"url": f"{F}/other/thing"}, {"method": "DELETE", "url": f"{F}/x"}, {"url": f"{F}/known"}])
    other, delete, known = out
    assert other["status"] == 503, other
    assert other["headers"].get("retry-after") == "7", other
    assert json.loads(other["text"]) == {"error": "maintenance", "path": "/other/thing",
                                         "method": "GET"}, other
    assert delete["status"] == 503 and json.loads(delete["text"])["method"] == "DELETE", delete
    assert (known["status"], known["text"]) == (200, "known"), known
    evs = http_events(res, service="fb-custom")
    assert [(e["answered_by"], e["status"]) for e in evs] == [
        ("fallback", 503), ("fallback", 503), ("route", 200)], evs


# ==========================================================================
# 9: events


def test_http_events(jail):
    E = "http://api.events.test"
    req_body = "request-body-" + "x" * 40
    res, out = batch(jail, rules("events.yaml"), [
        {"method": "POST", "url": f"{E}/echo?a=1&b=2", "data": req_body,
         "headers": {"X-Test": "yes"}},
        {"url": f"{E}/teapot"},
        {"url": f"{E}/missing"},
        {"method": "POST", "url": "http://api.events0.test/echo", "data": req_body},
    ])
    assert [o["status"] for o in out] == [201, 418, 404, 200], out
    resp_body = "".join(f"response-{i};" for i in range(10))
    assert out[0]["text"] == resp_body, out[0]

    evs = http_events(res)
    assert len(evs) == 4, f"expected one http event per request\n{res.describe()}"
    echo, teapot, missing, echo0 = evs
    for e in evs:
        assert isinstance(e["flow_id"], int), e
        assert_recent(e["time"])
        assert isinstance(e["latency_ms"], (int, float)) and e["latency_ms"] >= 0, e
        assert e["version"] == "HTTP/1.1", e
        assert e["error"] is None, e

    assert echo["service"] == "ev" and echo["route"] == "echo", echo
    assert echo["answered_by"] == "route", echo
    assert (echo["method"], echo["path"], echo["query"]) == ("POST", "/echo", "a=1&b=2"), echo
    assert echo["host"] == "api.events.test", echo
    assert echo["status"] == 201 and echo["fault"] is None, echo
    assert echo["request_bytes"] == len(req_body), echo
    assert echo["response_bytes"] == len(resp_body), echo
    assert echo["request_body"] == req_body[:16], echo
    assert echo["response_body"] == resp_body[:16], echo
    assert echo["request_headers"].get("x-test") == "yes", echo

    assert (teapot["route"], teapot["status"], teapot["fault"]) == ("teapot", 418, "status"), teapot
    assert teapot["query"] is None and teapot["request_body"] is None, teapot

    assert missing["route"] is None and missing["answered_by"] == "fallback", missing
    assert missing["status"] == 404 and missing["path"] == "/missing", missing

    assert echo0["service"] == "ev-nobodies" and echo0["route"] == "echo0", echo0
    assert echo0["request_body"] is None and echo0["response_body"] is None, echo0
    assert echo0["request_bytes"] == len(req_body), echo0
    assert echo0["response_bytes"] == len("some response body"), echo0

    flows = res.flows(decision="mock")
    assert {f["service"] for f in flows} == {"ev", "ev-nobodies"}, flows


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
def test_mock_flow_event_counts_bytes_delivered(jail, close):
    """The flow event of a mocked connection counts the bytes the client
    got, also when the server ends the connection (Connection: close)."""
    opts = ["-H", "Connection: close"] if close else []
    res = ok(jail.run([*CURL, *opts, "-o", "/dev/null", "-w", "%{size_header} %{size_download}",
                       "http://api.raw.test/ok"], rules=rules("malformed.yaml")))
    header, body = map(int, res.stdout.split())
    assert body == 3, res.describe()
    f = res.flows(host="api.raw.test", decision="mock")
    assert len(f) == 1, res.describe()
    assert f[0]["bytes_down"] == header + body, (
        f"client received {header + body} bytes, flow event says bytes_down="
        f"{f[0]['bytes_down']}: {f[0]}")
    assert f[0]["bytes_up"] > 0, f[0]


# ==========================================================================
# 10: expectations


def _expect_script(charges=0, refunds=0, balances=0, exit_code=0):
    cmds = ([f"{' '.join(CURL)} -o /dev/null -X POST http://api.expect.test/charge"] * charges
            + [f"{' '.join(CURL)} -o /dev/null http://api.expect.test/refund"] * refunds
            + [f"{' '.join(CURL)} -o /dev/null http://api.expect.test/balance"] * balances)
    return ["sh", "-c", "; ".join(cmds + [f"exit {exit_code}"])]


def test_expectations_met(jail):
    res = ok(jail.run(_expect_script(charges=2, balances=3), rules=rules("expect.yaml")))
    assert "expectations: 3 of 3 met" in res.stderr, res.describe()
    assert "FAIL" not in res.stderr, res.describe()


def test_expectations_unmet_exit_1_and_report(jail):
    res = ok(jail.run(_expect_script(charges=1, refunds=1), rules=rules("expect.yaml"),
                      quiet=True), 1)
    err = res.stderr
    assert "expectations: 0 of 3 met" in err, res.describe()
    assert re.search(r"FAIL pay / charge: expected exactly 2 times, called 1 time\b", err), err
    # never: true
    assert re.search(r"FAIL pay / refund: expected never, called 1 time\b", err), err
    assert re.search(r"FAIL pay / balance: expected between 1 and 3 times, called 0 times", err), err
    # the calls the service did get are listed
    assert "POST /charge -> 201 (charge)" in err, err
    assert "GET /refund -> 200 (refund)" in err, err


def test_expectations_never_alone_fails(jail):
    res = ok(jail.run(_expect_script(charges=2, refunds=2, balances=1),
                      rules=rules("expect.yaml")), 1)
    assert "expectations: 2 of 3 met" in res.stderr, res.describe()
    assert re.search(r"FAIL pay / refund: expected never, called 2 times", res.stderr), res.stderr
    assert not re.search(r"FAIL pay / (charge|balance)", res.stderr), res.stderr


def test_expectations_no_verify(jail):
    res = ok(jail.run(_expect_script(refunds=1), rules=rules("expect.yaml"),
                      opts=["--no-verify"]))
    assert "FAIL" not in res.stderr and "expectations" not in res.stderr, res.describe()


def test_expectations_command_exit_code_wins(jail):
    res = ok(jail.run(_expect_script(refunds=1, exit_code=3), rules=rules("expect.yaml")), 3)
    assert "FAIL pay / refund" in res.stderr, res.describe()


# ==========================================================================
# 11: malformed requests end only their own connection


RAW = r'''
import socket, threading
HOST = "api.raw.test"
GOOD = b"GET /ok HTTP/1.1\r\nHost: api.raw.test\r\nConnection: close\r\n\r\n"

def exchange(payload):
    s = socket.create_connection((HOST, 80), timeout=5)
    send_error = []
    def sender():
        try:
            s.sendall(payload)
        except OSError as e:
            send_error.append(f"{type(e).__name__}: {e}")
    t = threading.Thread(target=sender)
    t.start()
    buf, closed, recv_error = b"", False, None
    try:
        while True:
            d = s.recv(65536)
            if not d:
                closed = True
                break
            buf += d
    except socket.timeout:
        recv_error = "timeout"
    except OSError as e:
        recv_error = f"{type(e).__name__}: {e}"
        closed = True
    t.join(10)
    s.close()
    head = buf.split(b"\r\n", 1)[0].decode(errors="replace")
    status = int(head.split()[1]) if head.startswith("HTTP/") and len(head.split()) > 1 else None
    return {"status": status, "head": head, "response": buf[:400].decode(errors="replace"),
            "closed": closed, "recv_error": recv_error, "send_error": send_error}

bad = {
    "request-line": b"GET /ok HTTX/1.1\r\nHost: api.raw.test\r\n\r\n",
    "huge-header": (b"GET /ok HTTP/1.1\r\nHost: api.raw.test\r\nX-Big: " + b"a" * 200_000
                    + b"\r\n\r\n"),
    "bad-chunked": (b"POST /ok HTTP/1.1\r\nHost: api.raw.test\r\nTransfer-Encoding: chunked\r\n"
                    b"\r\nZZZ\r\nhello\r\n0\r\n\r\n"),
}[sys.argv[1]]
first = exchange(bad)
second = exchange(GOOD)
print(json.dumps({"first": first, "second": second}))
'''


@pytest.mark.parametrize("case,statuses,allow_no_response", [
    ("request-line", (400,), False),
    ("huge-header", (431,) + tuple(range(400, 500)), False),
    ("bad-chunked", (400,), True),
])
def test_malformed_request(jail, case, statuses, allow_no_response):
    res = ok(pyrun(jail, rules("malformed.yaml"), RAW, case))
    got = res.json_out()
    first, second = got["first"], got["second"]
    if not (allow_no_response and first["status"] is None):
        assert first["status"] in statuses, (
            f"{case}: expected a status in {statuses[:3]}…, got {first}")
    assert first["closed"], f"{case}: the server did not close the connection: {first}"
    assert second["status"] == 200 and second["response"].endswith("\r\n\r\nok\n"), (
        f"{case}: a new connection after the bad one did not get the mocked answer: {second}")
    oks = http_events(res, route="ok")
    assert len(oks) == 1 and oks[0]["status"] == 200, oks


# ==========================================================================
# 12: exit summary


def test_summary_lists_calls_per_route(jail):
    S = "http://api.summary.test"
    cmd = "; ".join([f"{' '.join(CURL)} -o /dev/null {S}/busy"] * 3
                    + [f"{' '.join(CURL)} -o /dev/null {S}/plain",
                       f"{' '.join(CURL)} -o /dev/null {S}/nope"])
    res = ok(jail.run(["sh", "-c", cmd], rules=rules("summary.yaml")))
    err = res.stderr
    assert "HTTP calls per route" in err, res.describe()
    lines = {l.strip() for l in err.splitlines()}
    assert "sum / busy: 3" in lines, err
    assert "sum / GET /plain: 1" in lines, err
    assert any(re.fullmatch(r"sum / idle: 0\s+<- never called", l) for l in lines), err
    assert "sum / (no route, answered by fallback): 1" in lines, err
    assert not any("busy" in l and "never called" in l for l in lines), err


# ==========================================================================
# 13: meshwrap check


SVC = """\
services:
  - name: a
    match: { host: a.test }
    http:
      routes:
"""

BAD_HTTP_RULES = [
    # (id, text, expected line (a pair: either; None: any line of the route),
    #  words in the message)
    ("unknown-field-in-route",
     SVC + "        - name: r\n          wen: { path: /x }\n          respond: { body: x }\n",
     7, ["wen"]),
    ("unknown-field-in-when",
     SVC + "        - name: r\n          when: { path: /x, mehtod: GET }\n", 7, ["mehtod"]),
    ("invalid-path-regex",
     SVC + "        - name: r\n          when: { path_regex: \"^/(unclosed\" }\n", 7, ["regex"]),
    ("invalid-header-regex",
     SVC + "        - name: r\n          when:\n            headers:\n"
           "              X-A: { regex: \"[z-a]\" }\n", 9, ["regex"]),
    ("path-without-slash",
     SVC + "        - name: r\n          when: { path: v1/charges }\n", 7, ["v1/charges", "/"]),
    ("path-param-not-whole-segment",
     SVC + "        - name: r\n          when: { path: \"/a{id}\" }\n", 7, ["a{id}"]),
    ("template-syntax-error",
     SVC + "        - name: r\n          respond:\n            body: \"{{ unclosed \"\n",
     8, ["template"]),
    ("json-template-syntax-error",
     SVC + "        - name: r\n          respond:\n            json: { a: \"{% if %}\" }\n",
     (7, 8), ["template"]),
    ("respond-and-sequence",
     SVC + "        - name: r\n          respond: { body: x }\n"
           "          sequence: [ { body: y } ]\n", None, ["respond", "sequence"]),
    ("expect-unknown-route",
     SVC + "        - name: r\n          respond: { body: x }\n"
           "expect:\n  - { service: a, route: nope }\n", 9, ["nope"]),
    ("expect-unknown-service",
     SVC + "        - name: r\n          respond: { body: x }\n"
           "expect:\n  - { service: zzz, route: r }\n", 9, ["zzz"]),
]


@pytest.mark.parametrize("name,text,line,words", BAD_HTTP_RULES,
                         ids=[b[0] for b in BAD_HTTP_RULES])
def test_check_rejects_bad_http_rules(jail, name, text, line, words):
    path = jail.write(f"{name}.yaml", text)
    res = subprocess.run([jail.binary, "check", path], capture_output=True, text=True)
    assert res.returncode == 1, f"exit {res.returncode}; stderr:\n{res.stderr}"
    m = re.search(re.escape(path) + r":(\d+):(\d+):", res.stderr)
    assert m, f"no {path}:LINE:COL: in stderr:\n{res.stderr}"
    if isinstance(line, tuple):
        assert int(m.group(1)) in line, f"expected line {line[0]} or {line[1]}:\n{res.stderr}"
    elif line is not None:
        assert int(m.group(1)) == line, f"expected line {line}:\n{res.stderr}"
    else:
        assert 6 <= int(m.group(1)) <= len(text.splitlines()), res.stderr
    assert int(m.group(2)) >= 1, res.stderr
    for w in words:
        assert w in res.stderr, f"error does not mention {w!r}:\n{res.stderr}"
    assert "panicked" not in res.stderr, res.stderr


def test_check_accepts_the_test_rules_and_examples(meshwrap_bin):
    files = sorted(str(p) for p in RULES.glob("*.yaml"))
    files.append(str(RULES.parent.parent / "rules" / "examples" / "payments.yaml"))
    for f in files:
        res = subprocess.run([meshwrap_bin, "check", f], capture_output=True, text=True)
        assert res.returncode == 0, f"{f}: {res.stderr}"
