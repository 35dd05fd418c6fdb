-- webhook_secret: a tenant's webhook signing secret, created on first use; `rotate` replaces it
-- with `fresh` and keeps the one it replaces valid (signatures are sent with both) until
-- now + grace ms.
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now ('' = server time)  [2] tenant  [3] fresh secret (used when there is none, or on rotate)
--   [4] '1' rotate  [5] grace ms
-- Returns { current, previous or '', previous valid until (ms) or '' }.
local function webhook_secret(keys, args)
  local p = prefix_of(keys[1])
  local now = clock(args[1])
  local key = p .. 'secret:' .. args[2]
  local f = call('HMGET', key, 'current', 'previous', 'previous_until')
  if not f[1] then
    call('HSET', key, 'current', args[3], 'created_at', now)
    return { args[3], '', '' }
  end
  if args[4] == '1' then
    local until_ms = now + tonumber(args[5])
    call('HSET', key, 'current', args[3], 'previous', f[1], 'previous_until', until_ms, 'rotated_at', now)
    return { args[3], f[1], tostring(until_ms) }
  end
  if f[3] and tonumber(f[3]) <= now then
    call('HDEL', key, 'previous', 'previous_until')
    return { f[1], '', '' }
  end
  return { f[1], f[2] or '', f[3] or '' }
end

register('emp_webhook_secret', webhook_secret)
