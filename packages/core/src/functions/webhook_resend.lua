-- webhook_resend: send an ended message (delivered, failed or disabled) again, with the same id
-- and body, as a new first attempt at the end of its chain (so it keeps its place after whatever
-- of the job is still pending).
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now ('' = server time)  [2] message id
-- Returns 1 queued again, 0 unknown (or expired), -1 still pending or in flight, -2 its URL is disabled for the tenant.
local function webhook_resend(keys, args)
  local p = prefix_of(keys[1])
  local now = clock(args[1])
  local id = args[2]
  local key = p .. 'msg:' .. id
  local f = call('HMGET', key, 'state', 'chain', 'tenant', 'url')
  if not f[1] or f[1] == 'merged' then return 0 end
  if f[1] == 'pending' or f[1] == 'inflight' then return -1 end
  if call('HEXISTS', p .. 'disabled:' .. f[3], f[4]) == 1 then return -2 end
  call('HSET', key, 'state', 'pending', 'attempts', 0, 'resent_at', now)
  call('HDEL', key, 'finished_at')
  call('PERSIST', key)
  if call('RPUSH', p .. 'chain:' .. f[2], id) == 1 then
    call('HSET', key, 'next_at', now)
    call('ZADD', p .. 'due', now, id)
  end
  return 1
end

register('emp_webhook_resend', webhook_resend)
