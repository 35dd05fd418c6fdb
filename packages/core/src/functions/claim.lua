-- claim: give the calling worker the best queued job it can run, or record it idle.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] worker id  [8] class the worker was woken for ('' none)
-- Returns { 'job', id, token, attempt, service, tenant, payload, requirements, priority,
--           workflow_id, step, exec_timeout_ms, submitted_at }
--      or { 'none', retry_at ('' none), worker state }.
-- Errors: UNKNOWN_WORKER.
local function claim(keys, args)
  local ctx = context(keys, args)
  local woken = args[8] ~= '' and args[8] or nil
  return claim_for(ctx, args[7], woken, load_worker(ctx.p, args[7]))
end

register('emp_claim', claim)
