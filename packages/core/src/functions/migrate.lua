-- migrate: brings the shard's stored data up to the layout this library writes
-- (SCHEMA_VERSION, includes/00-base.lua), a bounded page of work per call, so
-- that no call holds Redis for long however many jobs the shard keeps: the
-- caller calls again until the reply is 'done' (packages/core/src/migrations.ts
-- does, for every known pool, whenever it loads or finds the library). Where a
-- migration stands is kept in the shard (`schema_migration`: the version it
-- migrates from, its phase and cursor), so one cut short goes on where it
-- stopped, and every page is idempotent, so several processes may migrate a
-- shard at once. A shard without `schema_version` is at version 1 if it ever
-- held a job, else it is stamped with the current version.
-- KEYS[1] shard anchor
-- ARGV [1] now ('' server time)  [2..] the answer to a 'classes' reply: for each
--   class it named, the class id, today's class id and today's definition
-- Returns { 'done', version } once the shard is at the current layout (or a newer one),
--      or { 'more', version } (the version it is migrating from): call again,
--      or { 'classes', class id, stored definition, ... }: classes of an older
--         layout whose id and definition today's code must compute (the
--         TypeScript side owns requirement classes): call again with the answer.

-- Jobs (or classes, for the class list) one call looks at.
local MIGRATE_PAGE = 100

-- ------------------------------------------------------------- 1 -> 2
-- Version 1 is the layout before 2026-12-06. Since then:
-- * A class names neither the job's tenant (but under strict isolation) nor its
--   workflow: workers restricted to tenants or a workflow find jobs through the
--   class's lanes, which version 1 jobs are in no class of. Their classes are
--   recomputed ('classes'), their queued jobs move to today's class at the same
--   score, so they keep their place ('queues'), and every job's `class` follows
--   ('jobs'). An old class keeps its hash, with `moved_to`, and leaves the class lists.
-- * A claim reads a job's workflow, step, execution timeout and deadlines only
--   when its `opt` says it has some: a version 1 job with any gets `opt`.
-- * The fencing token is the `attempts` field: `token` goes, as do attempt
--   budgets equal to the defaults (3 and 10), which are no longer stored.
-- * A worker waiting in `idle` says so on its hash (`waiting`) ('workers').

local function names_tenant_or_workflow(def)
  local req = cjson.decode(def)
  return req.workflow_id ~= nil or (req.tenant ~= nil and req.isolation ~= 'strict')
end

-- Records that `old` is `new` today: creates `new` as a submit would (routable or
-- not for the profiles registered so far; keeping lanes when the shard does).
local function record_class(ctx, old, new, def)
  local p = ctx.p
  if new ~= old then
    local key = class_key(p, new)
    if call('HEXISTS', key, 'def') == 0 then
      local routable = '0'
      local req = cjson.decode(def)
      for _, profile in ipairs(call('SMEMBERS', p .. 'profiles')) do
        if satisfies(load_profile(p, profile), req) then routable = '1'; break end
      end
      call('HSET', key, 'def', def, 'routable', routable, 'created_at', ctx.ts)
      if routable == '0' then call('SADD', p .. 'unroutable', new) end
    end
    if call('EXISTS', laned_key(p)) == 1 then call('HSET', key, 'laned', '1') end
  end
  call('HSET', class_key(p, old), 'moved_to', new)
end

-- Brings one job hash to the layout of version 2, moving it into today's class
-- when it is queued in an old one (same score: it keeps its place). Returns the
-- class it moved into, or nil.
local function migrate_job(ctx, id)
  local p = ctx.p
  local key = job_key(p, id)
  local f = call('HMGET', key, 'state', 'class', 'tenant', 'opt', 'token', 'max_attempts', 'max_infra_attempts',
    'workflow_id', unpack(OPTIONAL_TAKE_FIELDS))
  if not f[1] then return nil end
  local state, class, tenant, opt, workflow = f[1], f[2], f[3], f[4], f[8] or nil
  local fields = false
  for i = 9, 8 + #OPTIONAL_TAKE_FIELDS do
    if f[i] then fields = true end
  end
  local laned = opt_laned(opt)
  local moved_to = class and call('HGET', class_key(p, class), 'moved_to')
  local into = nil
  if moved_to and moved_to ~= class then
    local score = state == 'queued' and call('ZSCORE', queue_key(p, class), id)
    if score then
      remove_from_queue(p, id, class, tenant, workflow, laned)
      local ckey = class_key(p, moved_to)
      if not call('HGET', ckey, 'listed') then
        call('HSET', ckey, 'listed', '1')
        call('SADD', p .. 'classlist', moved_to)
      end
      call('ZADD', queue_key(p, moved_to), score, id)
      call('ZADD', p .. 'classes', 'LT', score, moved_to)
      laned = call('EXISTS', laned_key(p)) == 1
      if laned then add_to_lanes(p, id, moved_to, score, tenant, workflow) end
      into = moved_to
    end
    call('HSET', key, 'class', moved_to)
  end
  local new_opt = (fields and '1' or '') .. (laned and 'l' or '')
  if new_opt ~= (opt or '') then
    if new_opt == '' then call('HDEL', key, 'opt') else call('HSET', key, 'opt', new_opt) end
  end
  if f[5] then call('HDEL', key, 'token') end
  if f[6] == '3' then call('HDEL', key, 'max_attempts') end
  if f[7] == '10' then call('HDEL', key, 'max_infra_attempts') end
  return into
end

-- Wakes an idle worker for each class that jobs moved into (one a restricted
-- worker can reach only now, through the new class's lanes, may be waiting).
local function wake_for(p, classes)
  for class in pairs(classes) do wake_for_head(p, class, nil) end
end

local function to_v2(ctx, m, args)
  local p = ctx.p
  if m.phase == 'classes' then
    for i = 2, #args - 2, 3 do record_class(ctx, args[i], args[i + 1], args[i + 2]) end
    local scan = call('SSCAN', p .. 'classlist', m.cursor, 'COUNT', CLASS_SCAN_PAGE)
    local ask = { 'classes' }
    for _, class in ipairs(scan[2]) do
      local c = call('HMGET', class_key(p, class), 'def', 'moved_to')
      if c[1] and not c[2] and names_tenant_or_workflow(c[1]) then
        ask[#ask + 1] = class
        ask[#ask + 1] = c[1]
      end
    end
    if #ask > 1 then return ask end
    m.cursor = scan[1]
    if m.cursor == '0' then m.phase = 'queues' end
  elseif m.phase == 'queues' then
    -- empties the old classes' queues a page of jobs per call, then takes them off the class lists
    local scan = call('SSCAN', p .. 'classlist', m.cursor, 'COUNT', CLASS_SCAN_PAGE)
    local budget, moved = MIGRATE_PAGE, {}
    for _, class in ipairs(scan[2]) do
      local ckey = class_key(p, class)
      local moved_to = call('HGET', ckey, 'moved_to')
      if moved_to and moved_to ~= class then
        local queue = queue_key(p, class)
        for _, id in ipairs(call('ZRANGE', queue, '0', tostring(budget - 1))) do
          local into = migrate_job(ctx, id)
          if into then
            moved[into] = true
          else
            call('ZREM', queue, id) -- no queued job of that id: nothing to move, and the queue must empty
          end
          budget = budget - 1
        end
        if call('EXISTS', queue) == 1 then
          -- a page did not empty it: the next call scans this page again
          wake_for(p, moved)
          return nil
        end
        call('ZREM', p .. 'classes', class)
        call('SREM', p .. 'classlist', class)
        call('SREM', p .. 'unroutable', class)
        call('HDEL', ckey, 'listed')
      elseif not call('HGET', ckey, 'listed') then
        call('HSET', ckey, 'listed', '1')
      end
      if budget <= 0 then break end
    end
    wake_for(p, moved)
    if budget > 0 then
      m.cursor = scan[1]
      if m.cursor == '0' then m.phase, m.cursor = 'jobs', '' end
    end
  elseif m.phase == 'jobs' then
    -- every job the shard keeps, by the submission index, resumed after the last
    -- one looked at (by its rank, or where its score was if it has left the index)
    local index = p .. 'jobs'
    local start = 0
    if m.cursor ~= '' then
      local sep = string.find(m.cursor, ' ', 1, true)
      local rank = call('ZRANK', index, string.sub(m.cursor, sep + 1))
      start = rank and rank + 1 or call('ZCOUNT', index, '-inf', '(' .. string.sub(m.cursor, 1, sep - 1))
    end
    local page = call('ZRANGE', index, start, start + MIGRATE_PAGE - 1, 'WITHSCORES')
    local moved = {}
    for i = 1, #page, 2 do
      local member = page[i]
      local into = migrate_job(ctx, string.sub(member, 1, string.find(member, '|', 1, true) - 1))
      if into then moved[into] = true end
    end
    wake_for(p, moved)
    if #page < 2 * MIGRATE_PAGE then
      m.phase, m.cursor = 'workers', ''
    else
      m.cursor = page[#page] .. ' ' .. page[#page - 1]
    end
  elseif m.phase == 'workers' then
    local idle = call('HGETALL', p .. 'idle')
    for i = 1, #idle, 2 do
      local key = worker_key(p, idle[i])
      if not call('HGET', key, 'waiting') then call('HSET', key, 'waiting', '1') end
    end
    m.phase = 'done'
  end
  return nil
end

-- ------------------------------------------------------------- 2 -> 3
-- Version 3 is the layout of 2026-12-07, which a queued job costs less memory in
-- (docs/broker.md, "What a queued job costs in memory"). Nothing is moved: the
-- library reads both layouts, so the step only records the new one.
-- * The submission index is two streams (`joblog`, `joblog:tenant:<tenant>`),
--   with the sorted sets that were all of it (`jobs`, `jobs:tenant:<tenant>`)
--   now keeping only the jobs kept long. A listing merges both in time order and
--   the sweep empties the sorted sets of jobs that expired, so the jobs indexed
--   there before stay where they are (list_jobs.lua, tick.lua).
-- * A job's duration class is on its requirement class (`dclass`); a job that
--   carries its own is read as before (complete.lua, get_job.lua).
-- * A queued job's payload of up to 512 bytes is in pieces in its hash (`pieces`,
--   00-base.lua); a payload in its own key is read as before.
-- A library older than version 3 would see only the first 64 bytes of a payload in
-- pieces and list no job submitted since: it must not be loaded again over a
-- version 3 shard that holds queued jobs.
local function to_v3(ctx, m)
  m.phase = 'done'
end

-- STEPS[v] brings a shard from version v to v + 1, a page per call: it gets the
-- migration's state m (phase, cursor; both '' at first), changes it, and sets
-- its phase to 'done' when the shard is at v + 1. It may answer the caller with
-- a reply of its own (a question) instead.
local STEPS = { [1] = to_v2, [2] = to_v3 }
local FIRST_PHASE = { [1] = 'classes', [2] = 'record' }

local function migrate(keys, args)
  local p = prefix_of(keys[1])
  local now, ts = clock(args[1])
  local version = call('GET', schema_key(p))
  if not version then
    -- a shard that never held a job starts at the current layout; one that did is at 1
    stamp_new_shard(p)
    version = call('GET', schema_key(p)) or '1'
  end
  local step = STEPS[tonumber(version)]
  if not step then return { 'done', version } end
  local state = p .. 'schema_migration'
  local m = hash_to_table(call('HGETALL', state))
  if m.from ~= version then m = { from = version, phase = FIRST_PHASE[tonumber(version)], cursor = '0' } end
  local question = step({ p = p, now = now, ts = ts }, m, args)
  if question then return question end
  if m.phase ~= 'done' then
    call('HSET', state, 'from', m.from, 'phase', m.phase, 'cursor', m.cursor)
    return { 'more', version }
  end
  local reached = tostring(tonumber(version) + 1)
  call('SET', schema_key(p), reached)
  call('DEL', state)
  if STEPS[tonumber(reached)] then return { 'more', reached } end
  return { 'done', reached }
end

register('emp_migrate', migrate)
