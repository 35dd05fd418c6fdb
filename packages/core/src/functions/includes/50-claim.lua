-- The claim: walk the non-empty requirement classes in the order of their head
-- jobs and take the first job of the first class this worker satisfies. The walk
-- is over classes, never over jobs, so its cost does not depend on queue depth,
-- and every class is looked at, so a capable worker always finds a waiting job.

local AVOID_LOOKAHEAD = 16
local CLASS_PAGE = 64
-- range bounds as text: a Lua number passed to redis.call is formatted with sprintf
local AVOID_LOOKAHEAD_LAST = '15' -- AVOID_LOOKAHEAD - 1
local FIRST_PAGE_LAST = '63' -- CLASS_PAGE - 1

-- A field a job hash lacks costs Redis a scan of the whole hash, so a take reads
-- the fields every job has (and `attempts`, which a job has once claimed) and
-- only the fields few jobs have when the job says it has them: `opt` for those
-- given at submit, `attempts` for those a failure leaves (avoid_worker/until).
local TAKE_FIELDS = { 'attempts', 'tenant', 'service', 'score', 'submitted_at', 'payload', 'opt' }
local OPTIONAL_TAKE_FIELDS = { 'workflow_id', 'step', 'exec_timeout_ms', 'start_deadline', 'queue_deadline' }
local RETRY_TAKE_FIELDS = { 'avoid_worker', 'avoid_until' }

-- First job of the class this worker may take now, with the fields a take needs.
-- A job that just failed on this worker is left for others until its avoid
-- window ends (looking at most AVOID_LOOKAHEAD jobs deep); the earliest such end
-- is returned so the worker knows when to look again. When the head is taken,
-- the score of the job behind it comes too: it is the class's next head score.
-- The job's fields when this worker may take it now, else nil and when it may.
-- The fields come as f.attempts .. f.payload by position (see TAKE_FIELDS), and
-- f.workflow_id, f.step, f.exec_timeout_ms, f.start_deadline, f.queue_deadline
-- by name (false when absent).
local function takeable(p, id, worker, now)
  local key = job_key(p, id)
  local f = call('HMGET', key, unpack(TAKE_FIELDS))
  if f[1] then
    local avoid = call('HMGET', key, unpack(RETRY_TAKE_FIELDS))
    if avoid[1] == worker then
      local until_ = tonumber(avoid[2]) or 0
      if until_ > now then return nil, until_ end
    end
  end
  if f[7] then
    local o = call('HMGET', key, unpack(OPTIONAL_TAKE_FIELDS))
    f.workflow_id, f.step, f.exec_timeout_ms, f.start_deadline, f.queue_deadline = o[1], o[2], o[3], o[4], o[5]
  end
  return f, nil
end

local function pick_in_class(p, class, worker, now)
  local heads = call('ZRANGE', queue_key(p, class), '0', '1', 'WITHSCORES')
  local f, soonest = takeable(p, heads[1], worker, now)
  if f then return heads[1], f, nil, heads[4] or false end
  for _, id in ipairs(call('ZRANGE', queue_key(p, class), '1', AVOID_LOOKAHEAD_LAST)) do
    local until_
    f, until_ = takeable(p, id, worker, now)
    if f then return id, f end
    if until_ < soonest then soonest = until_ end
  end
  return nil, nil, soonest
end

-- Gives job `id` (fields `f` as read by pick_in_class) to the worker. `next_score`
-- is the score of the job behind it when it was its class's head (false: none).
local function take(ctx, id, f, class, worker, w, next_score)
  local p = ctx.p
  local key = job_key(p, id)
  if next_score == nil then
    remove_from_queue(p, id, class)
  else
    call('ZREM', queue_key(p, class), id)
    set_class_head(p, class, next_score)
  end
  -- the attempt number is the attempt's fencing token; claimed_at is also the job's last update
  local attempt = tostring((tonumber(f[1]) or 0) + 1)
  call('HSET', key, 'state', 'starting', 'worker', worker, 'machine', w.machine, 'attempts', attempt,
    'claimed_at', ctx.ts)
  if w.waiting or w.woken then
    stop_waiting(p, worker)
    w.waiting, w.woken = false, nil
  end
  call('SADD', p .. 'wjobs:' .. worker, id)
  if w.state ~= 'busy' then
    -- a busy worker's lease is already running (and renewed by its heartbeats)
    renew_lease(p, worker, ctx.now, ctx.lease_ms)
    set_worker_state(p, worker, 'busy', ctx.ts, ctx.maxlen, w.state, w.machine)
    w.state = 'busy'
  end
  -- a claimed job's only possible timer is its start deadline; its queue deadline no longer applies
  if f.start_deadline then
    call('ZADD', p .. 'timers', f.start_deadline, id)
  elseif f.queue_deadline then
    call('ZREM', p .. 'timers', id)
  end
  -- submitted_at lets a reader of the stream measure submit-to-claim latency without another read
  job_event(ctx, id, 'job.starting', 'starting', 'tenant', f[2], 'service', f[3], 'worker', worker,
    'machine', w.machine, 'attempt', attempt, 'submitted_at', f[5])
  return { 'job', id, attempt, attempt, f[3], f[2], f[6] or call('GET', payload_key(p, id)) or '',
    class_definition(p, class), priority_of(f[4]), f.workflow_id or '', f.step or '', f.exec_timeout_ms or '', f[5] or '' }
end

-- What a claim needs to know about the worker; raises UNKNOWN_WORKER. `waiting`:
-- it is in `idle`; `woken`: the class a wake-up named since (see wake()).
local function load_worker(p, worker)
  local f = call('HMGET', worker_key(p, worker), 'profile', 'state', 'machine', 'waiting')
  if not f[1] then raise('UNKNOWN_WORKER', 'worker ' .. worker .. ' is not registered in this shard') end
  local waiting = f[4]
  return { profile = f[1], state = f[2], machine = f[3] or '', waiting = waiting == '1',
    woken = waiting and waiting ~= '1' and string.sub(waiting, 7) or nil }
end

-- Returns the claim reply: a job, or { 'none', retry_at, worker state } after
-- recording the worker as idle so that the next capable submit wakes it. `w` is
-- the worker as load_worker read it.
local function claim_for(ctx, worker, woken_class, w)
  local p = ctx.p
  if w.state == 'draining' or w.state == 'offline' then
    return { 'none', '', w.state }
  end
  woken_class = woken_class or w.woken
  local retry_at = nil
  local offset = 0
  -- an operator paused these services: their jobs stay queued, nobody claims them
  local paused = nil
  if call('HLEN', p .. 'paused') > 0 then paused = hash_to_table(call('HGETALL', p .. 'paused')) end
  while true do
    local page = offset == 0 and call('ZRANGE', p .. 'classes', '0', FIRST_PAGE_LAST)
      or call('ZRANGE', p .. 'classes', offset, offset + CLASS_PAGE - 1)
    for _, class in ipairs(page) do
      if profile_matches(p, w.profile, class) and not (paused and paused[load_class(p, class).service]) then
        local id, fields, until_, next_score = pick_in_class(p, class, worker, ctx.now)
        if id then
          local reply = take(ctx, id, fields, class, worker, w, next_score)
          if woken_class and woken_class ~= class and call('EXISTS', queue_key(p, woken_class)) == 1 then
            -- we were woken for another class's job and took this one instead: pass the wake on
            wake_one(p, woken_class, worker)
          end
          return reply
        end
        if until_ and (retry_at == nil or until_ < retry_at) then retry_at = until_ end
      end
    end
    if #page < CLASS_PAGE then break end
    offset = offset + CLASS_PAGE
  end
  start_waiting(p, worker, w.profile, w.waiting)
  local state = w.state or 'idle'
  if call('SCARD', p .. 'wjobs:' .. worker) == 0 then
    state = 'idle'
    set_worker_state(p, worker, state, ctx.ts, ctx.maxlen, w.state, w.machine)
  end
  return { 'none', retry_at and tostring(retry_at) or '', state }
end
