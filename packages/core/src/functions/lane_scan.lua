-- lane_scan: puts the jobs already queued into their classes' lanes when a
-- shard turns lanes on (the first worker restricted to tenants or a workflow
-- registered: see laned_key), a bounded page per call, in three steps:
--   'classes': marks a page of the class list (SSCAN from ARGV[8]) as keeping
--     lanes, so that their new jobs go into them; returns { next cursor ('0': done), classes }
--   'jobs': puts the queued jobs of class ARGV[8] scored after ARGV[9] ('' from
--     the start) into its lanes, up to LANE_SCAN_PAGE; returns { score to go on after ('' done) }
--   'done': records that the shard's lanes are complete; returns {}
-- Jobs that arrive meanwhile go into lanes on their own (the shard's flag is set
-- before the scan starts), and every step may run twice (several workers may
-- register at once): each is idempotent.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] step  [8] cursor or class  [9] score cursor
-- Returns what each step above says. Errors: BAD_STATE (an unknown step).
local LANE_SCAN_PAGE = 100

local function lane_scan(keys, args)
  local ctx = context(keys, args)
  local p, step = ctx.p, args[7]
  if step == 'classes' then
    local scan = call('SSCAN', p .. 'classlist', args[8], 'COUNT', CLASS_SCAN_PAGE)
    for _, class in ipairs(scan[2]) do call('HSET', class_key(p, class), 'laned', '1') end
    return { scan[1], scan[2] }
  elseif step == 'jobs' then
    local class = args[8]
    local after = args[9] ~= '' and '(' .. args[9] or '-inf'
    local page = call('ZRANGE', queue_key(p, class), after, '+inf', 'BYSCORE', 'LIMIT', '0', LANE_SCAN_PAGE, 'WITHSCORES')
    for i = 1, #page, 2 do
      local id, score = page[i], page[i + 1]
      local key = job_key(p, id)
      local f = call('HMGET', key, 'tenant', 'opt')
      if not opt_laned(f[2]) then
        local workflow = job_workflow(p, id, f[2])
        add_to_lanes(p, id, class, score, f[1], workflow)
        call('HSET', key, 'opt', opt_with_lanes(f[2]))
      end
    end
    if #page < 2 * LANE_SCAN_PAGE then return { '' } end
    return { page[#page] }
  elseif step == 'done' then
    call('SET', laned_key(p), 'done')
    return {}
  end
  raise('BAD_STATE', 'lane_scan: unknown step ' .. tostring(step))
end

register('emp_lane_scan', lane_scan)
