-- Queued jobs live in one sorted set per requirement class (score: priority, then
-- submission order). `classes` holds every non-empty class scored by its head, so
-- a claim walks classes in the order their best jobs would be served and never
-- looks at individual jobs it cannot run.

local function job_score(priority, seq)
  return (1000 - priority) * PRIORITY_SPAN + seq
end

local function priority_of(score)
  return 1000 - math.floor(tonumber(score) / PRIORITY_SPAN)
end

-- Scores the class by its head job's score, or drops it from `classes` when it has no job (false).
local function set_class_head(p, class, score)
  if score then
    redis.call('ZADD', p .. 'classes', score, class)
  else
    redis.call('ZREM', p .. 'classes', class)
  end
end

local function refresh_class_head(p, class)
  local head = redis.call('ZRANGE', queue_key(p, class), 0, 0, 'WITHSCORES')
  set_class_head(p, class, head[2] or false)
end

local function remove_from_queue(p, id, class)
  if redis.call('ZREM', queue_key(p, class), id) == 1 then
    refresh_class_head(p, class)
  end
end

-- Wakes one idle worker able to run `class`, preferring any worker but `avoid`
-- (the one the job just failed on). Returns the woken worker or false.
local function wake_one(p, class, avoid)
  local idle = redis.call('HGETALL', p .. 'idle')
  local fallback = false
  for i = 1, #idle, 2 do
    local worker, profile = idle[i], idle[i + 1]
    if profile_matches(p, profile, class) then
      if worker ~= avoid then
        redis.call('HDEL', p .. 'idle', worker)
        redis.call('RPUSH', signal_key(p, worker), 'wake:' .. class)
        return worker
      end
      fallback = worker
    end
  end
  if fallback then
    -- only the avoided worker is idle: wake it anyway so it learns when it may take the job
    redis.call('HDEL', p .. 'idle', fallback)
    redis.call('RPUSH', signal_key(p, fallback), 'wake:' .. class)
  end
  return fallback
end

local function enqueue(p, id, class, score, avoid)
  redis.call('ZADD', queue_key(p, class), score, id)
  redis.call('ZADD', p .. 'classes', 'LT', score, class)
  wake_one(p, class, avoid)
end

-- Keeps the job's single entry in `timers` at the next moment something must
-- happen to it (run_at, retry, deadline or execution timeout), or removes it.
-- Leases are not job timers: they belong to workers (see `leases`).
local function schedule(p, id)
  local f = redis.call('HMGET', job_key(p, id), 'state', 'run_at', 'retry_at', 'queue_deadline',
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
    redis.call('ZADD', p .. 'timers', due, id)
  else
    redis.call('ZREM', p .. 'timers', id)
  end
end
