-- Shared fragments of the `emp` Redis Function library. Every function gets
-- KEYS[1] = the shard anchor `emp:{<shard>}:shard`; every other key it touches
-- is derived from that anchor and so shares its hash tag (one cluster slot).

-- In a function library every read of a global (redis.call, tonumber, string...)
-- misses the library's own globals table and goes through its metatable: it
-- costs several times a local's read, and a transition makes a hundred of them.
-- Globals cannot be read while the library loads, so the library binds them to
-- these locals on the first call it serves (`register` wraps every function).
local function read_globals()
  return redis.call, tonumber, tostring, unpack, ipairs, pairs, type, next, error, pcall, string, table, math, cjson
end
local call, tonumber, tostring, unpack, ipairs, pairs, type, next, error, pcall, string, table, math, cjson

local function bind_globals()
  call, tonumber, tostring, unpack, ipairs, pairs, type, next, error, pcall, string, table, math, cjson = read_globals()
end

-- What one call read of the shard and may need again, kept for the rest of that call
-- only: `register` clears it as each call starts. Its users say what is kept and why
-- nothing in the same call changes it meanwhile. (One table for the library's life, its
-- fields named here: clearing and setting them allocates nothing. It also holds the
-- reader that fills memo.paused, memo.paused_services in 20-queue.lua.)
local memo = { paused = nil, nobody_idle = nil, dclass_of = nil, dclass = nil }

-- Registers `fn` as FCALL-able function `name`; `read_only` ones may run on replicas (FCALL_RO).
local function register(name, fn, read_only)
  local function callback(keys, args)
    -- `call` is nil until the first call binds the globals
    if not call then bind_globals() end
    memo.paused, memo.nobody_idle, memo.dclass_of, memo.dclass = nil, nil, nil, nil
    return fn(keys, args)
  end
  if read_only then
    redis.register_function { function_name = name, callback = callback, flags = { 'no-writes' } }
  else
    redis.register_function(name, callback)
  end
end

local PRIORITY_SPAN = 4398046511104 -- 2^42: room for the per-shard sequence inside one priority level
local ACTIVE = { starting = true, running = true }

-- Raised errors carry a stable code first, so the TypeScript side can map them to error classes.
local function raise(code, message)
  error({ err = code .. ' ' .. message })
end

-- A shard's anchor is checked and cut once for the library's life (shards are few):
-- every call starts here, and two string.sub calls cost more than the lookup. With the
-- prefix comes the shard's keys that most calls name (`events`, `classes`; see context),
-- made once too.
local prefix_of
do
  local prefixes, named = {}, {}
  function prefix_of(anchor)
    local p = prefixes[anchor]
    if p then return p, named[anchor] end
    if string.sub(anchor, -6) ~= ':shard' then
      raise('BAD_KEY', 'the first key must be the shard anchor emp:{<shard>}:shard, got ' .. anchor)
    end
    p = string.sub(anchor, 1, #anchor - 5)
    prefixes[anchor] = p
    named[anchor] = { events = p .. 'events', classes = p .. 'classes' }
    return p, named[anchor]
  end
end

-- The time in ms, as a number and as text. Redis arguments are passed as text:
-- a Lua number is formatted with sprintf on every redis.call, which costs more
-- than most of the commands a transition runs.
local function clock(arg)
  if arg ~= nil and arg ~= '' then
    return tonumber(arg), arg
  end
  local t = call('TIME')
  local us = t[2]
  -- the ms are the first three of the microseconds' six digits (padded when fewer)
  local ts = t[1] .. string.sub(#us == 6 and us or string.rep('0', 6 - #us) .. us, 1, 3)
  return ts + 0, ts -- (arithmetic reads the text once, tonumber twice)
end

local function num(value, default)
  if value == nil or value == false or value == '' then return default end
  return tonumber(value)
end

local function job_key(p, id) return p .. 'job:' .. id end
local function queue_key(p, class) return p .. 'q:' .. class end
local function class_key(p, class) return p .. 'class:' .. class end
local function worker_key(p, id) return p .. 'worker:' .. id end
local function machine_key(p, id) return p .. 'machine:' .. id end
local function signal_key(p, worker) return p .. 'signal:' .. worker end
local function profile_key(p, profile) return p .. 'profile:' .. profile end
-- Lanes: a class's queued jobs again, by tenant and by workflow, for workers that
-- may run only some of them (see 20-queue.lua).
local function tenant_lane_key(p, class, tenant) return p .. 'tq:' .. class .. ':' .. tenant end
local function lane_tenants_key(p, class) return p .. 'ct:' .. class end
local function workflow_lane_key(p, class, workflow) return p .. 'wq:' .. class .. ':' .. workflow end
-- Lanes cost every job a few commands, so a shard keeps them only once a
-- restricted worker has registered: `laned` is 'scanning' while the jobs already
-- queued are put into lanes, then 'done'.
local function laned_key(p) return p .. 'laned' end

-- The layout of the shard's stored data (job hashes, classes, lanes), kept in
-- `schema_version`: emp_migrate (migrate.lua) brings a shard written by an older
-- library up to it, and a shard that never held a job starts at it. A shard
-- without the key that holds jobs is at 1, the layout before versions were kept.
local SCHEMA_VERSION = '3'
local function schema_key(p) return p .. 'schema_version' end
-- Stamps a shard that has never held a job (`seq` counts every job ever submitted) with the current layout.
local function stamp_new_shard(p)
  if call('EXISTS', schema_key(p)) == 0 and call('EXISTS', p .. 'seq') == 0 then
    call('SET', schema_key(p), SCHEMA_VERSION)
  end
end

-- A job's `opt` field: '1' it has fields few jobs have (see 50-claim.lua),
-- 'l' it is in its class's lanes, '1l' both; absent, neither.
local function opt_fields(opt) return opt == '1' or opt == '1l' end
local function opt_laned(opt) return opt == 'l' or opt == '1l' end
local function opt_with_lanes(opt) return opt_fields(opt) and '1l' or 'l' end
-- A payload of up to INLINE_PAYLOAD bytes is a field of the job hash (which then
-- stays listpack-encoded: Redis's default hash-max-listpack-value is 64); a
-- larger one lives beside it in its own key, so the hash stays small either way.
local INLINE_PAYLOAD = 64
local function payload_key(p, id) return p .. 'payload:' .. id end

-- A queued job's payload of up to `pieces.MAX` bytes is in its hash too, in pieces of
-- INLINE_PAYLOAD bytes: `payload` the first, `pn` their number, `p2` .. `p<pn>` the
-- rest. One key per queued job instead of two saves about 100 bytes a job (the key,
-- its object and its entry in the keyspace), and the hash stays a listpack. A claim
-- moves the payload to its own key (`pieces.take_out`): results, errors and progress
-- reports over 64 bytes turn a hash into a hashtable, where each piece would cost
-- about 100 bytes. Only a `payload` field of exactly INLINE_PAYLOAD bytes can have
-- more pieces, so a reader looks for `pn` only then.
-- (One table, `pieces`, holds these: the library's chunk has room for 200 top-level locals.)
local pieces = { MAX = 8 * INLINE_PAYLOAD }

-- The field/value pairs after the first piece of `payload`, `pn` first.
function pieces.rest(payload)
  local n = math.ceil(#payload / INLINE_PAYLOAD)
  local fields = { 'pn', tostring(n) }
  for i = 2, n do
    fields[#fields + 1] = 'p' .. i
    fields[#fields + 1] = string.sub(payload, (i - 1) * INLINE_PAYLOAD + 1, i * INLINE_PAYLOAD)
  end
  return fields
end

-- `pn` and the names of every piece after the first a payload can have
pieces.NAMES = { 'pn' }
for i = 2, pieces.MAX / INLINE_PAYLOAD do pieces.NAMES[i] = 'p' .. i end

-- The whole payload of a job whose `payload` field is `first`, from `f`: its fields
-- by name (get_job's HGETALL) or as HMGET of pieces.NAMES returns them.
function pieces.join(first, f)
  local n = tonumber(f.pn or f[1])
  local parts = { first }
  for i = 2, n do parts[i] = f['p' .. i] or f[i] end
  return table.concat(parts)
end

-- A claimed job's payload: from its `payload` field `first` (and its pieces, which
-- move to a key of their own), or from its own key. '' when it has none.
function pieces.take_out(p, id, key, first)
  if not first then return call('GET', payload_key(p, id)) or '' end
  if #first ~= INLINE_PAYLOAD then return first end
  local f = call('HMGET', key, unpack(pieces.NAMES))
  if not f[1] then return first end
  local payload = pieces.join(first, f)
  call('SET', payload_key(p, id), payload)
  call('HDEL', key, 'payload', unpack(pieces.NAMES, 1, tonumber(f[1])))
  return payload
end

-- Reads a hash into a Lua table (HGETALL's flat reply folded).
local function hash_to_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- Appends an event (`...`: its field/value pairs) to the shard's stream, trimmed to about
-- `maxlen`; returns its stream id.
local function events_append(p, maxlen, ...)
  return call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*', ...)
end

-- Every mutating function receives the same prelude, so settings live in one
-- place (the TypeScript broker's config) and the virtual clock of the simulator
-- can replace Redis TIME: ARGV[1] now ('' = server time), ARGV[2] events max
-- length, ARGV[3] lease ms, ARGV[4] finished-job retention ms, ARGV[5] failed-job
-- retention ms, ARGV[6] ms a retried job avoids the worker it failed on.
-- (The lease belongs to the worker: a worker's heartbeat renews it for every job it holds.)
-- Function-specific arguments start at ARGV[7].
local PRELUDE = 6

-- `now` is for arithmetic, `ts` (the same instant as text) for passing to Redis. The
-- lease and avoid times stay text: Lua's arithmetic reads a number from text itself,
-- and most calls use neither (reading one costs about as much as a small command's reply).
-- The fields some calls add later are named here (nil), so that adding them does not
-- grow the table. Lua makes it with room for the fields named, rounded up to a power of
-- two: the list stays within 16, which leaves room for submit_many's demand and batch_classes
-- (its submit_shared, the seventeenth, grows the table once a call of up to a hundred jobs).
local function context(keys, args)
  local now, ts = clock(args[1])
  local p, shard = prefix_of(keys[1])
  return {
    p = p,
    now = now,
    ts = ts,
    maxlen = args[2],
    lease_ms = args[3],
    retention_ms = args[4],
    failed_retention_ms = args[5],
    avoid_ms = args[6],
    -- the shard's event stream and its set of non-empty classes (job_event, claim_for)
    events = shard.events,
    classes = shard.classes,
    -- see affinity.bounds (15-models.lua), complete.lua
    affinity_bounds = nil,
    affinity_wait_ms = nil,
    affinity_overdue_ms = nil,
    durations = nil,
  }
end
