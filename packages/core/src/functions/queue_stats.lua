-- queue_stats: depth per requirement class with its head job, plus shard totals.
-- Classes queued or recently used (the class list; see sweep_class_list), so the
-- walk is bounded by the limit of queued classes plus those emptied since the last sweep.
-- KEYS[1] shard anchor
-- ARGV (none)
-- Returns { { class, definition, routable, depth, head job id, head submitted_at }..., totals }
-- where totals = { waiting on timers (delayed, retrying, leased), idle workers, online workers, offline workers }.
local function queue_stats(keys, args)
  local p = prefix_of(keys[1])
  local classes = {}
  -- the listed classes, and any queued one that is not listed (requeued after its class was swept from the list)
  local seen, walk = {}, call('SMEMBERS', p .. 'classlist')
  for _, class in ipairs(walk) do seen[class] = true end
  for _, class in ipairs(call('ZRANGE', p .. 'classes', 0, -1)) do
    if not seen[class] then walk[#walk + 1] = class end
  end
  for _, class in ipairs(walk) do
    local info = call('HMGET', class_key(p, class), 'def', 'routable')
    local depth = call('ZCARD', queue_key(p, class))
    local head = call('ZRANGE', queue_key(p, class), 0, 0)[1]
    local submitted = head and call('HGET', job_key(p, head), 'submitted_at') or ''
    classes[#classes + 1] = { class, info[1] or '{}', info[2] or '1', depth, head or '', submitted }
  end
  local totals = { call('ZCARD', p .. 'timers'), call('HLEN', p .. 'idle'),
    call('ZCARD', p .. 'workers'), call('ZCARD', p .. 'workers:offline') }
  return { classes, totals }
end

register('emp_queue_stats', queue_stats, true)
