-- webhook_settle: record the outcome of one delivery attempt. `retry` puts the message back in
-- the due index `retry_ms` from now (Redis's clock); `delivered`, `failed` and `disabled` end it (kept for `retention`
-- ms) and make the next message of its chain due. `disabled` (the receiver answered 410 Gone)
-- also disables the target: a job webhook's URL for the tenant, or the endpoint (with a reason
-- and an operator event); the chain's later messages and new ones are dropped. An endpoint whose
-- attempts have failed without a delivery between them for `fail_disable_ms` is disabled the
-- same way. An attempt that is no longer the message's latest (its lease ran out and another
-- instance took it) only adds its log entries.
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now ('' = server time)  [2] message id  [3] attempt  [4] outcome (delivered | retry | failed | disabled)
--   [5] retry_ms (retry)  [6] log entry (JSON)  [7] log length kept (per job; ten times that per endpoint)
--   [8] retention ms  [9] progress throttle ms  [10] fail_disable_ms (0 = never)
-- Returns 1 settled, 2 settled and the endpoint disabled by it, 0 stale attempt or unknown message.
-- Disables an endpoint (410 Gone, failing too long) and appends an operator
-- event to the outbox's own stream (events: webhook.endpoint.disabled).
-- Returns true when it was enabled until now.
local function disable_endpoint(p, endpoint, reason, now)
  local key = p .. 'ep:' .. endpoint
  local f = call('HMGET', key, 'enabled', 'tenant', 'url')
  if f[1] ~= '1' then return false end
  call('HSET', key, 'enabled', '0', 'disabled_reason', reason, 'disabled_at', now, 'updated_at', now)
  outbox_event(p, now, 'webhook.endpoint.disabled', 'endpoint', endpoint, 'tenant', f[2] or '', 'url', f[3] or '',
    'reason', reason)
  return true
end

local function webhook_settle(keys, args)
  local p = prefix_of(keys[1])
  local now = clock(args[1])
  local id, outcome, retention = args[2], args[4], args[8]
  local key = p .. 'msg:' .. id
  local f = call('HMGET', key, 'attempts', 'state', 'chain', 'job', 'tenant', 'url', 'type', 'endpoint')
  if not f[1] then return 0 end
  local endpoint = f[8] or ''
  local keep = tonumber(args[7])
  local log_key = p .. 'log:' .. f[4]
  call('RPUSH', log_key, args[6])
  call('LTRIM', log_key, -keep, -1)
  call('PEXPIRE', log_key, retention)
  if endpoint ~= '' then
    local ep_log = p .. 'eplog:' .. endpoint
    call('RPUSH', ep_log, args[6])
    call('LTRIM', ep_log, -keep * 10, -1)
    call('PEXPIRE', ep_log, retention)
  end
  if f[1] ~= args[3] or f[2] ~= 'inflight' then return 0 end
  call('ZREM', busy_key(p, endpoint, f[6]), id)
  local disabled_now = false
  if endpoint ~= '' then
    local ep_key = p .. 'ep:' .. endpoint
    if outcome == 'delivered' then
      call('HDEL', ep_key, 'failing_since')
    elseif outcome == 'disabled' then
      disabled_now = disable_endpoint(p, endpoint, 'the receiver answered 410 Gone', now)
    elseif call('EXISTS', ep_key) == 1 then
      local since = tonumber(call('HGET', ep_key, 'failing_since'))
      if not since then
        call('HSET', ep_key, 'failing_since', now)
      elseif tonumber(args[10]) > 0 and now - since >= tonumber(args[10]) then
        local days = math.floor((now - since) / 86400000 * 10 + 0.5) / 10
        disabled_now = disable_endpoint(p, endpoint, 'every attempt failed for ' .. days .. ' days', now)
        if outcome == 'retry' then outcome = 'failed' end
      end
    end
  elseif outcome == 'disabled' then
    call('HSET', p .. 'disabled:' .. f[5], f[6], now)
  end
  if outcome == 'retry' then
    local retry_at = now + tonumber(args[5])
    call('HSET', key, 'state', 'pending', 'next_at', retry_at)
    call('ZADD', p .. 'due', retry_at, id)
    return 1
  end
  end_message(p, id, outcome, now, retention, tonumber(args[9]))
  if disabled_now then return 2 end
  return 1
end

register('emp_webhook_settle', webhook_settle)
