-- Queued jobs live in one sorted set per requirement class (score: priority, then
-- submission order). `classes` holds every non-empty class scored by its head, so
-- a claim walks classes in the order their best jobs would be served and never
-- looks at individual jobs it cannot run.

local function job_score(priority, seq)
  return (1000 - priority) * PRIORITY_SPAN + seq
end

-- `score`: a number or its text (arithmetic reads the text once; tonumber would twice)
local function priority_of(score)
  return 1000 - math.floor(score / PRIORITY_SPAN)
end

-- Scores the class by its head job's score, or drops it from `classes` when it has no job (false).
-- `classes`: that set's key, when the caller has made it (nil: made here).
local function set_class_head(p, class, score, classes)
  if score then
    call('ZADD', classes or p .. 'classes', score, class)
  else
    call('ZREM', classes or p .. 'classes', class)
  end
end

local function refresh_class_head(p, class)
  local head = call('ZRANGE', queue_key(p, class), '0', '0', 'WITHSCORES')
  set_class_head(p, class, head[2] or false)
end

-- Lanes. A class holds every job that the same workers may run, whatever its
-- tenant or workflow, so that tenants and workflow ids do not multiply classes
-- (a claim walks classes). A worker restricted to some tenants (tenants.allowed /
-- denied) or reserved for one workflow finds its jobs in the class's lanes
-- instead: `tq:<class>:<tenant>` holds the class's jobs of one tenant,
-- `ct:<class>` the class's tenants scored by their lane's head, and
-- `wq:<class>:<workflow>` the class's jobs of one workflow (only jobs with one).
-- Only a shard where a restricted worker registered keeps lanes (see laned_key):
-- a job in them says so in its `opt`, and a class whose new jobs go in them has
-- `laned` on its hash.
local function add_to_lanes(p, id, class, score, tenant, workflow)
  call('ZADD', tenant_lane_key(p, class, tenant), score, id)
  call('ZADD', lane_tenants_key(p, class), 'LT', score, tenant)
  if workflow then call('ZADD', workflow_lane_key(p, class, workflow), score, id) end
end

local function remove_from_lanes(p, id, class, tenant, workflow)
  local lane = tenant_lane_key(p, class, tenant)
  call('ZREM', lane, id)
  local head = call('ZRANGE', lane, '0', '0', 'WITHSCORES')
  if head[2] then
    call('ZADD', lane_tenants_key(p, class), head[2], tenant)
  else
    call('ZREM', lane_tenants_key(p, class), tenant)
  end
  if workflow then call('ZREM', workflow_lane_key(p, class, workflow), id) end
end

-- The workflow job `id` belongs to, or nil; read only when its `opt` says it has such fields.
local function job_workflow(p, id, opt)
  if not opt_fields(opt) then return nil end
  return call('HGET', job_key(p, id), 'workflow_id') or nil
end

-- Returns false when the job was not in its queue (a delayed job waits on its timer instead).
-- `laned`: the job is in its class's lanes too.
local function remove_from_queue(p, id, class, tenant, workflow, laned)
  if call('ZREM', queue_key(p, class), id) == 1 then
    refresh_class_head(p, class)
    if laned then remove_from_lanes(p, id, class, tenant, workflow) end
    return true
  end
  return false
end

-- A worker waiting for a job is a field of `idle` (worker -> profile), which a
-- submit searches for someone to wake. The worker's own hash says so too
-- (`waiting` = '1'), so that a claim, which reads that hash anyway, skips taking
-- a busy worker out of `idle` when it was never in it. A wake-up takes the worker
-- out of `idle` and leaves `waiting` = 'woken:<class>': the claim the worker
-- queued behind its blocking wait (see claim.lua) learns from it that it was
-- woken, and for which class.
local function start_waiting(p, worker, profile, waiting)
  call('HSET', p .. 'idle', worker, profile)
  memo.nobody_idle = nil
  if not waiting then call('HSET', worker_key(p, worker), 'waiting', '1') end
end

local function stop_waiting(p, worker)
  call('HDEL', p .. 'idle', worker)
  call('HDEL', worker_key(p, worker), 'waiting')
end

local function wake(p, worker, class)
  call('HDEL', p .. 'idle', worker)
  call('HSET', worker_key(p, worker), 'waiting', 'woken:' .. class)
  call('RPUSH', signal_key(p, worker), 'wake:' .. class)
end

-- The services an operator paused in this shard (service -> why), or false when none.
-- Read once per call (memo.paused): only emp_pause_service changes them, and it reads them itself.
function memo.paused_services(p)
  local paused = memo.paused
  if paused == nil then
    paused = call('HLEN', p .. 'paused') > 0 and hash_to_table(call('HGETALL', p .. 'paused'))
    memo.paused = paused
  end
  return paused
end

-- Wakes one idle worker able to run a job of `class`, `tenant` and `workflow`,
-- preferring one that holds the class's models, and any worker but `avoid` (the
-- one the job just failed on). Returns the woken worker or false.
local function wake_one(p, class, avoid, tenant, workflow)
  local paused = memo.paused_services(p)
  if paused and paused[load_class(p, class).service] then
    return false -- nobody may claim a paused service's jobs: a wake-up would be wasted
  end
  -- a worker holding the job's models warm or on disk runs it sooner than one that must download them
  local models = affinity.class_models(p, class)
  if models then
    local holder, waiting = affinity.warm_holder(p, class, models, avoid, tenant, workflow)
    if holder and waiting then
      wake(p, holder, class)
      return holder
    end
  end
  -- nobody waits in `idle` for the rest of a call that found it empty (only start_waiting adds
  -- to it): a batch of submits reads it once
  if memo.nobody_idle then return false end
  local idle = call('HGETALL', p .. 'idle')
  if idle[1] == nil then
    memo.nobody_idle = true
    return false
  end
  local fallback = false
  for i = 1, #idle, 2 do
    local worker, profile = idle[i], idle[i + 1]
    if profile_matches(p, profile, class) and lane_allows(profile_lanes(p, profile), tenant, workflow) then
      if worker ~= avoid then
        wake(p, worker, class)
        return worker
      end
      fallback = worker
    end
  end
  if fallback then
    -- only the avoided worker is idle: wake it anyway (it takes the job unless another capable worker is online)
    wake(p, fallback, class)
  end
  return fallback
end

-- `in_classes`: the caller has already scored the class in `classes` (a submit
-- does, to check the limit); `laned`: the job goes into the class's lanes too
-- (the caller marks it so in its `opt`).
local function enqueue(p, id, class, score, avoid, tenant, workflow, in_classes, laned)
  call('ZADD', queue_key(p, class), score, id)
  if not in_classes then call('ZADD', p .. 'classes', 'LT', score, class) end
  if laned then add_to_lanes(p, id, class, score, tenant, workflow) end
  wake_one(p, class, avoid, tenant, workflow)
end

-- Keeps the job's single entry in `timers` at the next moment something must
-- happen to it (run_at, retry, deadline or execution timeout), or removes it.
-- Leases are not job timers: they belong to workers (see `leases`).
local function schedule(p, id)
  local f = call('HMGET', job_key(p, id), 'state', 'run_at', 'retry_at', 'queue_deadline',
    'start_deadline', 'exec_deadline')
  local state, due = f[1], nil
  local function consider(value)
    value = tonumber(value)
    if value and (due == nil or value < due) then due = value end
  end
  if state == 'queued' then
    consider(f[2]); consider(f[4]); consider(f[5])
  elseif state == 'retrying' then
    consider(f[3]); consider(f[4]); consider(f[5])
  elseif state == 'starting' then
    consider(f[5])
  elseif state == 'running' then
    consider(f[6])
  end
  if due then
    call('ZADD', p .. 'timers', due, id)
  else
    call('ZREM', p .. 'timers', id)
  end
end

-- Jobs waiting on a timer before they may be queued (`delayed`: queued with a
-- run_at; `retrying`: backing off) share `timers` with every job that has a
-- deadline, so they cannot be counted from it: `deferred` counts them per kind
-- and service ("delayed:<service>" -> n), changed only on the rare transitions
-- into and out of those states. `delta` is '1' or '-1'.
local function count_deferred(p, kind, service, delta)
  call('HINCRBY', p .. 'deferred', kind .. ':' .. service, delta)
end

-- The submission index behind listing, two streams: `joblog` holds every job of
-- the shard (field `j`: "<id>|<tenant>"; the tenant lets the sweep clean the
-- tenant's stream once the job hash has expired), `joblog:tenant:<tenant>` that
-- tenant's jobs (`j`: the id) under the same entry ids. An entry id is
-- <submitted_at>-<n>, so the streams are in submission order and a listing
-- resumes after an entry id. A stream entry costs about 50 bytes where a sorted
-- set's cost about 130 (docs/broker.md, "What a queued job costs in memory").
-- Beside them, two sorted sets, `jobs` ("<id>|<tenant>") and `jobs:tenant:<tenant>`
-- (ids), scored by the entry's ms, keep the entries the sweep moves out of the
-- streams (jobs kept for the failed retention; tick.lua), and in a shard upgraded
-- from before 2026-12-07, when they were the whole index, every job indexed then.
-- A listing merges both (list_jobs.lua).
-- (One table, `job_log`, holds these: the library's chunk has room for 200 top-level locals.)
local job_log = {}
function job_log.key(p) return p .. 'joblog' end
function job_log.tenant_key(p, tenant) return p .. 'joblog:tenant:' .. tenant end

-- Indexes a job just submitted.
function job_log.add(p, id, tenant, submitted_at)
  local log = job_log.key(p)
  local ok, entry = pcall(call, 'XADD', log, submitted_at .. '-*', 'j', id .. '|' .. tenant)
  if not ok then
    -- the clock went back (a virtual clock set back, or Redis's own): the entry goes at the
    -- newest entry's millisecond, so the stream keeps its order (`joblog` is never deleted,
    -- so its newest id only grows, and every tenant's stream can take the same ids)
    local info = call('XINFO', 'STREAM', log)
    local last
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then last = info[i + 1] end
    end
    entry = call('XADD', log, string.match(last, '^%d+') .. '-*', 'j', id .. '|' .. tenant)
  end
  call('XADD', job_log.tenant_key(p, tenant), entry, 'j', id)
end

-- Classes a call looks at when sweeping or checking the class lists or listing
-- classes: enough to be worth a call, few enough that no call holds Redis for long.
local CLASS_SCAN_PAGE = '25'
