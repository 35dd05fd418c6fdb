-- cancel: end a job as `canceled`. Queued or retrying jobs end at once; a job a
-- worker holds ends at once too, its fencing token stops working and the worker
-- is told through its signal list (and again in its next heartbeat reply).
-- Canceling a finished job changes nothing and returns its state.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] job id  [8] reason ('' none)
-- Returns { state, changed (0|1) }. Errors: NOT_FOUND.
local TERMINAL = { succeeded = true, failed = true, canceled = true, expired = true }

local function cancel(keys, args)
  local ctx = context(keys, args)
  local job = must_exist(ctx.p, args[7])
  if TERMINAL[job.state] then return { job.state, 0 } end
  detach(ctx, job, false)
  finish(ctx, job, 'canceled', 'cancel_reason', args[8])
  if ACTIVE[job.state] and job.worker then signal_worker(ctx.p, job.worker, 'cancel:' .. job.id) end
  return { 'canceled', 1 }
end

register('emp_cancel', cancel)
