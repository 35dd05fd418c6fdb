-- Worker registry helpers: state changes are written once and announced once.

-- `previous` and `machine` may be passed when the caller already read the worker's
-- state and machine; `ts` is the time as text.
local function set_worker_state(p, worker, state, ts, maxlen, previous, machine)
  local key = worker_key(p, worker)
  if previous == nil then previous = call('HGET', key, 'state') end
  if previous == state then return end
  call('HSET', key, 'state', state, 'state_since', ts)
  events_append(p, maxlen, 'type', 'worker.' .. state, 'worker', worker, 'state', state,
    'machine', machine or call('HGET', key, 'machine') or '', 'ts', ts)
end

-- The lease of every job a worker holds runs out together, `lease_ms` after the
-- worker last proved it was alive (claim, heartbeat, progress).
local function renew_lease(p, worker, now, lease_ms)
  call('ZADD', p .. 'leases', now + lease_ms, worker)
end

-- A worker's job has ended: forget it and, unless the worker is about to claim
-- again in the same call, mark the worker idle when nothing else is running.
-- `jobs`: the key of the worker's set of jobs, when the caller has it (nil: made here).
local function release_worker_job(p, worker, id, ts, maxlen, claim_follows, jobs)
  if not worker or worker == '' then return end
  jobs = jobs or p .. 'wjobs:' .. worker
  call('SREM', jobs, id)
  if not claim_follows and call('SCARD', jobs) == 0 then
    local state = call('HGET', worker_key(p, worker), 'state')
    if state == 'busy' then set_worker_state(p, worker, 'idle', ts, maxlen, state) end
  end
end

local function signal_worker(p, worker, message)
  local key = signal_key(p, worker)
  call('RPUSH', key, message)
  call('LTRIM', key, -100, -1)
end


-- Checks one page of `unroutable` (from SSCAN cursor `cursor`) against a new
-- capability profile: a class it can run becomes routable (event class.routable).
-- Returns how many did and the cursor to go on from ('0': the scan is done).
local function check_routable(ctx, profile, cursor)
  local p = ctx.p
  local scan = call('SSCAN', p .. 'unroutable', cursor, 'COUNT', CLASS_SCAN_PAGE)
  local became = 0
  for _, class in ipairs(scan[2]) do
    if profile_matches(p, profile, class) then
      call('HSET', class_key(p, class), 'routable', '1')
      call('SREM', p .. 'unroutable', class)
      events_append(p, ctx.maxlen, 'type', 'class.routable', 'class', class, 'ts', ctx.ts)
      became = became + 1
    end
  end
  return became, scan[1]
end
