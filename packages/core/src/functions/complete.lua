-- complete: one or more attempts of one worker succeeded; optionally each claims
-- the worker's next job in the same call. A busy worker running many jobs at once
-- sends the completions that are ready together, one round trip for all of them.
-- Each completion is checked against its fencing token and applied on its own:
-- one whose lease was lost fails alone and changes nothing.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] worker id to claim for ('' none)  [8] affinity bound in ms (as emp_claim's [9]),
--   then per completion:
--   job id, fencing token, result (JSON)
-- Returns one reply per completion, in order: { 'succeeded' } or
-- { 'succeeded', <claim reply as `claim` returns it...> }, or { 'error', '<CODE> <message>' }
-- (NOT_FOUND, LEASE_LOST).
-- Errors: UNKNOWN_WORKER (before anything changes).
-- Each success also records its execution time in the shard's duration lists of its
-- duration class and of its service (durations:<dclass>, durations:service:<service>,
-- keys.ts), which routing reads.

-- A duration list keeps the newest 256 times; it is trimmed back to them once it has 32
-- more (one LTRIM per 32 completions, not one each), and readers take the first 256.
local DURATIONS_LAST = '255'
local DURATIONS_SLACK = 288

-- What record_duration needs of the job, read with the fields `fenced` reads (one HMGET):
-- the start times, and `dclass`, which only a job submitted before its requirement
-- class kept the duration class has (today's jobs find it on their class).
local DURATION_FIELDS = { 'started_at', 'claimed_at', 'dclass' }

-- The duration class of a requirement class's jobs, false when it has none (a class stored
-- before routing). A call's completions are mostly of one class: the last one asked about
-- is kept (memo); only a submit writes it (a workflow's next step, within a completion's
-- call), and it forgets the kept one when it does.
local function class_dclass(p, class)
  if memo.dclass_of ~= class then
    memo.dclass_of, memo.dclass = class, call('HGET', class_key(p, class), 'dclass')
  end
  return memo.dclass
end

-- Pushes `n` execution times `...` (text, oldest first) to duration list `list` and trims
-- it; `job`: the success whose duration class `list` is the list of (nil: a service's list).
local function push_durations(ctx, list, job, n, ...)
  local length = call('LPUSH', list, ...)
  if length > DURATIONS_SLACK then call('LTRIM', list, '0', DURATIONS_LAST) end
  -- a class new to this shard: what it is, for listings and for its service's estimate
  -- (its models from the job's requirement class)
  if job and length == n then
    local def = call('HGET', class_key(ctx.p, job.class), 'def')
    local models = def and cjson.decode(def).models
    call('HSET', ctx.p .. 'dclasses', job.dclass, cjson.encode({ service = job.service, models = models or cjson.null }))
  end
end

-- Execution time `ms` (text) for the duration list `kind` .. `name` of the shard
-- ('durations:' and a duration class, or 'durations:service:' and a service; `job` as
-- push_durations'): pushed at once, or, in a call of several completions (ctx.durations,
-- see complete), as the call ends, one LPUSH per list for all of them (flush_durations).
-- (A list's key is made once per call, not once per completion.)
local function add_duration(ctx, kind, name, ms, job)
  local pending = ctx.durations
  if not pending then return push_durations(ctx, ctx.p .. kind .. name, job, 1, ms) end
  -- a call's completions mostly share their lists: a short walk finds them
  for i = 1, #pending do
    local times = pending[i]
    if times.name == name and times.kind == kind then
      times[#times + 1] = ms
      return
    end
  end
  pending[#pending + 1] = { ms, kind = kind, name = name, job = job }
end

local function flush_durations(ctx)
  local p = ctx.p
  for _, times in ipairs(ctx.durations) do
    push_durations(ctx, p .. times.kind .. times.name, times.job, #times, unpack(times))
  end
end

-- The execution time: from running (or, for a job that never said it started, from its
-- claim) to now, in ms, for its duration class's list and its service's.
local function record_duration(ctx, job)
  local since = tonumber(job.state == 'running' and job.started_at or job.claimed_at)
  if not since then return end
  local p = ctx.p
  -- absent on a class stored before routing, whose jobs have none either
  local dclass = job.dclass or class_dclass(p, job.class)
  if not dclass then return end
  local ms = ctx.now - since
  if ms < 0 then ms = 0 end
  ms = string.format('%d', ms)
  job.dclass = dclass -- however found: push_durations names the list's class by it
  add_duration(ctx, 'durations:', dclass, ms, job)
  -- the service's own list: its newest executions, whatever their class, as often as each
  -- class runs (a class short of samples is routed by it)
  add_duration(ctx, 'durations:service:', job.service, ms)
end

local function complete_one(ctx, next_worker, w, id, token, result)
  local job = fenced(ctx, id, token, DURATION_FIELDS)
  record_duration(ctx, job)
  if next_worker and job.worker == next_worker then
    -- the worker claiming next is nearly always the job's: an active job's detach, when its worker
    -- claims next, is only its leaving the worker's set, which the call may change once (deferred)
    deferred.change_set(w, id, false)
  else
    detach(ctx, job, next_worker ~= nil)
  end
  if w and job.opt and opt_fields(job.opt) then
    -- a workflow's step may submit, cancel or fail other jobs, whose transitions read queues and
    -- workers' sets: they find them as they would after this call's earlier claims one by one
    deferred.settle_run(ctx, w)
    deferred.apply_set(w)
  end
  finish(ctx, job, 'succeeded', 'result', result)
  if not next_worker then return { 'succeeded' } end
  if job.opt and opt_fields(job.opt) then
    -- the step's end may have woken or idled the worker (its workflow's next step queued, a
    -- sibling canceled): the claim reads the worker as a call of its own would
    local fresh = load_worker(ctx.p, next_worker, ctx.now)
    w.state, w.waiting, w.woken, w.cursor, w.cursor_set = fresh.state, fresh.waiting, fresh.woken, fresh.cursor, fresh.cursor_set
  end
  return { 'succeeded', unpack(claim_for(ctx, next_worker, nil, w)) }
end

local function complete(keys, args)
  local ctx = context(keys, args)
  local next_worker = args[7] ~= '' and args[7] or nil
  affinity.bounds(ctx, args[8])
  local w = next_worker and load_worker(ctx.p, next_worker, ctx.now)
  -- a lone completion's error is the call's error: no protected call needed
  if #args == 11 then return { complete_one(ctx, next_worker, w, args[9], args[10], args[11]) } end
  local replies = {}
  ctx.durations = {}
  -- the completions' and their claims' changes of the worker's set, made once as the call ends;
  -- each claim may start or go on with a run of one class's jobs (deferred.start_run)
  if w then deferred.keep_set_changes(w) end
  for i = 9, #args - 2, 3 do
    if w then w.want = (#args - i + 1) / 3 end
    local ok, reply = pcall(complete_one, ctx, next_worker, w, args[i], args[i + 1], args[i + 2])
    if ok then
      replies[#replies + 1] = reply
    else
      replies[#replies + 1] = { 'error', type(reply) == 'table' and reply.err or tostring(reply) }
    end
  end
  if w then
    deferred.settle_run(ctx, w)
    deferred.apply_set(w)
  end
  flush_durations(ctx)
  return replies
end

register('emp_complete', complete)
