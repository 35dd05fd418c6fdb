-- fail: the attempt failed with a classified error; the job is retried, backs off
-- or ends `failed` (see apply_failure). Optionally claims the worker's next job.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] job id  [8] fencing token  [9] kind (retryable | non_retryable | timeout |
--   worker_lost | infrastructure)  [10] error (JSON)  [11] worker id to claim for ('' none)
--   [12] affinity bounds (as emp_claim's [9])
-- Returns { outcome ('queued' | 'retrying' | 'failed'), <claim reply...>? }. Errors: NOT_FOUND, LEASE_LOST.
local function fail(keys, args)
  local ctx = context(keys, args)
  local job = fenced(ctx, args[7], args[8])
  local next_worker = args[11] ~= '' and args[11] or nil
  affinity.bounds(ctx, args[12])
  -- read before anything changes: an unknown worker must change nothing
  local w = next_worker and load_worker(ctx.p, next_worker, ctx.now)
  local outcome = apply_failure(ctx, job, args[9], args[10], next_worker ~= nil)
  if not next_worker then return { outcome } end
  if job.opt and opt_fields(job.opt) then
    -- the failed step may have ended its workflow, whose canceled jobs may have left the worker
    -- with none (recorded idle) or queued a step that woke it: the claim reads the worker as a
    -- call of its own would (as complete.lua's does after a step ends)
    w = load_worker(ctx.p, next_worker, ctx.now)
  end
  local reply = claim_for(ctx, next_worker, nil, w)
  table.insert(reply, 1, outcome)
  return reply
end

register('emp_fail', fail)
