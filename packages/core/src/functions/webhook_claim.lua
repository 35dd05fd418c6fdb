-- webhook_claim: take up to `limit` messages that are due for an attempt. Each stays in the due
-- index, its score moved to the end of its lease: an instance that dies mid-delivery leaves it
-- there, and it is tried again (same message id) once the lease runs out.
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now ('' = server time)  [2] limit  [3] lease ms
-- Returns a list of { id, attempt, tenant, url, job, type, body, created_at }.
local function webhook_claim(keys, args)
  local p = prefix_of(keys[1])
  local now = clock(args[1])
  local lease_ms = tonumber(args[3])
  local out = {}
  for _, id in ipairs(call('ZRANGEBYSCORE', p .. 'due', '-inf', now, 'LIMIT', 0, tonumber(args[2]))) do
    local key = p .. 'msg:' .. id
    local f = call('HMGET', key, 'tenant', 'url', 'job', 'type', 'body', 'created_at')
    if not f[1] then
      call('ZREM', p .. 'due', id)
    else
      call('ZADD', p .. 'due', now + lease_ms, id)
      local attempt = call('HINCRBY', key, 'attempts', 1)
      call('HSET', key, 'state', 'inflight', 'next_at', now + lease_ms)
      table.insert(out, { id, attempt, f[1], f[2], f[3], f[4], f[5], f[6] })
    end
  end
  return out
end

register('emp_webhook_claim', webhook_claim)
