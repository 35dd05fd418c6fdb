-- tick: the shard's clock work, run by the scheduler (never by idle workers):
-- promote due delayed and retrying jobs, reap expired leases (the worker is lost:
-- its jobs go back to the queue), enforce deadlines and execution timeouts, and
-- turn silent workers and machines offline (kept listed), removing them only
-- after their retention. A tick that finds the previous one too old knows that
-- nobody watched the clock meanwhile (see `watch_clock`).
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] max items per kind  [8] ms of silence before offline  [9] ms offline before removal
--   [10] ms between ticks beyond which the clock went unwatched  [11] ms of grace for leases that ran out
--   unwatched (offline detection waits at least half of [8])
-- Returns { items handled, ms until the next due item ('' none) }.

-- The submission index (job_log in includes/20-queue.lua), kept as long as its jobs:
-- looks at `limit` entries of the streams per call from where the previous sweep
-- stopped (wrapping around), so no tick scans the whole index. An entry whose job
-- hash has expired goes (a tenant's stream with no entries left is deleted;
-- `joblog` never is: its newest id keeps the index in order, see job_log.add). A
-- job kept for the failed retention (failed, canceled, expired) moves, once
-- older than the succeeded retention, to the sorted sets `jobs` and
-- `jobs:tenant:<tenant>` (scored by its entry's ms): a stream frees an entry's
-- bytes only with the last entry of its node (about 100), so one such job left
-- in the stream would keep its neighbours' bytes for days.
local LONG_KEPT = { failed = true, canceled = true, expired = true }

local function sweep_job_index(ctx, limit)
  local p = ctx.p
  local log = job_log.key(p)
  local after = call('GET', p .. 'joblog:sweep')
  local entries = call('XRANGE', log, after and ('(' .. after) or '-', '+', 'COUNT', limit)
  local horizon = ctx.now - tonumber(ctx.retention_ms)
  for _, entry in ipairs(entries) do
    local member = entry[2][2]
    local sep = string.find(member, '|', 1, true)
    local id, tenant = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
    local state = call('HGET', job_key(p, id), 'state')
    local ms = string.match(entry[1], '^%d+')
    if not state or (LONG_KEPT[state] and tonumber(ms) < horizon) then
      call('XDEL', log, entry[1])
      local tenant_log = job_log.tenant_key(p, tenant)
      call('XDEL', tenant_log, entry[1])
      if call('XLEN', tenant_log) == 0 then call('DEL', tenant_log) end
      if state then
        call('ZADD', p .. 'jobs', ms, member)
        call('ZADD', p .. 'jobs:tenant:' .. tenant, ms, id)
      end
    end
  end
  if #entries < limit then
    call('DEL', p .. 'joblog:sweep')
  else
    call('SET', p .. 'joblog:sweep', entries[#entries][1])
  end
end

-- The sorted sets (the jobs kept long, and in a shard upgraded from before
-- 2026-12-07 every job indexed then): an entry goes once its job hash has expired.
local function sweep_kept_job_index(p, limit)
  local index = p .. 'jobs'
  if call('EXISTS', index) == 0 then
    call('DEL', p .. 'jobs:sweep')
    return
  end
  local start = tonumber(call('GET', p .. 'jobs:sweep')) or 0
  local members = call('ZRANGE', index, start, start + limit - 1)
  local removed = 0
  for _, member in ipairs(members) do
    local sep = string.find(member, '|', 1, true)
    local id, tenant = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
    if call('EXISTS', job_key(p, id)) == 0 then
      call('ZREM', index, member)
      call('ZREM', p .. 'jobs:tenant:' .. tenant, id)
      removed = removed + 1
    end
  end
  local next_start = start + #members - removed
  if #members < limit then next_start = 0 end
  call('SET', p .. 'jobs:sweep', next_start)
end

-- `classlist` names the classes queue views show, empty ones included, and
-- `unroutable` those no worker could run so far (which every new capability
-- profile is checked against). A class found empty by the sweep leaves both (its
-- next submit lists it again: the class hash's `listed` says whether it is
-- listed), so the lists, and every walk over them, stay as long as the classes
-- in use rather than every class ever seen.
-- Looks at about CLASS_SCAN_PAGE members per call, resuming where the last call stopped.
local function sweep_class_list(p)
  local list = p .. 'classlist'
  local scan = call('SSCAN', list, call('GET', list .. ':sweep') or '0', 'COUNT', CLASS_SCAN_PAGE)
  for _, class in ipairs(scan[2]) do
    if not call('ZSCORE', p .. 'classes', class) then
      call('SREM', list, class)
      call('SREM', p .. 'unroutable', class)
      call('HDEL', class_key(p, class), 'listed')
    end
  end
  call('SET', list .. ':sweep', scan[1])
end

local function expire_job(ctx, job, reason)
  detach(ctx, job, false)
  finish(ctx, job, 'expired', 'expire_reason', reason)
  if ACTIVE[job.state] and job.worker then signal_worker(ctx.p, job.worker, 'expired:' .. job.id) end
end

local function handle_due_job(ctx, id)
  local p, now = ctx.p, ctx.now
  local job = load_job(p, id)
  if not job then
    call('ZREM', p .. 'timers', id)
    return
  end
  local f = call('HMGET', job_key(p, id), 'run_at', 'retry_at', 'queue_deadline', 'start_deadline',
    'exec_deadline', 'avoid_worker')
  local function due(value) value = tonumber(value); return value ~= nil and value <= now end
  local state = job.state
  if state == 'queued' or state == 'retrying' then
    if due(f[3]) then return expire_job(ctx, job, 'queue_ttl') end
    if due(f[4]) then return expire_job(ctx, job, 'start_timeout') end
    if state == 'queued' and due(f[1]) then
      call('HDEL', job_key(p, id), 'run_at')
      count_deferred(p, 'delayed', job.service, '-1')
      requeue(ctx, job, nil)
      return
    end
    if state == 'retrying' and due(f[2]) then
      count_deferred(p, 'retrying', job.service, '-1')
      requeue(ctx, job, f[6])
      job_event(ctx, id, 'job.queued', 'queued', 'tenant', job.tenant, 'service', job.service, 'reason', 'retry')
      return
    end
  elseif state == 'starting' and due(f[4]) then
    return expire_job(ctx, job, 'start_timeout')
  elseif state == 'running' and due(f[5]) then
    if job.worker then signal_worker(p, job.worker, 'timeout:' .. id) end
    apply_failure(ctx, job, 'timeout', cjson.encode({ kind = 'timeout', message = 'execution timeout exceeded' }), false)
    return
  end
  schedule(p, id)
end

-- A worker whose lease ran out is lost: every job it held goes back to the queue.
-- It holds nothing now, so it is no longer busy (a busy worker always has a lease).
local function reap_lease(ctx, worker)
  local p = ctx.p
  call('ZREM', p .. 'leases', worker)
  local state = call('HGET', worker_key(p, worker), 'state')
  if state == 'busy' then set_worker_state(p, worker, 'idle', ctx.ts, ctx.maxlen, state) end
  local handled = 0
  for _, id in ipairs(call('SMEMBERS', p .. 'wjobs:' .. worker)) do
    local job = load_job(p, id)
    if job and ACTIVE[job.state] and job.worker == worker then
      apply_failure(ctx, job, 'worker_lost', cjson.encode({ kind = 'worker_lost',
        message = 'lease expired: worker ' .. worker .. ' stopped renewing it' }), false)
      handled = handled + 1
    else
      call('SREM', p .. 'wjobs:' .. worker, id)
    end
  end
  return handled
end

-- Leases and liveness deadlines run out because a worker or machine went silent. While
-- nobody watched the clock (Redis down or frozen, or no scheduler ticking) they could
-- not have spoken: what ran out then is not acted on before a grace has passed
-- since the clock is watched again, enough for every live worker to renew.
-- The shard's `clock` hash records the last tick (`tick_at`) and, after a tick that
-- found it older than `gap_ms`, the unwatched gap (`unwatched_from`, `unwatched_to`).
-- The lease grace (`grace_ms`) is never extended while it runs, so ticks that always
-- come late only delay reaping by one tick. Returns the last gap, if any.
local function watch_clock(ctx, gap_ms, grace_ms)
  local p, now = ctx.p, ctx.now
  local key = p .. 'clock'
  local f = call('HMGET', key, 'tick_at', 'unwatched_from', 'unwatched_to')
  local last, from, to = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  if last and now - last > gap_ms and not (to and now < to + grace_ms) then
    from, to = last, now
    call('HSET', key, 'tick_at', ctx.ts, 'unwatched_from', f[1], 'unwatched_to', ctx.ts)
    events_append(p, ctx.maxlen, 'type', 'clock.unwatched', 'from', f[1], 'gap_ms', tostring(now - last),
      'grace_until', tostring(now + grace_ms), 'ts', ctx.ts)
  else
    call('HSET', key, 'tick_at', ctx.ts)
  end
  return from, to
end

-- With a grace of `grace_ms` after the last unwatched gap (`from`..`to`): the instant up to
-- which silence counts now, and the end of the grace while it runs.
local function silence_counts_to(now, from, to, grace_ms)
  if not to or now >= to + grace_ms then return now, nil end
  return math.min(from, now), to + grace_ms
end

-- When a silence deadline `due` is acted on: one that fell due after `watched_to` (the clock unwatched) waits out the grace.
local function graced(due, watched_to, grace_until)
  if grace_until and due > watched_to and due < grace_until then return grace_until end
  return due
end

local function turn_offline(ctx, kind, limit, offline_after, retention, watched_to, grace_until)
  local p, now = ctx.p, ctx.now
  local online, offline = p .. kind .. 's', p .. kind .. 's:offline'
  local handled = 0
  for _, id in ipairs(call('ZRANGEBYSCORE', online, '-inf', watched_to - offline_after, 'LIMIT', 0, limit)) do
    local key = p .. kind .. ':' .. id
    local last_seen = call('ZSCORE', online, id)
    call('ZREM', online, id)
    call('ZADD', offline, last_seen, id)
    if kind == 'worker' then
      stop_waiting(p, id)
      -- a silent worker's models are not there for claims to count on; it reports them again when back
      affinity.forget_worker(p, id)
    end
    call('HSET', key, 'state', 'offline', 'state_since', now)
    events_append(p, ctx.maxlen, 'type', kind .. '.offline', kind, id, 'state', 'offline', 'ts', now)
    handled = handled + 1
  end
  for _, id in ipairs(call('ZRANGEBYSCORE', offline, '-inf', now - retention, 'LIMIT', 0, limit)) do
    call('ZREM', offline, id)
    call('DEL', p .. kind .. ':' .. id)
    if kind == 'worker' then
      affinity.forget_worker(p, id)
      call('DEL', p .. 'wjobs:' .. id, signal_key(p, id))
      call('SREM', p .. 'borrowers', id)
    end
    events_append(p, ctx.maxlen, 'type', kind .. '.gone', kind, id, 'state', 'gone', 'ts', now)
    handled = handled + 1
  end
  local next_due = nil
  local head = call('ZRANGE', online, 0, 0, 'WITHSCORES')
  if head[2] then next_due = graced(tonumber(head[2]) + offline_after, watched_to, grace_until) end
  head = call('ZRANGE', offline, 0, 0, 'WITHSCORES')
  if head[2] then
    local due = tonumber(head[2]) + retention
    if next_due == nil or due < next_due then next_due = due end
  end
  return handled, next_due
end

local function tick(keys, args)
  local ctx = context(keys, args)
  local p, now = ctx.p, ctx.now
  local limit, offline_after, retention = tonumber(args[7]), tonumber(args[8]), tonumber(args[9])
  local grace_ms = tonumber(args[11])
  local from, to = watch_clock(ctx, tonumber(args[10]), grace_ms)
  local watched_to, grace_until = silence_counts_to(now, from, to, grace_ms)
  local handled = 0
  for _, id in ipairs(call('ZRANGEBYSCORE', p .. 'timers', '-inf', now, 'LIMIT', 0, limit)) do
    handle_due_job(ctx, id)
    handled = handled + 1
  end
  for _, worker in ipairs(call('ZRANGEBYSCORE', p .. 'leases', '-inf', watched_to, 'LIMIT', 0, limit)) do
    handled = handled + reap_lease(ctx, worker)
  end
  -- the job index and the class list need sweeping about once a second, not on every tick
  if call('SET', p .. 'jobs:swept', '1', 'PX', 1000, 'NX') then
    sweep_job_index(ctx, limit)
    sweep_kept_job_index(p, limit)
    sweep_class_list(p)
  end
  local next_due = nil
  local head = call('ZRANGE', p .. 'timers', 0, 0, 'WITHSCORES')
  if head[2] then next_due = tonumber(head[2]) end
  head = call('ZRANGE', p .. 'leases', 0, 0, 'WITHSCORES')
  if head[2] then
    local due = graced(tonumber(head[2]), watched_to, grace_until)
    if next_due == nil or due < next_due then next_due = due end
  end
  -- workers and machines report at least twice per offline_after (heartbeats, status snapshots)
  local silent_to, offline_grace_until = silence_counts_to(now, from, to, math.max(grace_ms, math.floor(offline_after / 2)))
  for _, kind in ipairs({ 'worker', 'machine' }) do
    local n, due = turn_offline(ctx, kind, limit, offline_after, retention, silent_to, offline_grace_until)
    handled = handled + n
    if due and (next_due == nil or due < next_due) then next_due = due end
  end
  local wait = ''
  if next_due then wait = tostring(math.max(0, next_due - now)) end
  return { handled, wait }
end

register('emp_tick', tick)
