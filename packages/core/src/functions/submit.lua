-- submit: accept a new job into the shard.
-- KEYS[1] shard anchor
-- ARGV prelude (see includes/00-base.lua), then one job's arguments from [7] (see includes/60-submit.lua).
-- Returns { id, duplicate (0|1), routable (0|1) }.
-- Errors: IDEMPOTENCY_CONFLICT (same key, different request), DUPLICATE_ID.
local function submit(keys, args)
  local reply = submit_job(context(keys, args), args, PRELUDE + 1)
  return reply
end

register('emp_submit', submit)
