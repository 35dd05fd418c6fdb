-- planner_decision: the planner records one round for a pool: each prefetch / evict / load
-- decision becomes a planner.decision event in the pool's stream, and the pool's
-- planner hash keeps the round's state (what `emp planner`, GET /v1/planner and the
-- capacity metric read): when it ran, the forecast, the capacity hint, the wait
-- target, and the last 50 decisions.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] forecast (JSON, per model)  [8] capacity hint (JSON)  [9] wait target ms
--   [10] how many decisions follow, then per decision: machine, action ('prefetch' | 'evict' | 'load'), model,
--   reason, forecast (jobs per bucket)
-- Returns how many decisions were recorded. Errors: BAD_STATE (an action that is not prefetch, evict or load).
local KEEP_DECISIONS = 50

local function planner_decision(keys, args)
  local ctx = context(keys, args)
  local p = ctx.p
  local key = p .. 'planner'
  local count = tonumber(args[10]) or 0
  local kept = {}
  local stored = call('HGET', key, 'decisions')
  if stored then
    local ok, decoded = pcall(cjson.decode, stored)
    if ok and type(decoded) == 'table' then kept = decoded end
  end
  -- checked before anything is written: a script's writes are not undone by an error after them
  for i = 0, count - 1 do
    local action = args[12 + i * 5]
    if action ~= 'prefetch' and action ~= 'evict' and action ~= 'load' then
      raise('BAD_STATE', 'a planner decision is prefetch, evict or load, not ' .. tostring(action))
    end
  end
  for i = 0, count - 1 do
    local base = 11 + i * 5
    local machine, action, model, reason, forecast = args[base], args[base + 1], args[base + 2], args[base + 3], args[base + 4]
    events_append(p, ctx.maxlen, 'type', 'planner.decision', 'machine', machine, 'action', action, 'model', model,
      'reason', reason, 'forecast', forecast, 'ts', ctx.now)
    kept[#kept + 1] = { ts = ctx.now, machine = machine, action = action, model = model, reason = reason,
      forecast = tonumber(forecast) or 0 }
  end
  while #kept > KEEP_DECISIONS do table.remove(kept, 1) end
  call('HSET', key, 'run_at', ctx.now, 'forecast', args[7], 'capacity', args[8], 'wait_target_ms', args[9])
  if #kept > 0 then call('HSET', key, 'decisions', cjson.encode(kept)) end
  return count
end

register('emp_planner_decision', planner_decision)
