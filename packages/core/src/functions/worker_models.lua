-- worker_models: a worker says which models it holds, replacing what it said
-- before: loaded in memory (tier 3), on local disk (2), downloading (1). Claims
-- prefer the jobs whose models the worker holds (see includes/15-models.lua).
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] worker id  [8] the report as listed (JSON {loaded, on_disk, downloading})
--   [9..] model, tier pairs (each model once; the TypeScript side validates and bounds them)
-- Returns the number of models recorded. Errors: UNKNOWN_WORKER.
local function worker_models(keys, args)
  local ctx = context(keys, args)
  local p, worker = ctx.p, args[7]
  local wkey = worker_key(p, worker)
  if call('EXISTS', wkey) == 0 then
    raise('UNKNOWN_WORKER', 'worker ' .. worker .. ' is not registered in this shard')
  end
  local key = affinity.wmodels_key(p, worker)
  local reported = {}
  for i = 9, #args, 2 do reported[args[i]] = true end
  for _, model in ipairs(call('HKEYS', key)) do
    if not reported[model] then call('ZREM', affinity.holders_key(p, model), worker) end
  end
  call('DEL', key)
  local n = 0
  for i = 9, #args, 2 do
    call('HSET', key, args[i], args[i + 1])
    call('ZADD', affinity.holders_key(p, args[i]), args[i + 1], worker)
    n = n + 1
  end
  call('HSET', wkey, 'models', args[8], 'models_at', ctx.ts)
  return n
end

register('emp_worker_models', worker_models)
