-- webhook_recover: send again every failed message of an endpoint created since a time (Svix's
-- "recover"): each as a new first attempt at the end of its chain, same id and body.
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now ('' = server time)  [2] endpoint id  [3] since (ms)  [4] most messages looked at
-- Returns { messages queued again, failed messages left (over the limit) }.
local function webhook_recover(keys, args)
  local p = prefix_of(keys[1])
  local now = clock(args[1])
  local endpoint, since, limit = args[2], args[3], tonumber(args[4])
  local index = p .. 'epmsgs:' .. endpoint
  local queued, left = 0, 0
  for _, id in ipairs(call('ZRANGEBYSCORE', index, since, '+inf')) do
    local state = call('HGET', p .. 'msg:' .. id, 'state')
    if not state then
      call('ZREM', index, id)
    elseif state == 'failed' then
      if queued >= limit then
        left = left + 1
      elseif requeue_message(p, id, now) == 1 then
        queued = queued + 1
      end
    end
  end
  return { queued, left }
end

register('emp_webhook_recover', webhook_recover)
