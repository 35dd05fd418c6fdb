-- Transitions shared by several functions. Each runs inside one FCALL, so a job
-- is always in exactly one state and in exactly the indexes that state implies.

-- `...` are the event's own field/value pairs. (Passed on as arguments: a
-- table per event would cost more than the XADD.) The XADD is events_append's,
-- written out: a job event is the commonest of them (two per job), and passing
-- its twenty arguments on through one more call costs more than the line (through
-- events_append a drained job costs 4k more redis-server instructions, 337k against
-- 333k at concurrency 1, npm run bench:instructions). The
-- stream's name comes with the context (one made by hand may lack it).
local function job_event(ctx, id, job_type, state, ...)
  call('XADD', ctx.events or ctx.p .. 'events', 'MAXLEN', '~', ctx.maxlen, '*', 'type', job_type, 'job', id,
    'state', state, 'ts', ctx.ts, ...)
end

-- What most transitions need to know about a job, read in one call.
-- `token` is the current attempt's fencing token: its attempt number. A job
-- that is not active has no worker; `last_worker` then says who ran it last.
-- `more` (optional): names of more fields a caller needs, read in the same HMGET into
-- job[<name>] (false when absent); none of the names below.
local function load_job(p, id, more)
  local key = job_key(p, id)
  local f = more and call('HMGET', key, 'state', 'attempts', 'worker', 'class', 'tenant', 'service', 'opt', 'payload', unpack(more))
    or call('HMGET', key, 'state', 'attempts', 'worker', 'class', 'tenant', 'service', 'opt', 'payload')
  if not f[1] then return nil end
  local job = { id = id, key = key, state = f[1], token = f[2], worker = f[3], class = f[4], tenant = f[5], service = f[6],
    opt = f[7], laned = f[7] and opt_laned(f[7]),
    -- an active job has a timer only when it has a deadline, which only a job with `opt` fields can
    -- have (start_deadline, or exec_deadline from exec_timeout_ms); a waiting one may have several kinds
    timed = not ACTIVE[f[1]] or (f[7] and opt_fields(f[7])),
    last_worker = not f[3] and call('HGET', key, 'last_worker') or nil,
    -- a payload in the hash goes with it; only a large one has a key of its own
    payload_apart = f[8] == false }
  if more then
    for i = 1, #more do job[more[i]] = f[8 + i] end
  end
  return job
end

local function must_exist(p, id, more)
  local job = load_job(p, id, more)
  if not job then raise('NOT_FOUND', 'job ' .. id .. ' does not exist') end
  return job
end

-- Checks the caller's fencing token. Returns the job, or raises NOT_FOUND /
-- LEASE_LOST (the attempt was taken away: reaped, canceled, expired or
-- finished) so that a late call from a zombie changes nothing. `more` as load_job's.
local function fenced(ctx, id, token, more)
  local job = must_exist(ctx.p, id, more)
  if job.token ~= token then
    raise('LEASE_LOST', 'job ' .. id .. ': fencing token ' .. token .. ' is not the current attempt\'s (state ' .. job.state .. ')')
  end
  if not ACTIVE[job.state] then
    raise('LEASE_LOST', 'job ' .. id .. ' is ' .. job.state .. ', no longer held by this attempt')
  end
  return job
end

-- Takes a job out of wherever its current state keeps it: its class queue, its
-- worker's set of running jobs, or the count of jobs waiting on a timer.
-- `jobs`: the key of the job's worker's set of jobs, when the caller has it.
local function detach(ctx, job, claim_follows, jobs)
  if job.state == 'queued' then
    if not remove_from_queue(ctx.p, job.id, job.class, job.tenant, job.laned and job_workflow(ctx.p, job.id, job.opt), job.laned) then
      count_deferred(ctx.p, 'delayed', job.service, '-1')
    end
  elseif job.state == 'retrying' then
    count_deferred(ctx.p, 'retrying', job.service, '-1')
  elseif ACTIVE[job.state] then
    release_worker_job(ctx.p, job.worker, job.id, ctx.ts, ctx.maxlen, claim_follows, jobs)
  end
end

-- Workflows' transitions (65-workflows.lua fills the table: they need the submit of
-- 60-submit.lua); `finish` calls workflows.step_ended for a job with `opt` fields, the
-- only jobs that can be a step's.
local workflows = {}

-- Whether finished jobs expire, by their retention as calls pass it (text): the last one read
-- as a number is kept for the library's life. Calls pass the same one (the broker's config),
-- and reading a number from text costs more than most of what a completion does in Lua.
local retention_read = { text = nil, expires = nil }

-- Ends a detached job in a terminal state and lets it expire after its retention;
-- `...` are more field/value pairs to record with it. (finished_at is also its
-- last update: a reader takes the latest of its timestamps.)
local function finish(ctx, job, state, ...)
  local p, id = ctx.p, job.id
  local key = job.key or job_key(p, id)
  call('HSET', key, 'state', state, 'finished_at', ctx.ts, ...)
  if job.timed then call('ZREM', p .. 'timers', id) end
  local retention = state == 'succeeded' and ctx.retention_ms or ctx.failed_retention_ms
  local expires = retention_read.expires
  if retention_read.text ~= retention then
    expires = tonumber(retention) > 0
    retention_read.text, retention_read.expires = retention, expires
  end
  if expires then
    call('PEXPIRE', key, retention)
    if job.payload_apart then call('PEXPIRE', payload_key(p, id), retention) end
  end
  local worker = job.worker or job.last_worker or ''
  if job.failure_kind then
    -- the kind of the failure that ended it, for failure counts by kind (metrics)
    job_event(ctx, id, 'job.' .. state, state, 'tenant', job.tenant, 'service', job.service, 'worker', worker,
      'reason', job.failure_kind)
  else
    job_event(ctx, id, state == 'succeeded' and 'job.succeeded' or 'job.' .. state, state, 'tenant', job.tenant,
      'service', job.service, 'worker', worker)
  end
  if job.opt and opt_fields(job.opt) then workflows.step_ended(ctx, job, state) end
end

-- Puts a job (back) into its class queue at its original place.
local function requeue(ctx, job, avoid)
  local p, id = ctx.p, job.id
  local key = job_key(p, id)
  call('HSET', key, 'state', 'queued', 'updated_at', ctx.ts)
  call('HDEL', key, 'retry_at', 'exec_deadline', 'run_at', 'started_at', 'claimed_at')
  -- its class may have been swept from the class list while empty (see sweep_class_list in tick.lua)
  local ckey = class_key(p, job.class)
  if not call('HGET', ckey, 'listed') then
    call('HSET', ckey, 'listed', '1')
    call('SADD', p .. 'classlist', job.class)
  end
  -- lanes: a requeue is rare, so it asks the shard rather than the class (whose flag a scan may not have set yet)
  local laned = job.laned or call('EXISTS', laned_key(p)) == 1
  if laned and not job.laned then
    call('HSET', ckey, 'laned', '1')
    call('HSET', key, 'opt', opt_with_lanes(job.opt))
    job.laned = true
  end
  enqueue(p, id, job.class, call('HGET', key, 'score'), avoid, job.tenant, job_workflow(p, id, job.opt), false, laned)
  schedule(p, id)
end

local function backoff_delay(key, failures)
  local raw = call('HGET', key, 'backoff')
  local b = raw and cjson.decode(raw) or { type = 'exponential', delay_ms = 1000, max_delay_ms = 300000, jitter = 0.5 }
  local delay = b.delay_ms
  if b.type == 'exponential' then
    delay = delay * math.pow(2, failures - 1)
  end
  if b.max_delay_ms and delay > b.max_delay_ms then delay = b.max_delay_ms end
  local jitter = b.jitter or 0
  return math.floor(delay * (1 - jitter * math.random()))
end

-- Applies a classified failure of the current attempt of an active job. Worker
-- loss and infrastructure failures (spot interruptions) are retried at once and
-- do not use up the user's attempts; retryable errors and timeouts back off;
-- anything else, or a budget run out, ends `failed`.
local function apply_failure(ctx, job, kind, error_json, claim_follows)
  local p, id = ctx.p, job.id
  local key = job_key(p, id)
  local f = call('HMGET', key, 'failures', 'max_attempts', 'infra_failures', 'max_infra_attempts')
  local failures, max_attempts = num(f[1], 0), num(f[2], 3)
  local infra, max_infra = num(f[3], 0), num(f[4], 10)
  local worker = job.worker or ''
  detach(ctx, job, claim_follows)
  call('HSET', key, 'error', error_json, 'last_worker', worker, 'updated_at', ctx.ts)
  call('HDEL', key, 'worker', 'machine')
  job.worker = nil
  job.last_worker = worker

  local outcome
  if kind == 'worker_lost' or kind == 'infrastructure' then
    infra = infra + 1
    call('HSET', key, 'infra_failures', infra)
    outcome = infra >= max_infra and 'failed' or 'requeue'
  elseif kind == 'retryable' or kind == 'timeout' then
    failures = failures + 1
    call('HSET', key, 'failures', failures)
    outcome = failures >= max_attempts and 'failed' or 'backoff'
  else
    outcome = 'failed'
  end

  if outcome == 'failed' then
    job.timed = true
    job.failure_kind = kind
    finish(ctx, job, 'failed')
    return 'failed'
  end
  if worker ~= '' then
    call('HSET', key, 'avoid_worker', worker, 'avoid_until', ctx.now + ctx.avoid_ms)
  end
  if outcome == 'requeue' then
    requeue(ctx, job, worker)
    job_event(ctx, id, 'job.queued', 'queued', 'tenant', job.tenant, 'service', job.service, 'reason', kind)
    return 'queued'
  end
  local retry_at = ctx.now + backoff_delay(key, failures)
  call('HSET', key, 'state', 'retrying', 'retry_at', retry_at)
  count_deferred(p, 'retrying', job.service, '1')
  call('HDEL', key, 'exec_deadline', 'started_at', 'claimed_at')
  schedule(p, id)
  job_event(ctx, id, 'job.retrying', 'retrying', 'tenant', job.tenant, 'service', job.service, 'reason', kind,
    'retry_at', retry_at)
  return 'retrying'
end
