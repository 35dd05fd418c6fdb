-- list_jobs: one page of a shard's jobs, newest first, from the submission index
-- (the stream `joblog`, or `joblog:tenant:<tenant>` for one tenant; see job_log.add
-- in includes/20-queue.lua), filtered by state and service. The walk looks at no
-- more than `budget` entries, so a sparse filter answers with a short page and a
-- cursor instead of scanning the whole index. A shard upgraded from the sorted-set
-- index (before 2026-12-07) still has jobs in `jobs` / `jobs:tenant:<tenant>`
-- until they expire: they come after every stream entry (they are older).
-- KEYS[1] shard anchor
-- ARGV [1] tenant ('' every tenant)  [2] newest submitted_at, ms inclusive ('' none)
--   [3] oldest submitted_at, ms inclusive ('' none)  [4] cursor position: resume after
--   this entry, '<ms>-<n>' a stream entry id, '<ms>' a sorted-set score ('' first page)
--   [5] cursor member: the entry's `j` (member)  [6] states, comma-separated ('' any)
--   [7] services, comma-separated ('' any)  [8] page size  [9] budget (entries looked at)
-- Returns { { id, position, member, state, submitted_at }..., last looked-at position ('' none),
--   its member, exhausted (1 when the index has nothing further in range) }.
-- Positions order entries across shards: stream entries above sorted-set ones, then
-- by ms, then by n, then by member (a cursor may be another shard's entry).
local function set_of(csv)
  if csv == '' then return nil end
  local set = {}
  for item in string.gmatch(csv, '[^,]+') do set[item] = true end
  return set
end

-- a > b in byte order, the order Redis gives equal scores (Lua's own < follows the server's locale)
local function bytes_after(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

local function list_jobs(keys, args)
  local p = prefix_of(keys[1])
  local tenant = args[1]
  local newest = args[2] ~= '' and tonumber(args[2]) or nil
  local oldest = args[3] ~= '' and tonumber(args[3]) or nil
  local cursor, cursor_member = args[4], args[5]
  local states, services = set_of(args[6]), set_of(args[7])
  local limit, budget = tonumber(args[8]), tonumber(args[9])

  local found, looked = {}, 0
  local last, last_member = '', ''
  -- Looks at one entry; true once the page is full or the budget spent.
  local function visit(member, position)
    looked = looked + 1
    last, last_member = position, member
    local id = member
    local sep = string.find(member, '|', 1, true)
    if sep then id = string.sub(member, 1, sep - 1) end
    local f = call('HMGET', job_key(p, id), 'state', 'service', 'submitted_at')
    if f[1] and (not states or states[f[1]]) and (not services or services[f[2]]) then
      found[#found + 1] = { id, position, member, f[1], f[3] }
      if #found >= limit then return true end
    end
    return looked >= budget
  end

  -- the streams, unless the cursor is already in the sorted sets below them
  local cursor_ms = tonumber(string.match(cursor, '^%d+'))
  if cursor == '' or string.find(cursor, '-', 1, true) then
    local log = tenant ~= '' and job_log.tenant_key(p, tenant) or job_log.key(p)
    local from, to = '+', oldest and tostring(oldest) or '-'
    if cursor ~= '' then
      from = '(' .. cursor
      -- an entry of this shard with the cursor's id (which may be another shard's) comes
      -- next if its member is before the cursor's
      local same = call('XRANGE', log, cursor, cursor)[1]
      if same and bytes_after(cursor_member, same[2][2]) and (not newest or cursor_ms <= newest)
        and (not oldest or cursor_ms >= oldest) and visit(same[2][2], same[1]) then
        return { found, last, last_member, 0 }
      end
    end
    if newest and (cursor == '' or newest < cursor_ms) then from = tostring(newest) end
    while true do
      local chunk = call('XREVRANGE', log, from, to, 'COUNT', 100)
      for i = 1, #chunk do
        if visit(chunk[i][2][2], chunk[i][1]) then return { found, last, last_member, 0 } end
      end
      if #chunk < 100 then break end
      from = '(' .. chunk[#chunk][1]
    end
    cursor = ''
  end

  local index = tenant ~= '' and (p .. 'jobs:tenant:' .. tenant) or (p .. 'jobs')
  if call('EXISTS', index) == 0 then return { found, last, last_member, 1 } end
  -- ranks count from the newest entry; a cursor is resumed by its rank, so entries
  -- added since the previous page do not shift it (entries with equal scores included)
  local rank = 0
  if cursor ~= '' then
    local at = call('ZREVRANK', index, cursor_member)
    if at then
      rank = at + 1
    else
      -- the cursor's entry is another pool's (or was swept away): resume after everything ordered
      -- before it, the entries with a higher score and those with its score and a greater member
      rank = call('ZCOUNT', index, '(' .. cursor, '+inf')
      for _, member in ipairs(call('ZRANGE', index, cursor, cursor, 'BYSCORE')) do
        if bytes_after(member, cursor_member) then rank = rank + 1 end
      end
    end
  end
  if newest then rank = math.max(rank, call('ZCOUNT', index, '(' .. newest, '+inf')) end

  while true do
    local chunk = call('ZRANGE', index, rank, rank + 99, 'REV', 'WITHSCORES')
    if #chunk == 0 then return { found, last, last_member, 1 } end
    for i = 1, #chunk, 2 do
      local member, score = chunk[i], chunk[i + 1]
      if oldest and tonumber(score) < oldest then return { found, last, last_member, 1 } end
      rank = rank + 1
      if visit(member, score) then return { found, last, last_member, 0 } end
    end
  end
end

register('emp_list_jobs', list_jobs, true)
