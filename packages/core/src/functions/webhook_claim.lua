-- webhook_claim: take up to `limit` messages that are due for an attempt. Each stays in the due
-- index, its score moved to the end of its lease: an instance that dies mid-delivery leaves it
-- there, and it is tried again (same message id) once the lease runs out. At most `per_url`
-- attempts are in flight to one URL (busy:<url>: message -> lease end), so one slow receiver
-- cannot take every slot; a due message over that limit waits `busy_ms` more.
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now ('' = server time)  [2] limit  [3] lease ms  [4] per_url (0 = no limit)  [5] busy_ms
-- Returns a list of { id, attempt, tenant, url, job, type, body, created_at }.
local function webhook_claim(keys, args)
  local p = prefix_of(keys[1])
  local now = clock(args[1])
  local limit, lease_ms = tonumber(args[2]), tonumber(args[3])
  local per_url, busy_ms = tonumber(args[4]), tonumber(args[5])
  local out = {}
  -- look past messages held back by their URL's limit, within a bounded window
  for _, id in ipairs(call('ZRANGEBYSCORE', p .. 'due', '-inf', now, 'LIMIT', 0, limit * 4)) do
    if #out >= limit then break end
    local key = p .. 'msg:' .. id
    local f = call('HMGET', key, 'tenant', 'url', 'job', 'type', 'body', 'created_at')
    if not f[1] then
      call('ZREM', p .. 'due', id)
    else
      local busy = p .. 'busy:' .. f[2]
      local free = true
      if per_url > 0 then
        call('ZREMRANGEBYSCORE', busy, '-inf', now)
        free = call('ZSCORE', busy, id) ~= false or call('ZCARD', busy) < per_url
      end
      if not free then
        call('ZADD', p .. 'due', now + busy_ms, id)
      else
        call('ZADD', p .. 'due', now + lease_ms, id)
        if per_url > 0 then
          call('ZADD', busy, now + lease_ms, id)
          call('PEXPIRE', busy, lease_ms)
        end
        local attempt = call('HINCRBY', key, 'attempts', 1)
        call('HSET', key, 'state', 'inflight', 'next_at', now + lease_ms)
        table.insert(out, { id, attempt, f[1], f[2], f[3], f[4], f[5], f[6] })
      end
    end
  end
  return out
end

register('emp_webhook_claim', webhook_claim)
