-- set_worker_state: a worker says it is draining (stops claiming, e.g. on a spot
-- preemption notice), back to work, or going offline on a clean exit; or, with
-- 'borrowing', that it took a job elsewhere (another pool's, cross-pool fallback;
-- or another shard's of its own pool) with its last free slot: it leaves this
-- shard's idle set, so that this shard's submits wake someone free, and its state
-- is left as it is (its next claim here puts it back). A wake-up it got here
-- meanwhile and cannot answer is passed on to another idle worker.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] worker id  [8] state ('draining' | 'idle' | 'offline' | 'borrowing')
-- Returns the state. Errors: UNKNOWN_WORKER, BAD_STATE.
local function must_be_worker(p, worker)
  if call('EXISTS', worker_key(p, worker)) == 0 then
    raise('UNKNOWN_WORKER', 'worker ' .. worker .. ' is not registered in this shard')
  end
end

local function set_state(keys, args)
  local ctx = context(keys, args)
  local p, worker, state = ctx.p, args[7], args[8]
  local wkey = worker_key(p, worker)
  must_be_worker(p, worker)
  if state == 'borrowing' then
    local waiting = call('HGET', wkey, 'waiting')
    stop_waiting(p, worker)
    if waiting and string.sub(waiting, 1, 6) == 'woken:' and string.len(waiting) > 6 then
      wake_for_head(p, string.sub(waiting, 7), worker)
    end
    call('HSET', wkey, 'last_seen', ctx.now)
    return call('HGET', wkey, 'state') or 'idle'
  end
  if state ~= 'draining' and state ~= 'idle' and state ~= 'offline' then
    raise('BAD_STATE', 'a worker may set itself draining, idle, offline or borrowing, not ' .. tostring(state))
  end
  if state ~= 'idle' then
    stop_waiting(p, worker)
    -- ends the worker's blocking wait, so that a claim it queued behind it runs (and finds it draining)
    signal_worker(p, worker, 'wake:')
  end
  if state == 'offline' then
    affinity.forget_worker(p, worker)
    call('ZREM', p .. 'workers', worker)
    call('ZADD', p .. 'workers:offline', ctx.now, worker)
  else
    -- a worker that speaks is online again, whatever it says
    call('ZADD', p .. 'workers', ctx.now, worker)
    call('ZREM', p .. 'workers:offline', worker)
    if state == 'idle' and call('SCARD', p .. 'wjobs:' .. worker) > 0 then state = 'busy' end
  end
  call('HSET', wkey, 'last_seen', ctx.now)
  set_worker_state(p, worker, state, ctx.ts, ctx.maxlen)
  return state
end

register('emp_set_worker_state', set_state)
