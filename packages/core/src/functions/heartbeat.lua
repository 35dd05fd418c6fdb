-- heartbeat: the worker is alive; renew the lease on everything it holds. The
-- reply is the channel back to the worker: every job it named that it must stop
-- working on. The worker names every job it is working on, so a job the broker
-- thinks it holds but it does not name (a claim reply lost on the way) goes back
-- to the queue: once it was claimed before the previous heartbeat, the worker
-- has had a heartbeat's time to learn of it.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] worker id  [8..] job id, fencing token pairs (all jobs the worker runs)
-- Returns a flat list of job id, verdict ('canceled' | 'expired' | 'lost') for the jobs to drop.
-- Errors: UNKNOWN_WORKER.
local function heartbeat(keys, args)
  local ctx = context(keys, args)
  local p, worker = ctx.p, args[7]
  local wkey = worker_key(p, worker)
  local state = call('HGET', wkey, 'state')
  if not state then raise('UNKNOWN_WORKER', 'worker ' .. worker .. ' is not registered in this shard') end
  call('HSET', wkey, 'last_seen', ctx.ts)
  call('ZADD', p .. 'workers', ctx.ts, worker)
  if call('SCARD', p .. 'wjobs:' .. worker) > 0 then renew_lease(p, worker, ctx.now, ctx.lease_ms) end
  if state == 'offline' then
    call('ZREM', p .. 'workers:offline', worker)
    local running = call('SCARD', p .. 'wjobs:' .. worker)
    set_worker_state(p, worker, running > 0 and 'busy' or 'idle', ctx.ts, ctx.maxlen, state)
    -- going offline took it off the idle index: wake it so its next claim finds work or re-registers it idle
    signal_worker(p, worker, 'wake:')
  end
  local previous_beat = tonumber(call('HGET', wkey, 'heartbeat_at'))
  call('HSET', wkey, 'heartbeat_at', ctx.ts)
  local named = {}
  for i = 8, #args, 2 do named[args[i]] = true end
  if previous_beat then
    for _, id in ipairs(call('SMEMBERS', p .. 'wjobs:' .. worker)) do
      if not named[id] then
        local job = load_job(p, id)
        local claimed = tonumber(call('HGET', job_key(p, id), 'claimed_at')) or 0
        if job and ACTIVE[job.state] and job.worker == worker and claimed < previous_beat then
          apply_failure(ctx, job, 'worker_lost', cjson.encode({ kind = 'worker_lost',
            message = 'worker ' .. worker .. ' no longer reports this job (its claim reply was lost?)' }), false)
        end
      end
    end
  end
  local drop = {}
  for i = 8, #args, 2 do
    local id, token = args[i], args[i + 1]
    local f = call('HMGET', job_key(p, id), 'state', 'attempts')
    if not (f[1] and f[2] == token and ACTIVE[f[1]]) then
      local verdict = 'lost'
      if f[2] == token and (f[1] == 'canceled' or f[1] == 'expired') then verdict = f[1] end
      drop[#drop + 1] = id
      drop[#drop + 1] = verdict
    end
  end
  return drop
end

register('emp_heartbeat', heartbeat)
