-- Runs once per interpreter, as trusted code, before any script: builds
-- the `redis` table, installs the libraries, replaces math.random
-- with Redis's deterministic one, wraps pcall/xpcall so a killed script
-- cannot catch its own end, and installs the handler that gives every
-- error the source and line Redis reports. `host` is the Rust side; the
-- chunk returns the runner.
local host = ...
local error, type, tostring, select, pairs, xpcall, pcall, setmetatable, rawget =
      error, type, tostring, select, pairs, xpcall, pcall, setmetatable, rawget
local getinfo, sethook = debug.getinfo, debug.sethook

-- The value a Rust function raised, in place of the userdata mlua raised
-- for it (see libs/mod.rs); another Rust error (a bad argument) becomes
-- its message, without Rust's traceback.
local function unwrap(e)
  if type(e) == 'userdata' then
    local text = tostring(e)
    if text:find('meshwrap: raised', 1, true) then
      local parked = host.take_raised()
      if parked ~= nil then return parked end
    end
    return (text:gsub('\nstack traceback:.*$', ''))
  end
  return e
end

for name, lib in pairs(host.libs) do
  _G[name] = lib
end

local redis = {}
-- redis.call and redis.pcall are set from Rust for each run.
-- Redis keeps a message's first word as its error code when there are
-- two words or more, and gives a one-word message the code ERR.
function redis.error_reply(...)
  local msg = ...
  if select('#', ...) ~= 1 or type(msg) ~= 'string' then
    return { err = 'ERR wrong number or type of arguments' }
  end
  if msg:sub(1, 1) == '-' then msg = msg:sub(2) end
  if not msg:find(' ', 1, true) then msg = 'ERR ' .. msg end
  return { err = msg }
end
function redis.status_reply(...)
  local msg = ...
  if select('#', ...) ~= 1 or type(msg) ~= 'string' then
    return { err = 'ERR wrong number or type of arguments' }
  end
  return { ok = msg }
end
redis.sha1hex = host.sha1hex
redis.log = host.log
redis.setresp = host.setresp
redis.acl_check_cmd = host.acl_check_cmd
redis.set_repl = host.set_repl
function redis.replicate_commands() return true end
function redis.breakpoint() return false end
function redis.debug() end
redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3
redis.REPL_NONE, redis.REPL_AOF, redis.REPL_SLAVE, redis.REPL_REPLICA, redis.REPL_ALL = 0, 1, 2, 2, 3
redis.REDIS_VERSION = host.version
redis.REDIS_VERSION_NUM = host.version_num
_G.redis = redis

math.random = host.random
math.randomseed = host.randomseed

-- A killed or timed-out script may not catch the error that ends it; and
-- as in Redis, pcall gives a Redis error table back as its message.
local function rethrow(ok, ...)
  if not ok then
    if host.stopping() then error((...), 0) end
    local e = unwrap((...))
    if type(e) == 'table' and type(rawget(e, 'err')) == 'string' then
        return false, rawget(e, 'err')
    end
    return false, e
  end
  return ok, ...
end
_G.pcall = function(f, ...) return rethrow(pcall(f, ...)) end
_G.xpcall = function(f, h) return rethrow(xpcall(f, h)) end

-- The count hook that stops a killed or timed-out script is the main
-- thread's; a coroutine gets one of its own, or a loop inside it could
-- not be stopped.
local co_create, co_resume = coroutine.create, coroutine.resume
local function hooked(co)
  sethook(co, function()
    if host.stopping() then error("ERR Script killed", 0) end
  end, "", 10000)
  return co
end
coroutine.create = function(f) return hooked(co_create(f)) end
local function stop_passes(ok, ...)
  if not ok and host.stopping() then error((...), 0) end
  return ok, ...
end
coroutine.resume = function(co, ...) return stop_passes(co_resume(co, ...)) end
coroutine.wrap = function(f)
  local co = hooked(co_create(f))
  local function pass(ok, ...)
    if ok then return ... end
    error((...), 0)
  end
  return function(...) return pass(co_resume(co, ...)) end
end

-- What Redis leaves out of the sandbox.
-- newproxy's userdata can carry a __gc finalizer, and Lua 5.1 runs
-- finalizers with hooks off: a loop there could never be stopped.
_G.loadfile, _G.dofile, _G.print, _G.debug, _G.newproxy = nil, nil, nil, nil, nil

local function handler(err)
  err = unwrap(err)
  local level, info = 2, nil
  repeat
    info = getinfo(level, 'Sl')
    level = level + 1
  until not info or (info.what ~= 'C' and info.what ~= 'tail' and info.source ~= '=meshwrap')
  if type(err) ~= 'table' then
    err = { err = 'ERR ' .. tostring(err) }
  end
  if info then
    err.source = info.source
    err.line = info.currentline
  end
  return err
end

-- Functions (FUNCTION LOAD): a library's code runs in an environment of
-- its own that sees only the load-time `redis` table; once loaded, the
-- environment falls through to the sandbox's globals for its functions'
-- runs (but not KEYS and ARGV, which are EVAL's).
local function readonly() error("Attempt to modify a readonly table", 2) end
local function missing(k)
  error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 3)
end
local load_redis = {
  register_function = host.register_function, log = host.log,
  LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
  REDIS_VERSION = host.version, REDIS_VERSION_NUM = host.version_num,
}
local load_globals = {
  redis = setmetatable({}, {
    __index = function(_, k)
      local v = load_redis[k]
      if v == nil then missing(k) end
      return v
    end,
    __newindex = readonly,
  }),
}
function host.library_env()
  return setmetatable({}, {
    __index = function(_, k)
      local v = load_globals[k]
      if v == nil then missing(k) end
      return v
    end,
    __newindex = readonly,
  })
end
function host.activate(env)
  setmetatable(env, {
    __index = function(_, k)
      local v = rawget(_G, k)
      if v == nil or k == 'KEYS' or k == 'ARGV' then missing(k) end
      return v
    end,
    __newindex = readonly,
  })
end
function host.bind(f, keys, args)
  return function() return f(keys, args) end
end

-- Read-only, as Redis makes the sandbox. Scripts see the globals through
-- `env`, a proxy that errors on a missing name and on any assignment; the
-- libraries are proxies too, and rawset, setmetatable, getfenv, setfenv,
-- load and loadstring cannot reach around them. Without this one script's
-- `cjson = nil` would stay for every later one. KEYS and ARGV are set in
-- the real globals from Rust.
local raw_rawset, raw_setmetatable, raw_getfenv, raw_setfenv = rawset, setmetatable, getfenv, setfenv
local raw_load, raw_loadstring = load, loadstring
local protected = {}
local function proxy(t)
  local p = raw_setmetatable({}, { __index = t, __newindex = readonly, __metatable = false })
  protected[p] = true
  return p
end
host.redis = redis
for _, name in ipairs({ 'string', 'math', 'table', 'coroutine', 'redis', 'cjson', 'cmsgpack', 'bit', 'struct' }) do
  _G[name] = proxy(_G[name])
end
getmetatable('').__metatable = false
local env = raw_setmetatable({}, {
  __index = function(self, k)
    if k == '_G' then return self end
    local v = rawget(_G, k)
    if v == nil then missing(k) end
    return v
  end,
  __newindex = readonly,
  __metatable = false,
})
protected[env], protected[_G] = true, true
host.env = env
local function guard(t)
  if protected[t] then error("Attempt to modify a readonly table", 3) end
end
_G.rawset = function(t, k, v) guard(t); return raw_rawset(t, k, v) end
_G.setmetatable = function(t, mt) guard(t); return raw_setmetatable(t, mt) end
local function level(f)
  if type(f) == 'number' and f > 0 then return f + 1 end
  return f
end
_G.getfenv = function(f)
  local e = raw_getfenv(level(f or 1))
  if e == _G then return env end
  return e
end
_G.setfenv = function(f, t)
  if f == 0 then error("Attempt to modify a readonly table", 2) end
  return raw_setfenv(level(f), t)
end
local function in_env(f, ...)
  if f then raw_setfenv(f, env) end
  return f, ...
end
_G.loadstring = function(...) return in_env(raw_loadstring(...)) end
_G.load = function(...) return in_env(raw_load(...)) end
raw_setmetatable(_G, {
  __index = function(_, k) missing(k) end,
  __newindex = readonly,
})

return function(f)
  return xpcall(f, handler)
end
