-- webhook_resend: send an ended message (delivered, failed or disabled) again, with the same id
-- and body, as a new first attempt at the end of its chain (so it keeps its place after whatever
-- of the job is still pending).
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now ('' = server time)  [2] message id
-- Returns 1 queued again, 0 unknown (or expired), -1 still pending or in flight, -2 its target
-- (the job webhook's URL for the tenant, or the endpoint) is disabled.
local function webhook_resend(keys, args)
  local p = prefix_of(keys[1])
  return requeue_message(p, args[2], clock(args[1]))
end

register('emp_webhook_resend', webhook_resend)
