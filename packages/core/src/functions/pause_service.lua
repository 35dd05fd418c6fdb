-- pause_service: stop (or resume) claims of one service's jobs in this shard.
-- Paused jobs stay queued in their place and submits are still accepted; claims
-- skip the service's classes and submits wake nobody for them. Resuming wakes
-- every idle worker, so that those able to run the service's jobs take them.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] service  [8] '1' pause, '0' resume  [9] who asked ('' unknown)  [10] reason
-- Returns 1 when this changed the service's state, else 0.
local function pause_service(keys, args)
  local ctx = context(keys, args)
  local p, service = ctx.p, args[7]
  local paused_key = p .. 'paused'
  if args[8] == '1' then
    if call('HEXISTS', paused_key, service) == 1 then return 0 end
    call('HSET', paused_key, service, cjson.encode({ since = ctx.now, by = args[9], reason = args[10] }))
    events_append(p, ctx.maxlen, 'type', 'service.paused', 'service', service, 'by', args[9], 'reason', args[10],
      'ts', ctx.now)
    return 1
  end
  if call('HDEL', paused_key, service) == 0 then return 0 end
  -- every idle worker claims again (a walk over the classes here would grow with them)
  local idle = call('HKEYS', p .. 'idle')
  for _, worker in ipairs(idle) do wake(p, worker, '') end
  events_append(p, ctx.maxlen, 'type', 'service.resumed', 'service', service, 'by', args[9], 'ts', ctx.now)
  return 1
end

register('emp_pause_service', pause_service)
