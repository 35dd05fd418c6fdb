-- list_jobs: one page of a shard's jobs, newest first, from the submission index
-- (`jobs`, or `jobs:tenant:<tenant>` for one tenant), filtered by state and
-- service. The walk looks at no more than `budget` entries, so a sparse filter
-- answers with a short page and a cursor instead of scanning the whole index.
-- KEYS[1] shard anchor
-- ARGV [1] tenant ('' every tenant)  [2] newest submitted_at, ms inclusive ('' none)
--   [3] oldest submitted_at, ms inclusive ('' none)  [4] cursor score ('' first page)
--   [5] cursor member: resume after this index entry  [6] states, comma-separated ('' any)
--   [7] services, comma-separated ('' any)  [8] page size  [9] budget (entries looked at)
-- Returns { { id, submitted_at, member, state }..., last looked-at score ('' none), its member,
--   exhausted (1 when the index has nothing further in range) }.
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
  local index = tenant ~= '' and (p .. 'jobs:tenant:' .. tenant) or (p .. 'jobs')
  local newest = args[2] ~= '' and tonumber(args[2]) or nil
  local oldest = args[3] ~= '' and tonumber(args[3]) or nil
  local states, services = set_of(args[6]), set_of(args[7])
  local limit, budget = tonumber(args[8]), tonumber(args[9])

  -- ranks count from the newest entry; a cursor is resumed by its rank, so entries
  -- added since the previous page do not shift it (entries with equal scores included)
  local rank = 0
  if args[4] ~= '' then
    local at = call('ZREVRANK', index, args[5])
    if at then
      rank = at + 1
    else
      -- the cursor's entry is another pool's (or was swept away): resume after everything ordered
      -- before it, the entries with a higher score and those with its score and a greater member
      rank = call('ZCOUNT', index, '(' .. args[4], '+inf')
      for _, member in ipairs(call('ZRANGE', index, args[4], args[4], 'BYSCORE')) do
        if bytes_after(member, args[5]) then rank = rank + 1 end
      end
    end
  end
  if newest then rank = math.max(rank, call('ZCOUNT', index, '(' .. newest, '+inf')) end

  local found, looked = {}, 0
  local last_score, last_member = '', ''
  while true do
    local chunk = call('ZRANGE', index, rank, rank + 99, 'REV', 'WITHSCORES')
    if #chunk == 0 then return { found, last_score, last_member, 1 } end
    for i = 1, #chunk, 2 do
      local member, score = chunk[i], chunk[i + 1]
      if oldest and tonumber(score) < oldest then return { found, last_score, last_member, 1 } end
      rank = rank + 1
      looked = looked + 1
      last_score, last_member = score, member
      local id = member
      local sep = string.find(member, '|', 1, true)
      if sep then id = string.sub(member, 1, sep - 1) end
      local f = call('HMGET', job_key(p, id), 'state', 'service')
      if f[1] and (not states or states[f[1]]) and (not services or services[f[2]]) then
        found[#found + 1] = { id, score, member, f[1] }
        if #found >= limit then return { found, last_score, last_member, 0 } end
      end
      if looked >= budget then return { found, last_score, last_member, 0 } end
    end
  end
end

register('emp_list_jobs', list_jobs, true)
