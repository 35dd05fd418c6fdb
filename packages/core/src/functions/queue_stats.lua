-- queue_stats: depth per requirement class with its head job, plus shard totals,
-- a page of the class list per call (classes in use: every queued class and the
-- ones emptied since the last sweep; see tick.lua), so no call walks
-- every class. SSCAN may return a class twice across pages: the caller dedupes.
-- KEYS[1] shard anchor
-- ARGV [1] SSCAN cursor of the class list ('0' or absent: the first call, which also returns the totals)
-- Returns { { { class, definition, routable, depth, head job id, head submitted_at }... }, totals, cursor ('0': done) }
-- where totals = { waiting on timers (delayed, retrying, leased), idle workers, online workers, offline workers }
-- ({} on later pages).
local function queue_stats(keys, args)
  local p = prefix_of(keys[1])
  local cursor = args[1] or '0'
  local scan = call('SSCAN', p .. 'classlist', cursor, 'COUNT', CLASS_SCAN_PAGE)
  local classes = {}
  for _, class in ipairs(scan[2]) do
    local info = call('HMGET', class_key(p, class), 'def', 'routable')
    local depth = call('ZCARD', queue_key(p, class))
    local head = call('ZRANGE', queue_key(p, class), 0, 0)[1]
    local submitted = head and call('HGET', job_key(p, head), 'submitted_at') or ''
    classes[#classes + 1] = { class, info[1] or '{}', info[2] or '1', depth, head or '', submitted }
  end
  local totals = {}
  if cursor == '0' then
    totals = { call('ZCARD', p .. 'timers'), call('HLEN', p .. 'idle'),
      call('ZCARD', p .. 'workers'), call('ZCARD', p .. 'workers:offline') }
  end
  return { classes, totals, scan[1] }
end

register('emp_queue_stats', queue_stats, true)
