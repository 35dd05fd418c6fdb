-- webhook_settle: record the outcome of one delivery attempt. `retry` puts the message back in
-- the due index `retry_ms` from now (Redis's clock); `delivered`, `failed` and `disabled` end it (kept for `retention`
-- ms) and make the next message of its chain due. `disabled` (the receiver answered 410 Gone)
-- also disables the URL for the tenant: the chain's later messages and new ones are dropped.
-- An attempt that is no longer the message's latest (its lease ran out and another instance
-- took it) only adds its log entry.
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now ('' = server time)  [2] message id  [3] attempt  [4] outcome (delivered | retry | failed | disabled)
--   [5] retry_ms (retry)  [6] log entry (JSON)  [7] log length kept  [8] retention ms  [9] progress throttle ms
-- Returns 1 settled, 0 stale attempt or unknown message.
local function webhook_settle(keys, args)
  local p = prefix_of(keys[1])
  local now = clock(args[1])
  local id, outcome, retention = args[2], args[4], args[8]
  local key = p .. 'msg:' .. id
  local f = call('HMGET', key, 'attempts', 'state', 'chain', 'job', 'tenant', 'url', 'type')
  if not f[1] then return 0 end
  local log_key = p .. 'log:' .. f[4]
  call('RPUSH', log_key, args[6])
  call('LTRIM', log_key, -tonumber(args[7]), -1)
  call('PEXPIRE', log_key, retention)
  if f[1] ~= args[3] or f[2] ~= 'inflight' then return 0 end
  call('ZREM', p .. 'busy:' .. f[6], id)
  if outcome == 'retry' then
    local retry_at = now + tonumber(args[5])
    call('HSET', key, 'state', 'pending', 'next_at', retry_at)
    call('ZADD', p .. 'due', retry_at, id)
    return 1
  end
  local tenant, url, chain = f[5], f[6], f[3]
  if outcome == 'disabled' then call('HSET', p .. 'disabled:' .. tenant, url, now) end
  call('HSET', key, 'state', outcome, 'finished_at', now)
  call('HDEL', key, 'next_at')
  call('PEXPIRE', key, retention)
  call('ZREM', p .. 'due', id)
  local chain_key = p .. 'chain:' .. chain
  call('LREM', chain_key, 1, id)
  local throttle_ms = tonumber(args[9])
  if f[7] == 'job.progress' and outcome == 'delivered' and throttle_ms > 0 then
    call('SET', p .. 'throttle:' .. chain, now, 'PX', throttle_ms)
  end
  local disabled = call('HEXISTS', p .. 'disabled:' .. tenant, url) == 1
  while true do
    local next_id = call('LINDEX', chain_key, 0)
    if not next_id then break end
    local next_key = p .. 'msg:' .. next_id
    if not disabled then
      schedule_message(p, next_id, chain, call('HGET', next_key, 'type'), now, throttle_ms)
      break
    end
    call('HSET', next_key, 'state', 'disabled', 'finished_at', now)
    call('PEXPIRE', next_key, retention)
    call('LPOP', chain_key)
  end
  return 1
end

register('emp_webhook_settle', webhook_settle)
