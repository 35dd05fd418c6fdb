-- class_capacity: how many jobs of each given requirement class the online
-- workers able to run it could run at once (the sum of their concurrency), for
-- estimating when a queued job is taken. Draining and offline workers do not
-- count, and a class of a paused service has none.
-- KEYS[1] shard anchor
-- ARGV [1..] requirement class ids
-- Returns one capacity per class, in order (0 for a class that no longer exists).
local function class_capacity(keys, args)
  local p = prefix_of(keys[1])
  local workers = {}
  for _, id in ipairs(call('ZRANGE', p .. 'workers', 0, -1)) do
    local f = call('HMGET', worker_key(p, id), 'profile', 'state', 'concurrency')
    if f[1] and f[2] ~= 'draining' and f[2] ~= 'offline' then
      workers[#workers + 1] = { profile = f[1], slots = tonumber(f[3]) or 1 }
    end
  end
  local paused = call('HLEN', p .. 'paused') > 0 and hash_to_table(call('HGETALL', p .. 'paused')) or {}
  local out = {}
  for i, class in ipairs(args) do
    local capacity = 0
    if call('EXISTS', class_key(p, class)) == 1 and not paused[load_class(p, class).service] then
      for _, w in ipairs(workers) do
        if profile_matches(p, w.profile, class) then capacity = capacity + w.slots end
      end
    end
    out[i] = capacity
  end
  return out
end

register('emp_class_capacity', class_capacity, true)
