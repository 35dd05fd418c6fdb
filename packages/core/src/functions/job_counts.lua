-- job_counts: the shard's live jobs per service and state, counted from the
-- indexes that hold them: the class queues (queued), the jobs of workers with a
-- lease (starting, running) and `deferred` (delayed, retrying). Its cost grows
-- with the number of waiting classes and held jobs, never with queue depth or
-- with finished jobs, so a metrics scrape may call it.
-- The queued jobs are counted a page of classes per call (ARGV[1], the rank to
-- start at), the rest with the first page, so no call walks every class.
-- KEYS[1] shard anchor
-- ARGV [1] rank of the first class to count ('' or 0: the first call)
-- Returns { { { service, queued (delayed ones included), delayed, starting, running, retrying }... },
--           rank of the next page ('' when done) }.
local CLASS_COUNT_PAGE = 100
local COUNT_INDEX = { queued = 2, delayed = 3, starting = 4, running = 5, retrying = 6 }

local function job_counts(keys, args)
  local p = prefix_of(keys[1])
  local rows, order = {}, {}
  local function add(service, state, n)
    local row = rows[service]
    if row == nil then
      row = { service, 0, 0, 0, 0, 0 }
      rows[service] = row
      order[#order + 1] = service
    end
    row[COUNT_INDEX[state]] = row[COUNT_INDEX[state]] + n
  end
  local start = tonumber(args[1]) or 0
  local page = call('ZRANGE', p .. 'classes', start, start + CLASS_COUNT_PAGE - 1)
  for _, class in ipairs(page) do
    add(load_class(p, class).service, 'queued', call('ZCARD', queue_key(p, class)))
  end
  local next_page = #page == CLASS_COUNT_PAGE and tostring(start + CLASS_COUNT_PAGE) or ''
  if start > 0 then
    local out = {}
    for i, service in ipairs(order) do out[i] = rows[service] end
    return { out, next_page }
  end
  -- every worker holding a job has a lease; a job counts only while it is its worker's
  for _, worker in ipairs(call('ZRANGE', p .. 'leases', 0, -1)) do
    for _, id in ipairs(call('SMEMBERS', p .. 'wjobs:' .. worker)) do
      local f = call('HMGET', job_key(p, id), 'state', 'worker', 'service')
      if ACTIVE[f[1]] and f[2] == worker then add(f[3], f[1], 1) end
    end
  end
  local deferred = call('HGETALL', p .. 'deferred')
  for i = 1, #deferred, 2 do
    local sep = string.find(deferred[i], ':', 1, true)
    local kind, service = string.sub(deferred[i], 1, sep - 1), string.sub(deferred[i], sep + 1)
    local n = tonumber(deferred[i + 1])
    if n ~= 0 then
      add(service, kind, n)
      if kind == 'delayed' then add(service, 'queued', n) end
    end
  end
  local out = {}
  for i, service in ipairs(order) do out[i] = rows[service] end
  return { out, next_page }
end

register('emp_job_counts', job_counts, true)
