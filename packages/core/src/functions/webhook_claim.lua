-- webhook_claim: take up to `limit` messages that are due for an attempt. Each stays in the due
-- index, its score moved to the end of its lease: an instance that dies mid-delivery leaves it
-- there, and it is tried again (same message id) once the lease runs out. At most `per_target`
-- attempts are in flight to one endpoint (or, for a job's own webhook, one URL) at a time
-- (busy_key: message -> lease end), so one slow receiver cannot take every slot; a due message
-- over that limit waits `busy_ms` more. An endpoint's `rate_limit` caps its attempts per second
-- (one more over it waits for the next second). A message whose endpoint was disabled or deleted
-- meanwhile is ended as disabled.
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now ('' = server time)  [2] limit  [3] lease ms  [4] per_target (0 = no limit)  [5] busy_ms
--   [6] retention ms of an ended message  [7] progress throttle ms
-- Returns a list of { id, attempt, tenant, url, job, type, body, created_at, endpoint or '' }.
local function webhook_claim(keys, args)
  local p = prefix_of(keys[1])
  local now = clock(args[1])
  local limit, lease_ms = tonumber(args[2]), tonumber(args[3])
  local per_target, busy_ms = tonumber(args[4]), tonumber(args[5])
  local retention, throttle_ms = tonumber(args[6]) or 604800000, tonumber(args[7]) or 0
  local out = {}
  -- look past messages held back by their target's limits, within a bounded window
  for _, id in ipairs(call('ZRANGEBYSCORE', p .. 'due', '-inf', now, 'LIMIT', 0, limit * 4)) do
    if #out >= limit then break end
    local key = p .. 'msg:' .. id
    local f = call('HMGET', key, 'tenant', 'url', 'job', 'type', 'body', 'created_at', 'endpoint', 'traceparent')
    local endpoint = f[7] or ''
    if not f[1] then
      call('ZREM', p .. 'due', id)
    elseif endpoint ~= '' and target_disabled(p, f[1], f[2], endpoint) then
      end_message(p, id, 'disabled', now, retention, throttle_ms)
    else
      local busy = busy_key(p, endpoint, f[2])
      -- when a message held back by a limit is looked at again (nil: it may go now)
      local wait_until
      if per_target > 0 then
        call('ZREMRANGEBYSCORE', busy, '-inf', now)
        if call('ZSCORE', busy, id) == false and call('ZCARD', busy) >= per_target then wait_until = now + busy_ms end
      end
      local rate_key
      if not wait_until and endpoint ~= '' then
        local rate = tonumber(call('HGET', p .. 'ep:' .. endpoint, 'rate_limit'))
        if rate and rate > 0 then
          local second = math.floor(now / 1000)
          rate_key = p .. 'rate:' .. endpoint .. ':' .. second
          if (tonumber(call('GET', rate_key)) or 0) >= rate then wait_until = (second + 1) * 1000 end
        end
      end
      if wait_until then
        call('ZADD', p .. 'due', wait_until, id)
      else
        if rate_key then
          call('INCR', rate_key)
          call('PEXPIRE', rate_key, 2000)
        end
        call('ZADD', p .. 'due', now + lease_ms, id)
        if per_target > 0 then
          call('ZADD', busy, now + lease_ms, id)
          call('PEXPIRE', busy, lease_ms)
        end
        local attempt = call('HINCRBY', key, 'attempts', 1)
        call('HSET', key, 'state', 'inflight', 'next_at', now + lease_ms)
        table.insert(out, { id, attempt, f[1], f[2], f[3], f[4], f[5], f[6], endpoint, f[8] or '' })
      end
    end
  end
  return out
end

register('emp_webhook_claim', webhook_claim)
