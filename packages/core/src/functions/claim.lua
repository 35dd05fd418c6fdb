-- claim: give the calling worker the best queued job it can run, or record it idle.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] worker id  [8] class the worker was woken for ('' none:
-- the class the last wake-up named, if any)  [9] affinity bounds in ms, 'wait/overdue' (the broker's
-- affinityWaitMs: how long a job is left for a worker holding its models, 0 never; affinityOverdueMs: the
-- age after which a job outranks warm ones, 0 never), or one number for both  [10] 'if-woken' or absent
-- With 'if-woken' the claim is one an idle worker queued on its signal connection
-- behind its blocking wait, so that a wake-up and the claim it calls for take no
-- round trip in between: it runs when the wait ends, and does nothing unless the
-- wait ended in a wake-up (the worker is no longer in `idle`).
-- Returns { 'job', id, token, attempt, service, tenant, payload, requirements, priority,
--           workflow_id, step, exec_timeout_ms, submitted_at }
--      or { 'none', retry_at ('' none), worker state }
--      or, for an 'if-woken' claim of a worker nobody woke, { 'none', '', worker state, 'unwoken' }.
-- Errors: UNKNOWN_WORKER.
local function claim(keys, args)
  local ctx = context(keys, args)
  local w = load_worker(ctx.p, args[7], ctx.now)
  affinity.bounds(ctx, args[9])
  if args[10] == 'if-woken' and w.waiting then return { 'none', '', w.state or 'idle', 'unwoken' } end
  return claim_for(ctx, args[7], args[8] ~= '' and args[8] or nil, w)
end

register('emp_claim', claim)
