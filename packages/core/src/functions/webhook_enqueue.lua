-- webhook_enqueue: add a message for a webhook target (a tenant's endpoint, or a job's own webhook
-- URL) to its chain (one job's messages to one target, delivered one at a time in order); the
-- chain's head is due at once (a progress message no sooner than `throttle_ms` after the chain's
-- last delivered progress). A progress message arriving while the chain's last message is a
-- progress message not yet tried replaces that one's body instead (throttling keeps the latest
-- value). Idempotent on the message id, so an event read twice (a consumer crashed before its
-- XACK) is queued once. An endpoint's messages are indexed by time (epmsgs:<endpoint>) for recover.
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now ('' = server time)  [2] message id  [3] chain  [4] tenant  [5] url  [6] job id
--   [7] event type  [8] body  [9] progress throttle ms  [10] retention ms of a finished message
--   [11] endpoint id ('' = the job's own webhook)  [12] the job's W3C traceparent ('' or absent: none)
-- Returns 1 queued, 2 merged into the pending progress message, 0 already known, -1 the target is disabled.
local function webhook_enqueue(keys, args)
  local p = prefix_of(keys[1])
  local now = clock(args[1])
  local id, chain, tenant, url, job, kind, body = args[2], args[3], args[4], args[5], args[6], args[7], args[8]
  local throttle_ms, retention = tonumber(args[9]), args[10]
  local endpoint = args[11] or ''
  local traceparent = args[12] or ''
  local key = p .. 'msg:' .. id
  if call('EXISTS', key) == 1 then return 0 end
  if target_disabled(p, tenant, url, endpoint) then return -1 end
  local chain_key = p .. 'chain:' .. chain
  if kind == 'job.progress' then
    local tail = call('LINDEX', chain_key, -1)
    if tail then
      local t = call('HMGET', p .. 'msg:' .. tail, 'type', 'state', 'attempts')
      if t[1] == 'job.progress' and t[2] == 'pending' and t[3] == '0' then
        call('HSET', p .. 'msg:' .. tail, 'body', body)
        call('HINCRBY', p .. 'msg:' .. tail, 'merged', 1)
        call('HSET', key, 'state', 'merged', 'into', tail)
        call('PEXPIRE', key, retention)
        return 2
      end
    end
  end
  call('HSET', key, 'id', id, 'chain', chain, 'tenant', tenant, 'url', url, 'job', job, 'type', kind, 'body', body,
    'state', 'pending', 'attempts', 0, 'created_at', now)
  call('ZADD', p .. 'undelivered', now, id)
  if traceparent ~= '' then call('HSET', key, 'traceparent', traceparent) end
  if endpoint ~= '' then
    call('HSET', key, 'endpoint', endpoint)
    local index = p .. 'epmsgs:' .. endpoint
    call('ZADD', index, now, id)
    call('ZREMRANGEBYSCORE', index, '-inf', now - tonumber(retention))
  end
  if call('RPUSH', chain_key, id) == 1 then schedule_message(p, id, chain, kind, now, throttle_ms) end
  return 1
end

register('emp_webhook_enqueue', webhook_enqueue)
