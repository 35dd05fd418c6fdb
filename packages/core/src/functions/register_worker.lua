-- register_worker: announce a worker and its capabilities (again after any change,
-- e.g. a model finished downloading). A capability profile seen for the first time
-- is checked against the classes no worker could run so far.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] worker id  [8] machine id  [9] profile id  [10] capabilities (canonical JSON)
--   [11] '1' when this is a new process: jobs an earlier process under this id held are lost
--   and go back to the queue at once (a restarted worker need not wait for its old lease)
--   [12..] field/value pairs stored on the worker as given (concurrency, version, hostname, ...)
-- Returns { classes that became routable, cursor ('0': done; else go on with emp_routable_scan),
--   'scan' when the queued jobs must be put into lanes first (emp_lane_scan), else '' }.
local function register_worker(keys, args)
  local ctx = context(keys, args)
  local p, worker, profile = ctx.p, args[7], args[9]
  stamp_new_shard(p)
  local wkey = worker_key(p, worker)
  local fresh = call('EXISTS', wkey) == 0
  call('HSET', wkey, 'id', worker, 'machine', args[8], 'profile', profile, 'last_seen', ctx.now,
    unpack(args, 12))
  -- a borrower (cross-pool fallback, see claim_fallback.lua) is listed apart from the pool's own
  -- workers, so that routing counts only those as the pool's (`borrowers`)
  if call('HEXISTS', wkey, 'home_pool') == 1 then call('SADD', p .. 'borrowers', worker) end
  if fresh then
    call('HSET', wkey, 'registered_at', ctx.now)
  else
    -- a walk paused before (re)registering was made with the old capabilities
    call('HDEL', wkey, 'cursor')
  end
  call('ZADD', p .. 'workers', ctx.now, worker)
  call('ZREM', p .. 'workers:offline', worker)
  local was_waiting = call('HEXISTS', p .. 'idle', worker) == 1

  if args[11] == '1' and not fresh then
    for _, id in ipairs(call('SMEMBERS', p .. 'wjobs:' .. worker)) do
      local job = load_job(p, id)
      if job and ACTIVE[job.state] and job.worker == worker then
        apply_failure(ctx, job, 'worker_lost', cjson.encode({ kind = 'worker_lost',
          message = 'worker ' .. worker .. ' restarted while running this job' }), false)
      end
    end
    call('DEL', p .. 'wjobs:' .. worker)
    call('ZREM', p .. 'leases', worker)
    call('HDEL', wkey, 'state')
  end

  local became_routable, scan_cursor = 0, '0'
  if call('SADD', p .. 'profiles', profile) == 1 then
    call('SET', profile_key(p, profile), args[10])
    became_routable, scan_cursor = check_routable(ctx, profile, '0')
  end
  -- the first worker restricted to tenants or a workflow turns lanes on in the shard; the
  -- jobs already queued are put into them (emp_lane_scan) before this worker claims
  local lanes = ''
  if profile_lanes(p, profile) and call('GET', laned_key(p)) ~= 'done' then
    call('SET', laned_key(p), 'scanning')
    lanes = 'scan'
  end
  -- a waiting worker whose capabilities may have changed is woken, so that it claims
  -- again with them (the claim it queued behind its signal wait runs)
  if was_waiting then wake(p, worker, '') end
  local state = call('HGET', wkey, 'state')
  if state ~= 'draining' then
    local running = call('SCARD', p .. 'wjobs:' .. worker)
    set_worker_state(p, worker, running > 0 and 'busy' or 'idle', ctx.ts, ctx.maxlen)
  end
  if fresh then
    events_append(p, ctx.maxlen, 'type', 'worker.registered', 'worker', worker, 'machine', args[8], 'ts', ctx.now)
  end
  return { became_routable, scan_cursor, lanes }
end

register('emp_register_worker', register_worker)
