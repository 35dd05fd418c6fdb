-- list_jobs: one page of a shard's jobs, newest first, from the submission index
-- (see job_log in includes/20-queue.lua): the stream `joblog` and the sorted set
-- `jobs` (the jobs kept long, and a shard's jobs from before 2026-12-07), or for
-- one tenant `joblog:tenant:<tenant>` and `jobs:tenant:<tenant>`, merged; filtered
-- by state and service. The walk looks at no more than `budget` entries, so a
-- sparse filter answers with a short page and a cursor instead of scanning the
-- whole index.
-- KEYS[1] shard anchor
-- ARGV [1] tenant ('' every tenant)  [2] newest submitted_at, ms inclusive ('' none)
--   [3] oldest submitted_at, ms inclusive ('' none)  [4] cursor position: resume after
--   this entry, '<ms>-<n>' a stream entry's id, '<ms>' a sorted set's score ('' first page)
--   [5] cursor member: the entry's `j` (member)  [6] states, comma-separated ('' any)
--   [7] services, comma-separated ('' any)  [8] page size  [9] budget (entries looked at)
-- Returns { { id, position, member, state, submitted_at }..., last looked-at position ('' none),
--   its member, exhausted (1 when the index has nothing further in range) }.
-- Entries order by (ms, n, member), a sorted set's with n = 0: an order every shard
-- shares, so a cursor may be another shard's entry.
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

-- Whether entry a = { ms, n, member } comes after (is newer than) b.
local function newer(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  if a[2] ~= b[2] then return a[2] > b[2] end
  return bytes_after(a[3], b[3])
end

-- The stream's entries below the cursor { ms, n, member } (nil: from the newest) within
-- [oldest, newest], newest first, 100 at a time: a function answering the next
-- entry { ms, n, member, position } or nil.
local function stream_walk(log, cursor, newest, oldest)
  local from, to = '+', oldest and tostring(oldest) or '-'
  local pending = {}
  if cursor then
    local id = cursor[1] .. '-' .. cursor[2]
    from = '(' .. id
    -- an entry with the cursor's id (which may be another shard's) comes first if its member is before the cursor's
    local same = call('XRANGE', log, id, id)[1]
    if same and bytes_after(cursor[3], same[2][2]) and (not newest or cursor[1] <= newest)
      and (not oldest or cursor[1] >= oldest) then
      pending[1] = same
    end
  end
  if newest and (not cursor or newest < cursor[1]) then from = tostring(newest) end
  local i, done = 1, false
  return function()
    if i > #pending then
      if done then return nil end
      pending = call('XREVRANGE', log, from, to, 'COUNT', 100)
      i = 1
      if #pending < 100 then done = true end
      if #pending == 0 then return nil end
      from = '(' .. pending[#pending][1]
    end
    local entry = pending[i]
    i = i + 1
    local ms, n = string.match(entry[1], '^(%d+)-(%d+)$')
    return { tonumber(ms), tonumber(n), entry[2][2], entry[1] }
  end
end

-- The sorted set's entries the same way, by rank (ranks count from the newest, so
-- entries added since the cursor's page do not shift it).
local function sorted_walk(index, cursor, newest, oldest)
  if call('EXISTS', index) == 0 then return function() return nil end end
  local rank = 0
  if cursor then
    local at = cursor[2] == 0 and call('ZREVRANK', index, cursor[3])
    if at then
      rank = at + 1
    else
      -- everything at or above the cursor: higher scores, and at its score (n = 0 there)
      -- unless the cursor has n > 0, the members from its own on
      rank = call('ZCOUNT', index, '(' .. cursor[1], '+inf')
      if cursor[2] == 0 then
        for _, member in ipairs(call('ZRANGE', index, cursor[1], cursor[1], 'BYSCORE')) do
          if not bytes_after(cursor[3], member) then rank = rank + 1 end
        end
      end
    end
  end
  if newest then rank = math.max(rank, call('ZCOUNT', index, '(' .. newest, '+inf')) end
  local pending, i, done = {}, 1, false
  return function()
    if i > #pending then
      if done then return nil end
      pending = call('ZRANGE', index, rank, rank + 99, 'REV', 'WITHSCORES')
      rank = rank + #pending / 2
      i = 1
      if #pending < 200 then done = true end
      if #pending == 0 then return nil end
    end
    local member, score = pending[i], pending[i + 1]
    i = i + 2
    if oldest and tonumber(score) < oldest then
      done, pending = true, {}
      return nil
    end
    return { tonumber(score), 0, member, score }
  end
end

local function list_jobs(keys, args)
  local p = prefix_of(keys[1])
  local tenant = args[1]
  local newest = args[2] ~= '' and tonumber(args[2]) or nil
  local oldest = args[3] ~= '' and tonumber(args[3]) or nil
  local cursor = nil
  if args[4] ~= '' then
    local ms, n = string.match(args[4], '^(%d+)-?(%d*)$')
    cursor = { tonumber(ms), tonumber(n) or 0, args[5] }
  end
  local states, services = set_of(args[6]), set_of(args[7])
  local limit, budget = tonumber(args[8]), tonumber(args[9])
  local log = tenant ~= '' and job_log.tenant_key(p, tenant) or job_log.key(p)
  local index = tenant ~= '' and (p .. 'jobs:tenant:' .. tenant) or (p .. 'jobs')
  local next_stream, next_sorted = stream_walk(log, cursor, newest, oldest), sorted_walk(index, cursor, newest, oldest)

  local found, looked = {}, 0
  local last, last_member = '', ''
  local a, b = next_stream(), next_sorted()
  while a or b do
    local entry
    if a and (not b or newer(a, b)) then
      entry, a = a, next_stream()
    else
      entry, b = b, next_sorted()
    end
    looked = looked + 1
    local member = entry[3]
    last, last_member = entry[4], member
    local id = member
    local sep = string.find(member, '|', 1, true)
    if sep then id = string.sub(member, 1, sep - 1) end
    local f = call('HMGET', job_key(p, id), 'state', 'service', 'submitted_at')
    if f[1] and (not states or states[f[1]]) and (not services or services[f[2]]) then
      found[#found + 1] = { id, entry[4], member, f[1], f[3] }
      if #found >= limit then return { found, last, last_member, 0 } end
    end
    if looked >= budget then return { found, last, last_member, 0 } end
  end
  return { found, last, last_member, 1 }
end

register('emp_list_jobs', list_jobs, true)
