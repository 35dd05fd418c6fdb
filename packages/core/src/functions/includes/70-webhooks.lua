-- Shared by the webhook outbox functions (webhook_*.lua): keys under the
-- outbox's own anchor `emp:{_webhooks}:shard`.

-- Appends an operator event (type, then field/value pairs) to the outbox's own
-- stream `events`, kept about the last 10,000: webhook.endpoint.disabled, webhook.events.lost.
local function outbox_event(p, now, kind, ...)
  return call('XADD', p .. 'events', 'MAXLEN', '~', 10000, '*', 'type', kind, 'ts', now, ...)
end

-- Makes message `id`, now at the head of its chain (one job's messages to one
-- URL or endpoint, sent in order), due: at once, or for a progress message no
-- sooner than `throttle_ms` after the chain's last delivered progress.
local function schedule_message(p, id, chain, kind, now, throttle_ms)
  local due = now
  if kind == 'job.progress' then
    local last = tonumber(call('GET', p .. 'throttle:' .. chain))
    if last and last + throttle_ms > due then due = last + throttle_ms end
  end
  call('HSET', p .. 'msg:' .. id, 'next_at', due)
  call('ZADD', p .. 'due', due, id)
end

-- The set of a message's attempts in flight that its concurrency limit counts:
-- per endpoint for an endpoint's messages, per URL for a job's own webhook.
local function busy_key(p, endpoint, url)
  if endpoint and endpoint ~= '' then return p .. 'busy:ep:' .. endpoint end
  return p .. 'busy:' .. url
end

-- Whether messages to this target are dropped: an endpoint that is disabled or
-- deleted, or a job webhook's URL that answered 410 Gone for the tenant.
local function target_disabled(p, tenant, url, endpoint)
  if endpoint and endpoint ~= '' then return call('HGET', p .. 'ep:' .. endpoint, 'enabled') ~= '1' end
  return call('HEXISTS', p .. 'disabled:' .. tenant, url) == 1
end

-- Ends message `id` in `state` (delivered | failed | disabled), kept `retention`
-- ms, and makes the next message of its chain due; while its target is disabled
-- the chain's later messages are ended as disabled instead.
local function end_message(p, id, state, now, retention, throttle_ms)
  local key = p .. 'msg:' .. id
  local f = call('HMGET', key, 'chain', 'type', 'tenant', 'url', 'endpoint')
  local chain = f[1]
  call('HSET', key, 'state', state, 'finished_at', now)
  call('HDEL', key, 'next_at')
  call('PEXPIRE', key, retention)
  call('ZREM', p .. 'due', id)
  call('ZREM', p .. 'undelivered', id)
  local chain_key = p .. 'chain:' .. chain
  call('LREM', chain_key, 1, id)
  if f[2] == 'job.progress' and state == 'delivered' and throttle_ms > 0 then
    call('SET', p .. 'throttle:' .. chain, now, 'PX', throttle_ms)
  end
  local disabled = target_disabled(p, f[3], f[4], f[5])
  while true do
    local next_id = call('LINDEX', chain_key, 0)
    if not next_id then break end
    local next_key = p .. 'msg:' .. next_id
    if not disabled then
      schedule_message(p, next_id, chain, call('HGET', next_key, 'type'), now, throttle_ms)
      break
    end
    call('HSET', next_key, 'state', 'disabled', 'finished_at', now)
    call('HDEL', next_key, 'next_at')
    call('PEXPIRE', next_key, retention)
    call('ZREM', p .. 'due', next_id)
    call('ZREM', p .. 'undelivered', next_id)
    call('LPOP', chain_key)
  end
end

-- Sends an ended message again (same id and body) as a new first attempt at the
-- end of its chain. Returns 1 queued, 0 unknown, -1 still pending or in flight,
-- -2 its target is disabled.
local function requeue_message(p, id, now)
  local key = p .. 'msg:' .. id
  local f = call('HMGET', key, 'state', 'chain', 'tenant', 'url', 'endpoint')
  if not f[1] or f[1] == 'merged' then return 0 end
  if f[1] == 'pending' or f[1] == 'inflight' then return -1 end
  if target_disabled(p, f[3], f[4], f[5]) then return -2 end
  call('HSET', key, 'state', 'pending', 'attempts', 0, 'resent_at', now)
  call('HDEL', key, 'finished_at')
  call('PERSIST', key)
  call('ZADD', p .. 'undelivered', now, id)
  if call('RPUSH', p .. 'chain:' .. f[2], id) == 1 then
    call('HSET', key, 'next_at', now)
    call('ZADD', p .. 'due', now, id)
  end
  return 1
end
