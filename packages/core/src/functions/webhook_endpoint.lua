-- webhook_endpoint: create, change, rotate the secret of, enable, disable or delete a webhook
-- endpoint (ep:<id>, a hash; core's webhook-endpoints.ts reads it). Endpoints are indexed by when
-- they were made: all of them (endpoints), a tenant's (endpoints:t:<tenant>), and the
-- operator-scoped ones (endpoints:op, tenant '').
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now ('' = server time)  [2] action  [3] endpoint id, then per action:
--   create  [4] tenant ('' = operator scope)  [5..] field, value pairs
--   update  [4] n  [5..4+n] fields to remove  [5+n..] field, value pairs
--   rotate  [4] new secret  [5] grace ms (the current secret stays valid, signed with too, this long)
--   enable | delete
--   disable [4] reason
-- Returns 1 done (rotate: { secret, previous valid until }), 0 no such endpoint (create: it exists).
local function endpoint_index(p, tenant)
  if tenant == '' then return p .. 'endpoints:op' end
  return p .. 'endpoints:t:' .. tenant
end

local function webhook_endpoint(keys, args)
  local p = prefix_of(keys[1])
  local now = clock(args[1])
  local action, id = args[2], args[3]
  local key = p .. 'ep:' .. id
  local exists = call('EXISTS', key) == 1
  if action == 'create' then
    if exists then return 0 end
    local tenant = args[4]
    call('HSET', key, 'id', id, 'tenant', tenant, 'created_at', now, 'updated_at', now, unpack(args, 5))
    call('ZADD', p .. 'endpoints', now, id)
    call('ZADD', endpoint_index(p, tenant), now, id)
    return 1
  end
  if not exists then return 0 end
  if action == 'update' then
    local n = tonumber(args[4])
    if n > 0 then call('HDEL', key, unpack(args, 5, 4 + n)) end
    call('HSET', key, 'updated_at', now)
    if #args >= 5 + n then call('HSET', key, unpack(args, 5 + n)) end
  elseif action == 'rotate' then
    local until_ms = now + tonumber(args[5])
    call('HSET', key, 'previous_secret', call('HGET', key, 'secret'), 'previous_until', until_ms, 'secret', args[4],
      'rotated_at', now, 'updated_at', now)
    return { args[4], until_ms }
  elseif action == 'enable' then
    call('HSET', key, 'enabled', '1', 'updated_at', now)
    call('HDEL', key, 'disabled_reason', 'disabled_at', 'failing_since')
  elseif action == 'disable' then
    if call('HGET', key, 'enabled') == '1' then
      call('HSET', key, 'enabled', '0', 'disabled_reason', args[4], 'disabled_at', now, 'updated_at', now)
    end
  elseif action == 'delete' then
    call('ZREM', p .. 'endpoints', id)
    call('ZREM', endpoint_index(p, call('HGET', key, 'tenant') or ''), id)
    call('DEL', key, p .. 'eplog:' .. id, p .. 'epmsgs:' .. id)
  else
    return redis.error_reply('ERR unknown webhook_endpoint action ' .. tostring(action))
  end
  return 1
end

register('emp_webhook_endpoint', webhook_endpoint)
