"""Lua scripting in the Redis responder (issue #16, slice a): EVAL,
EVALSHA, SCRIPT, Redis's Lua libraries, its error texts and conversions,
BUSY and SCRIPT KILL, driven by real clients inside the jail: redis-py
(its `Lock`, `register_script`, pipelines with scripts, RESP3), ioredis's
`defineCommand`, and a raw socket where the exact wire text matters.
Expected texts are Redis 7.2's own. Every name is under .test.
"""
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON

HERE = Path(__file__).resolve().parent
RULES = str(HERE / "redis_rules" / "basic.yaml")
NODE_DIR = HERE / "node"

HAVE_REDIS_PY = subprocess.run([PYTHON, "-c", "import redis"], capture_output=True).returncode == 0
HAVE_IOREDIS = shutil.which("node") is not None and (NODE_DIR / "node_modules" / "ioredis").is_dir()
need_py = pytest.mark.skipif(not HAVE_REDIS_PY, reason="python `redis` package not installed")

# A RESP client of a few lines, for the wire's exact text: errors keep
# their code (redis-py strips "ERR ").
RAW = r'''
import socket
class Raw:
    def __init__(self, host="redis.test"):
        self.s = socket.create_connection((host, 6379), timeout=10)
        self.f = self.s.makefile("rb")
    def __call__(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self.read()
    def read(self):
        line = self.f.readline().rstrip(b"\r\n").decode()
        t, rest = line[0], line[1:]
        if t in "+-":
            return line
        if t == ":":
            return int(rest)
        if t == "$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode("latin-1")
        if t == "*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise AssertionError("unexpected reply " + line)
'''


def ok(res, code=0):
    assert res.returncode == code, f"exit {res.returncode}\n{res.describe()}"
    return res


def pyrun(jail, code, rules=RULES, **kw):
    script = jail.write("script.py", "import json, sys, time, threading, socket\nimport redis\n"
                        + RAW + code)
    return jail.run([PYTHON, script], rules=rules, **kw)


def sha1(text):
    import hashlib
    return hashlib.sha1(text.encode()).hexdigest()


# Script, then the reply Redis 7.2 gives on the wire ("-..." an error).
CASES = [
    ("return 1", 1),
    ("return {1, 2, {3, 'x'}, 'y', nil, 5}", [1, 2, [3, "x"], "y"]),
    ("return 3.99", 3),
    ("return -3.9", -3),
    ("return true", 1),
    ("return false", None),
    ("return {ok='FINE'}", "+FINE"),
    ("return {err='x'}", "-x"),
    ("return redis.error_reply('My Error')", "-My Error"),
    ("return redis.error_reply('MyError')", "-ERR MyError"),
    ("return redis.status_reply('FINE')", "+FINE"),
    ("return redis.call('get', 'greeting')", "hello"),
    ("return redis.call('get', 'nosuchkey')", None),
    ("return redis.call('incrby', 'n', 2.0)", 2),
    ("return redis.pcall('lpush', 'greeting', 'x')",
     "-WRONGTYPE Operation against a key holding the wrong kind of value"),
    ("return redis.call('lpush', 'greeting', 'x')",
     "-WRONGTYPE Operation against a key holding the wrong kind of value script: {sha}, on @user_script:1."),
    ("return a", "-ERR user_script:1: Script attempted to access nonexistent global variable 'a' "
     "script: {sha}, on @user_script:1."),
    ("a = 1", "-ERR user_script:1: Attempt to modify a readonly table script: {sha}, on @user_script:1."),
    ("error('x')", "-ERR user_script:1: x script: {sha}, on @user_script:1."),
    ("\nerror({err='X y'})", "-X y script: {sha}, on @user_script:2."),
    ("local t = nil; return t.x", "-ERR user_script:1: attempt to index local 't' (a nil value) "
     "script: {sha}, on @user_script:1."),
    ("return redis.call('nosuch')",
     "-ERR Unknown Redis command called from script script: {sha}, on @user_script:1."),
    ("return redis.call('get')",
     "-ERR Wrong number of args calling Redis command from script script: {sha}, on @user_script:1."),
    ("return redis.call()",
     "-ERR Please specify at least one argument for this redis lib call script: {sha}, on @user_script:1."),
    ("return redis.pcall('get', {})",
     "-ERR Lua redis lib command arguments must be strings or integers script: {sha}, on @user_script:1."),
    ("return redis.call('multi')",
     "-ERR This Redis command is not allowed from script script: {sha}, on @user_script:1."),
    ("local ok, e = pcall(function() redis.call('nosuch') end); return e",
     "ERR Unknown Redis command called from script"),
    ("local ok, e = pcall(function() error('a') end); return e", "user_script:1: a"),
    ("return 1 +", "-ERR Error compiling script (new function): user_script:1: unexpected symbol near '<eof>'"),
    ("#!lua flags=no-writes\nreturn redis.call('set', 'a', 'b')",
     "-ERR Write commands are not allowed from read-only scripts. script: {sha}, on @user_script:2."),
    ("#!lua flags=bad\nreturn 1", "-ERR Unexpected flag in script shebang: bad"),
    ("#!js\nreturn 1", "-ERR Unexpected engine in script shebang: #!js"),
    ("redis.call('select', 1); return redis.call('get', 'only_in_db1')", "yes"),
    ("return redis.call('blpop', 'nolist', 0)", None),
    ("return cjson.encode({1, 2, 3}) .. cjson.encode({}) .. cjson.encode('a/b')", '[1,2,3]{}"a\\/b"'),
    ("return cjson.encode({a={b=0.1}})", '{"a":{"b":0.1}}'),
    ("return cjson.encode(1/3)", "0.33333333333333"),
    ("local v = cjson.decode('[1,\"x\",null]'); return {v[1], v[2], tostring(v[3] == cjson.null)}",
     [1, "x", "true"]),
    ("return cjson.decode('{')", "-ERR Expected value but found T_END at character 1 "
     "script: {sha}, on @user_script:1."),
    ("return {cmsgpack.pack({1, 2, 3}), cmsgpack.pack('abc'), cmsgpack.pack(1.5), cmsgpack.pack(-1, 300)}",
     ["\x93\x01\x02\x03", "\xa3abc", "\xca\x3f\xc0\x00\x00", "\xff\xcd\x01\x2c"]),
    ("local t = cmsgpack.unpack(cmsgpack.pack({a=1, b={'x'}})); return {t.a, t.b[1]}", [1, "x"]),
    ("return {bit.tohex(bit.bnot(0)), bit.lshift(1, 31), bit.bxor(5, 3), bit.band(0xff, 0x0f, 0x3)}",
     ["ffffffff", -2147483648, 6, 3]),
    ("return {struct.pack('>I2', 258), struct.unpack('<i4', struct.pack('<i4', -5)), struct.size('>I2b')}",
     ["\x01\x02", -5, 3]),
    ("return redis.sha1hex('')", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    ("return {type(loadfile), type(dofile), type(print), type(os), type(io)}",
     "-ERR user_script:1: Script attempted to access nonexistent global variable 'loadfile' "
     "script: {sha}, on @user_script:1."),
    ("return {redis.REDIS_VERSION ~= nil, type(redis.setresp), redis.LOG_WARNING}", [1, "function", 3]),
]


@need_py
def test_eval_replies_and_errors_are_redis_own_on_the_wire(jail):
    import json
    cases = [s for s, _ in CASES]
    res = ok(pyrun(jail, f'''
r = Raw()
out = []
for s in {json.dumps(cases)}:
    out.append(r("EVAL", s, 0))
print(json.dumps(out))
'''))
    got = res.json_out()
    for (script, want), have in zip(CASES, got):
        if isinstance(want, str):
            want = want.replace("{sha}", sha1(script))
        assert have == want, f"script {script!r}: want {want!r}, got {have!r}"


@need_py
def test_evalsha_script_commands_and_numkeys(jail):
    res = ok(pyrun(jail, r'''
r = Raw()
out = {}
out["load"] = r("SCRIPT", "LOAD", "return {KEYS[1], ARGV[1], #KEYS, #ARGV}")
out["evalsha"] = r("EVALSHA", out["load"], 1, "k", "v", "w")
out["upper"] = r("EVALSHA", out["load"].upper(), 0, "v")
out["exists"] = r("SCRIPT", "EXISTS", out["load"], "0" * 40)
out["noscript"] = r("EVALSHA", "0" * 40, 0)
out["too_many"] = r("EVAL", "return 1", 2, "k")
out["negative"] = r("EVAL", "return 1", -1)
out["not_int"] = r("EVAL", "return 1", "x")
out["arity"] = r("EVAL", "return 1")
out["flush"] = r("SCRIPT", "FLUSH")
out["gone"] = r("EVALSHA", out["load"], 0)
out["flush_bad"] = r("SCRIPT", "FLUSH", "LATER")
out["ro_write"] = r("EVAL_RO", "return redis.call('set', 'x', 'y')", 0)
out["ro_read"] = r("EVAL_RO", "return redis.call('get', 'greeting')", 0)
out["ro_flagged"] = r("EVAL_RO", "#!lua\nreturn 1", 0)
out["kill_idle"] = r("SCRIPT", "KILL")
out["help"] = r("SCRIPT", "HELP")[0]
out["bad_sub"] = r("SCRIPT", "NOPE")
print(json.dumps(out))
'''))
    out = res.json_out()
    sha = sha1("return {KEYS[1], ARGV[1], #KEYS, #ARGV}")
    assert out["load"] == sha
    assert out["evalsha"] == ["k", "v", 1, 2]
    # KEYS[1] is nil: an array ends at its first nil.
    assert out["upper"] == []
    assert out["exists"] == [1, 0]
    assert out["noscript"] == "-NOSCRIPT No matching script. Please use EVAL."
    assert out["too_many"] == "-ERR Number of keys can't be greater than number of args"
    assert out["negative"] == "-ERR Number of keys can't be negative"
    assert out["not_int"] == "-ERR value is not an integer or out of range"
    assert out["arity"] == "-ERR wrong number of arguments for 'eval' command"
    assert out["flush"] == "+OK"
    assert out["gone"] == "-NOSCRIPT No matching script. Please use EVAL."
    assert out["flush_bad"] == "-ERR SCRIPT FLUSH only support SYNC|ASYNC option"
    assert out["ro_write"] == ("-ERR Write commands are not allowed from read-only scripts. script: "
                               + sha1("return redis.call('set', 'x', 'y')") + ", on @user_script:1.")
    assert out["ro_read"] == "hello"
    assert out["ro_flagged"] == "-ERR Can not execute a script with write flag using *_ro command."
    assert out["kill_idle"] == "-NOTBUSY No scripts in execution right now."
    assert out["help"].startswith("+SCRIPT <subcommand>")
    assert out["bad_sub"] == "-ERR unknown subcommand 'NOPE'. Try SCRIPT HELP."


@need_py
def test_redis_py_lock(jail):
    res = ok(pyrun(jail, r'''
from redis.exceptions import LockNotOwnedError
r = redis.Redis(host="redis.test", decode_responses=True)
out = {}
mine = r.lock("resource", timeout=5, blocking_timeout=0.2)
theirs = r.lock("resource", timeout=5, blocking_timeout=0.2)
out["mine"] = mine.acquire()
out["theirs_while_held"] = theirs.acquire()
out["extend"] = mine.extend(10)
out["ttl_extended"] = r.pttl("resource") > 10000
out["owned"] = mine.owned()
mine.release()
out["theirs_after"] = theirs.acquire()
# A token that is not the owner's: the release script refuses it.
stranger = r.lock("resource", timeout=5)
stranger.local.token = b"not-the-owner"
try:
    stranger.release()
    out["release_foreign"] = "released"
except LockNotOwnedError as e:
    out["release_foreign"] = "not owned"
out["reacquire"] = theirs.reacquire()
theirs.release()
out["exists_after"] = r.exists("resource")
with r.lock("ctx", timeout=2) as held:
    out["inside"] = r.get("ctx") is not None
out["ctx_after"] = r.exists("ctx")
print(json.dumps(out))
'''))
    out = res.json_out()
    assert out == {
        "mine": True, "theirs_while_held": False, "extend": True, "ttl_extended": True,
        "owned": True, "theirs_after": True, "release_foreign": "not owned",
        "reacquire": True, "exists_after": 0, "inside": True, "ctx_after": 0,
    }, out
    evals = [e for e in res.events if e.get("kind") == "redis"
             and e.get("command") in ("EVAL", "EVALSHA")]
    assert evals, res.describe()


@need_py
def test_register_script_pipelines_and_a_rate_limiter(jail):
    res = ok(pyrun(jail, r'''
r = redis.Redis(host="redis.test", decode_responses=True)
out = {}
incr_by = r.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
out["first"] = incr_by(keys=["c"], args=[5])
r.script_flush()
# redis-py sees NOSCRIPT and loads the script again.
out["after_flush"] = incr_by(keys=["c"], args=[2])
# In a transaction: MULTI, EVALSHA..., EXEC.
p = r.pipeline(transaction=True)
incr_by(keys=["c"], args=[1], client=p)
p.get("c")
incr_by(keys=["c"], args=[10], client=p)
out["multi"] = p.execute()
p = r.pipeline(transaction=False)
incr_by(keys=["d"], args=[3], client=p)
incr_by(keys=["d"], args=[3], client=p)
out["pipeline"] = p.execute()
limiter = r.register_script("""
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) >= limit then
  return 0
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('PEXPIRE', key, window)
return 1
""")
out["limited"] = [limiter(keys=["rl:user1"], args=[1000 + i, 1000, 5, "req%d" % i]) for i in range(7)]
out["later"] = limiter(keys=["rl:user1"], args=[2500, 1000, 5, "late"])
out["card"] = r.zcard("rl:user1")
print(json.dumps(out))
'''))
    out = res.json_out()
    assert out["first"] == 5 and out["after_flush"] == 7
    assert out["multi"] == [8, "8", 18]
    assert out["pipeline"] == [3, 6]
    assert out["limited"] == [1, 1, 1, 1, 1, 0, 0]
    assert out["later"] == 1 and out["card"] == 1


@need_py
def test_resp3_conversions(jail):
    res = ok(pyrun(jail, r'''
r = redis.Redis(host="redis.test", decode_responses=True, protocol=3)
out = {}
out["map"] = r.eval("redis.setresp(3); return redis.call('hgetall', KEYS[1])", 1, "user:1")
out["flat"] = r.eval("return redis.call('hgetall', KEYS[1])", 1, "user:1")
out["true2"] = r.eval("return true", 0)
out["true3"] = r.eval("redis.setresp(3); return true", 0)
out["false3"] = r.eval("redis.setresp(3); return false", 0)
out["double"] = r.eval("redis.setresp(3); return {double=3.5}", 0)
out["null3"] = r.eval("redis.setresp(3); return redis.call('get', 'nosuch') == nil", 0)
out["nil2"] = r.eval("return redis.call('get', 'nosuch') == false", 0)
out["bad_resp"] = None
try:
    r.eval("redis.setresp(4)", 0)
except redis.ResponseError as e:
    out["bad_resp"] = str(e)
print(json.dumps(out))
'''))
    out = res.json_out()
    assert out["map"] == {"name": "alice", "age": "30"}
    assert sorted(out["flat"]) == sorted(["name", "alice", "age", "30"])
    assert out["true2"] == 1 and out["true3"] is True and out["false3"] is False
    assert out["double"] == 3.5
    assert out["null3"] is True and out["nil2"] == 1
    assert out["bad_resp"].startswith("RESP version must be 2 or 3.")


@need_py
def test_busy_script_kill_and_the_jail_keeps_answering(jail):
    res = ok(pyrun(jail, r'''
a = redis.Redis(host="redis.test", decode_responses=True)
b = redis.Redis(host="redis.test", decode_responses=True)
out = {}
b.config_set("busy-reply-threshold", 300)
out["threshold"] = b.config_get("lua-time-limit")
def spin():
    try:
        a.eval("while true do end", 0)
    except redis.ResponseError as e:
        out["killed"] = str(e)
t = threading.Thread(target=spin)
t.start()
time.sleep(0.1)
try:
    b.ping()
    out["busy"] = "answered"
except redis.ResponseError as e:
    out["busy"] = str(e)
# The data plane goes on: a new name resolves while the script spins.
out["dns"] = socket.gethostbyname("somewhere-else.test")
out["spinning"] = t.is_alive()
out["kill"] = b.script_kill()
t.join(10)
out["ping_after"] = b.ping()
# A script that wrote cannot be killed; it ends on its own.
def writer():
    out["writer"] = a.eval("redis.call('set', 'w', '1'); local t0 = tonumber(redis.call('time')[1]); "
                           "while tonumber(redis.call('time')[1]) - t0 < 2 do end; return 'done'", 0)
t = threading.Thread(target=writer)
t.start()
time.sleep(0.6)
try:
    b.script_kill()
except redis.ResponseError as e:
    out["unkillable"] = str(e)
t.join(10)
out["w"] = b.get("w")
print(json.dumps(out))
'''))
    out = res.json_out()
    sha = sha1("while true do end")
    assert out["threshold"] == {"lua-time-limit": "300"}
    assert out["busy"] == "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
    assert out["dns"].count(".") == 3 and out["spinning"] is True
    assert out["kill"] is True
    assert out["killed"] == f"Script killed by user with SCRIPT KILL... script: {sha}, on @user_script:1."
    assert out["ping_after"] is True
    assert out["unkillable"].startswith("UNKILLABLE Sorry the script already executed write commands")
    assert out["writer"] == "done" and out["w"] == "1"


@pytest.mark.skipif(not HAVE_IOREDIS, reason="ioredis not installed in tests/node")
def test_ioredis_define_command_in_pipelines_and_multi(jail):
    script = jail.write("io.js", r'''
const Redis = require(process.argv[2]);
(async () => {
  const r = new Redis({ host: "redis.test", port: 6379, maxRetriesPerRequest: 1 });
  r.defineCommand("addAndGet", {
    numberOfKeys: 1,
    lua: "redis.call('rpush', KEYS[1], ARGV[1]); return redis.call('lrange', KEYS[1], 0, -1)",
  });
  r.defineCommand("echoJson", {
    numberOfKeys: 0,
    lua: "local v = cjson.decode(ARGV[1]); v.seen = true; return cjson.encode(v)",
  });
  const out = {};
  out.direct = await r.addAndGet("io:list", "a");
  out.pipeline = (await r.pipeline().addAndGet("io:list", "b").addAndGet("io:list", "c").exec()).map(x => x[1]);
  out.multi = (await r.multi().addAndGet("io:list", "d").llen("io:list").exec()).map(x => x[1]);
  out.json = JSON.parse(await r.echoJson(JSON.stringify({ n: 1 })));
  try { await r.eval("return redis.call('nosuch')", 0); } catch (e) { out.err = e.message; }
  console.log(JSON.stringify(out));
  r.disconnect();
})().catch(e => { console.error(e); process.exit(1); });
''')
    res = ok(jail.run(["node", script, str(NODE_DIR / "node_modules" / "ioredis")], rules=RULES))
    out = res.json_out()
    assert out["direct"] == ["a"]
    assert out["pipeline"] == [["a", "b"], ["a", "b", "c"]]
    assert out["multi"] == [["a", "b", "c", "d"], 4]
    assert out["json"] == {"n": 1, "seen": True}
    assert out["err"].startswith("ERR Unknown Redis command called from script script: ")


LIBRARY = """#!lua name=mylib
redis.register_function('f1', function(keys, args) return {keys[1], args[1]} end)
redis.register_function{function_name='reader', callback=function(keys)
  return redis.call('get', keys[1]) end, flags={'no-writes'}, description='reads a key'}
redis.register_function('writer', function(keys, args)
  redis.call('set', keys[1], args[1]); return string.upper('ok') end)
redis.register_function('boom', function() error('boom') end)
redis.register_function('spin', function() while true do end end)
"""


@need_py
def test_functions_load_call_list_dump_restore(jail):
    import json
    res = ok(pyrun(jail, f'''
LIBRARY = {json.dumps(LIBRARY)}
r = Raw()
out = {{}}
out["load"] = r("FUNCTION", "LOAD", LIBRARY)
out["again"] = r("FUNCTION", "LOAD", LIBRARY)
out["replace"] = r("FUNCTION", "LOAD", "REPLACE", LIBRARY)
out["f1"] = r("FCALL", "f1", 1, "k", "a")
out["case"] = r("FCALL", "F1", 1, "k", "a")
out["reader_ro"] = r("FCALL_RO", "reader", 1, "greeting")
out["writer_ro"] = r("FCALL_RO", "writer", 1, "x", "v")
out["writer"] = r("FCALL", "writer", 1, "x", "v")
out["x"] = r("GET", "x")
out["boom"] = r("FCALL", "boom", 0)
out["missing"] = r("FCALL", "nope", 0)
out["bad_numkeys"] = r("FCALL", "f1", "x")
out["taken"] = r("FUNCTION", "LOAD", "#!lua name=other\\nredis.register_function('f1', function() end)")
out["none"] = r("FUNCTION", "LOAD", "#!lua name=empty\\nreturn 1")
out["no_meta"] = r("FUNCTION", "LOAD", "return 1")
out["load_env"] = r("FUNCTION", "LOAD", "#!lua name=bad\\nredis.call('ping')")
out["compile"] = r("FUNCTION", "LOAD", "#!lua name=bad\\nlocal x = 1 +")
out["list"] = r("FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", "my*")
out["stats"] = r("FUNCTION", "STATS")
dump = r.s.sendall(b"*2\\r\\n$8\\r\\nFUNCTION\\r\\n$4\\r\\nDUMP\\r\\n")
line = r.f.readline()
payload = r.f.read(int(line[1:]) + 2)[:-2]
out["flush"] = r("FUNCTION", "FLUSH")
out["after_flush"] = r("FCALL", "f1", 0)
out["restore"] = r("FUNCTION", "RESTORE", payload)
out["restored"] = r("FCALL", "f1", 1, "k", "a")
out["append_again"] = r("FUNCTION", "RESTORE", payload)
out["bad_payload"] = r("FUNCTION", "RESTORE", b"junk" * 4)
out["delete"] = r("FUNCTION", "DELETE", "mylib")
out["delete_again"] = r("FUNCTION", "DELETE", "mylib")
print(json.dumps(out))
'''))
    out = res.json_out()
    assert out["load"] == "mylib" and out["replace"] == "mylib"
    assert out["again"] == "-ERR Library 'mylib' already exists"
    assert out["f1"] == ["k", "a"] and out["case"] == ["k", "a"]
    assert out["reader_ro"] == "hello"
    assert out["writer_ro"] == "-ERR Can not execute a script with write flag using *_ro command."
    assert out["writer"] == "OK" and out["x"] == "v"
    assert out["boom"] == "-ERR user_function:7: boom script: boom, on @user_function:7."
    assert out["missing"] == "-ERR Function not found"
    assert out["bad_numkeys"] == "-ERR Bad number of keys provided"
    assert out["taken"] == "-ERR Function f1 already exists"
    assert out["none"] == "-ERR No functions registered"
    assert out["no_meta"] == "-ERR Missing library metadata"
    assert out["load_env"] == ("-ERR Error registering functions: ERR user_function:2: Script attempted "
                               "to access nonexistent global variable 'call'")
    assert out["compile"] == ("-ERR Error compiling function: user_function:2: "
                              "unexpected symbol near '<eof>'")
    [lib] = out["list"]
    assert lib[:4] == ["library_name", "mylib", "engine", "LUA"]
    assert lib[4] == "functions"
    assert lib[5][1] == ["name", "reader", "description", "reads a key", "flags", ["+no-writes"]]
    assert lib[6:] == ["library_code", LIBRARY]
    assert out["stats"] == ["running_script", None, "engines",
                            ["LUA", ["libraries_count", 1, "functions_count", 5]]]
    assert out["flush"] == "+OK" and out["after_flush"] == "-ERR Function not found"
    assert out["restore"] == "+OK" and out["restored"] == ["k", "a"]
    assert out["append_again"] == "-ERR Library mylib already exists"
    assert out["bad_payload"] == "-ERR DUMP payload version or checksum are wrong"
    assert out["delete"] == "+OK" and out["delete_again"] == "-ERR Library not found"


@need_py
def test_function_kill_and_stats_while_a_function_runs(jail):
    import json
    res = ok(pyrun(jail, f'''
a = redis.Redis(host="redis.test", decode_responses=True)
b = Raw()
out = {{}}
b("CONFIG", "SET", "busy-reply-threshold", "200")
a.function_load({json.dumps(LIBRARY)})
def spin():
    try:
        a.fcall("spin", 0)
    except redis.ResponseError as e:
        out["killed"] = str(e)
t = threading.Thread(target=spin)
t.start()
time.sleep(0.4)
out["ping"] = b("PING")
out["script_kill"] = b("SCRIPT", "KILL")
stats = b("FUNCTION", "STATS")
out["running"] = stats[1][:4]
out["kill"] = b("FUNCTION", "KILL")
t.join(10)
out["after"] = b("PING")
print(json.dumps(out))
'''))
    out = res.json_out()
    busy = "-BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."
    assert out["ping"] == busy and out["script_kill"] == busy
    assert out["running"] == ["name", "spin", "command", ["FCALL", "spin", "0"]]
    assert out["kill"] == "+OK"
    assert out["killed"] == "Script killed by user with SCRIPT KILL... script: spin, on @user_function:8."
    assert out["after"] == "+PONG"


@need_py
def test_the_documented_example_runs_as_written(jail):
    """rules/README.md's scripting example, against the example rules file
    it names, prints what its comments say."""
    import re
    readme = (HERE.parent / "rules" / "README.md").read_text()
    block = re.search(r"<!-- example: redis-scripting -->\n```python\n(.*?)```", readme, re.S)
    assert block, "rules/README.md lost its scripting example"
    code = block.group(1)
    wanted = [m.group(1).strip() for m in re.finditer(r"\)[ \t]*#[ \t]*(.+)$", code, re.M)]
    script = jail.write("example.py", code)
    res = ok(jail.run([PYTHON, script], rules=str(HERE.parent / "rules" / "examples" / "redis-scripts.yaml")))
    printed = [line.strip() for line in res.stdout.strip().splitlines()]
    assert printed == wanted, res.describe()


@need_py
def test_admin_reset_forgets_scripts_and_functions(meshwrap_bin, tmp_path):
    """POST /reset puts a Redis service back to a fresh server: its
    cached scripts and function libraries go with its keys."""
    import json
    import requests
    from conftest import closed_port, jail_env, wait_for
    port = closed_port()
    loaded, go, out = tmp_path / "loaded", tmp_path / "go", tmp_path / "out.json"
    sut = tmp_path / "sut.py"
    sut.write_text(f'''
import json, os, time, redis
r = redis.Redis(host="redis.test", decode_responses=True)
sha = r.script_load("return 1")
r.function_load("#!lua name=lib\\nredis.register_function('one', function() return 1 end)")
before = [r.script_exists(sha), r.fcall("one", 0)]
open({str(loaded)!r}, "w").write("1")
while not os.path.exists({str(go)!r}):
    time.sleep(0.05)
after = [r.script_exists(sha), r.function_list()]
try:
    r.fcall("one", 0)
except redis.ResponseError as e:
    after.append(str(e))
open({str(out)!r}, "w").write(json.dumps([before, after]))
''')
    proc = subprocess.Popen(
        [meshwrap_bin, "--quiet", "--admin", f"127.0.0.1:{port}", "--rules", RULES,
         "--", PYTHON, str(sut)], env=jail_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        assert wait_for(loaded.exists, 20), proc.stderr.read1().decode() if proc.poll() else "no start"
        r = requests.post(f"http://127.0.0.1:{port}/reset?service=cache", timeout=10)
        assert r.status_code == 200, r.text
        go.write_text("go")
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read().decode()
    before, after = json.loads(out.read_text())
    assert before == [[True], 1]
    assert after == [[False], [], "Function not found"]


@need_py
def test_hostile_scripts_get_errors_and_the_service_goes_on(jail):
    """Scripts that exhaust memory, recurse without end, return a table
    that holds itself, feed the libraries junk or loop inside a coroutine
    get an error; the service answers the next command."""
    res = ok(pyrun(jail, r'''
r = Raw()
b = Raw()
out = {}
out["memory"] = r("EVAL", "return string.rep('x', 2^30)", 0)
out["after_memory"] = r("EVAL", "return string.rep('ab', 3)", 0)
out["recursion"] = r("EVAL", "local function f() return 1 + f() end return f()", 0)
sys.setrecursionlimit(10000)
nested, depth = r("EVAL", "local t = {} t[1] = t return t", 0), 0
while isinstance(nested, list):
    nested, depth = nested[0], depth + 1
# As Redis: arrays of one, down to where the stack ends, then the error.
out["self_table"] = [depth > 100, nested]
out["self_json"] = r("EVAL", "local t = {} t[1] = t return cjson.encode(t)", 0)
out["msgpack"] = r("EVAL", "return cmsgpack.unpack('\\221\\255\\255\\255\\255')", 0)
out["struct"] = r("EVAL", "return struct.pack('i9', 1)", 0)
b("CONFIG", "SET", "busy-reply-threshold", "100")
done = {}
def spin():
    done["spin"] = Raw()("EVAL", "local co = coroutine.wrap(function() while true do end end) co()", 0)
t = threading.Thread(target=spin)
t.start()
time.sleep(0.4)
out["kill"] = b("SCRIPT", "KILL")
t.join(10)
out["coroutine"] = done.get("spin")
out["yield"] = r("EVAL", "local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) "
                 "return b * 2 end) return {co(1), co(5)}", 0)
out["ping"] = r("PING")
print(json.dumps(out))
'''))
    out = res.json_out()
    assert out["memory"] == ("-ERR Error running script " + sha1("return string.rep('x', 2^30)")
                             + ", not enough memory")
    assert out["after_memory"] == "ababab"
    assert out["recursion"].startswith("-ERR user_script:1: stack overflow script: ")
    assert out["self_table"] == [True, "-ERR reached lua stack limit"]
    assert out["self_json"].startswith("-ERR Cannot serialise, excessive nesting (1001) script: ")
    assert out["msgpack"].startswith("-ERR Missing bytes in input. script: ")
    assert out["struct"].startswith("-ERR integral size 9 is larger than limit of 8 script: ")
    assert out["kill"] == "+OK"
    assert out["coroutine"].startswith("-ERR Script killed by user with SCRIPT KILL...")
    assert out["yield"] == [2, 10]
    assert out["ping"] == "+PONG"


@need_py
def test_a_script_starting_during_a_fault_latency_never_stalls_the_jail(jail):
    """A command sleeping in a latency fault when a script starts takes its
    turn again before the keyspace: meanwhile DNS and other connections
    go on, and inside MULTI a BUSY refusal dooms the transaction."""
    res = ok(pyrun(jail, r'''
a = redis.Redis(host="flaky.redis.test", decode_responses=True)
b = redis.Redis(host="flaky.redis.test", decode_responses=True)
c = Raw("flaky.redis.test")
out = {}
c("CONFIG", "SET", "busy-reply-threshold", "400")
def get_slow():
    try:
        out["slow"] = a.get("slow:1")
    except redis.ResponseError as e:
        out["slow"] = str(e)
slow = threading.Thread(target=get_slow)
slow.start()          # sleeps 300 ms in its fault
time.sleep(0.05)
script = threading.Thread(target=lambda: out.setdefault("script", b.eval(
    "local t0 = tonumber(redis.call('time')[1]) "
    "while tonumber(redis.call('time')[1]) - t0 < 2 do end return 'done'", 0)))
script.start()
time.sleep(0.6)
out["dns"] = socket.gethostbyname("during-a-script.test")
out["script_running"] = script.is_alive()
c("MULTI")
out["queued"] = c("INCR", "n")
out["exec"] = c("EXEC")
slow.join(10)
script.join(10)
print(json.dumps(out))
''', rules=str(HERE / "redis_rules" / "faults.yaml")))
    out = res.json_out()
    assert out["dns"].count(".") == 3 and out["script_running"] is True
    assert out["queued"] == "-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
    assert out["exec"] == ("-EXECABORT Transaction discarded because of: BUSY Redis is busy running "
                           "a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.")
    # Its latency ended while the script ran: it waited its turn, and past
    # the threshold got BUSY like any other command.
    assert out["slow"].startswith("BUSY Redis is busy running a script.")
    assert out["script"] == "done"


@need_py
def test_the_sandbox_is_read_only_across_scripts(jail):
    """What one script tries on the globals and the libraries is refused,
    and the next script sees them as they were."""
    res = ok(pyrun(jail, r'''
r = Raw()
out = {}
tries = ["rawset(_G, 'leak', 1)", "string.rep = function() return 'x' end", "cjson.encode = nil",
         "setmetatable(_G, nil)", "redis.call = nil", "getfenv(0).cjson = nil",
         "loadstring('cjson = nil')()", "setfenv(0, {})"]
out["tries"] = [r("EVAL", t, 0).split(" script: ")[0] for t in tries]
out["after"] = r("EVAL", "return string.rep('a', 3) .. cjson.encode({1}) .. tostring(_G.redis ~= nil)", 0)
out["leak"] = r("EVAL", "return leak", 0).split(" script: ")[0]
out["newproxy"] = r("EVAL", "return newproxy", 0).split(" script: ")[0]
print(json.dumps(out))
'''))
    out = res.json_out()
    assert out["tries"][:6] == ["-ERR user_script:1: Attempt to modify a readonly table"] * 6
    assert out["tries"][6].endswith("Attempt to modify a readonly table")
    assert out["tries"][7] == "-ERR user_script:1: Attempt to modify a readonly table"
    assert out["after"] == "aaa[1]true"
    assert out["leak"] == "-ERR user_script:1: Script attempted to access nonexistent global variable 'leak'"
    assert out["newproxy"] == "-ERR user_script:1: Script attempted to access nonexistent global variable 'newproxy'"


@need_py
def test_admin_reset_during_a_script_kills_it_and_resets_after(meshwrap_bin, tmp_path):
    """POST /reset while a script runs does not wait for it on the data
    plane: the script is killed, the service resets when it ends, and DNS
    in the jail answers meanwhile."""
    import json
    import requests
    from conftest import closed_port, jail_env, wait_for
    port = closed_port()
    started, out = tmp_path / "started", tmp_path / "out.json"
    sut = tmp_path / "sut.py"
    sut.write_text(f'''
import json, socket, threading, time, redis
a = redis.Redis(host="redis.test", decode_responses=True)
b = redis.Redis(host="redis.test", decode_responses=True)
b.set("mine", "1")
res = {{}}
def spin():
    try:
        a.eval("while true do end", 0)
    except redis.ResponseError as e:
        res["spin"] = str(e)
t = threading.Thread(target=spin)
t.start()
time.sleep(0.3)
open({str(started)!r}, "w").write("1")
time.sleep(0.5)
res["dns"] = socket.gethostbyname("while-resetting.test")
t.join(10)
res["mine"] = b.get("mine")
res["greeting"] = b.get("greeting")
open({str(out)!r}, "w").write(json.dumps(res))
''')
    proc = subprocess.Popen(
        [meshwrap_bin, "--quiet", "--admin", f"127.0.0.1:{port}", "--rules", RULES,
         "--", PYTHON, str(sut)], env=jail_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        assert wait_for(started.exists, 20), "the SUT did not start its script"
        r = requests.post(f"http://127.0.0.1:{port}/reset?service=cache", timeout=10)
        assert r.status_code == 200, r.text
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read().decode()
    res = json.loads(out.read_text())
    assert res["spin"].startswith("Script killed by user with SCRIPT KILL...")
    assert res["dns"].count(".") == 3
    assert res["mine"] is None and res["greeting"] == "hello"
