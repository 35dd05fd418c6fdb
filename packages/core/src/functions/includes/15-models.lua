-- Model affinity: which models each worker holds, so that a claim prefers the
-- jobs whose models the worker has warm (see docs/broker.md, "Model affinity").
-- `wmodels:<worker>`: model -> tier; `holders:<model>`: worker -> tier, so a
-- claim can ask whether another worker holds a model without walking workers.
-- Both are replaced together (emp_worker_models) and dropped together when the
-- worker goes offline or is removed (forget_worker_models).

local TIER_LOADED, TIER_ON_DISK = 3, 2
-- holders of a model a claim or a wake-up looks at, best tier first
local HOLDER_LOOK = 16

local function wmodels_key(p, worker) return p .. 'wmodels:' .. worker end
local function holders_key(p, model) return p .. 'holders:' .. model end

-- Drops everything the worker said it holds (it went offline, or it is gone).
local function forget_worker_models(p, worker)
  local key = wmodels_key(p, worker)
  for _, model in ipairs(call('HKEYS', key)) do call('ZREM', holders_key(p, model), worker) end
  call('DEL', key)
  call('HDEL', worker_key(p, worker), 'models', 'models_at')
end

-- The models a class's jobs need (its requirements' `models`), or nil for none.
local function class_models(p, class)
  local models = load_class(p, class).models
  if type(models) ~= 'table' or models[1] == nil then return nil end
  return models
end

-- Per claim call: the worker's tier of each model asked about so far.
local function affinity_of(p, worker)
  return { p = p, worker = worker, tiers = {}, reported = nil, elsewhere = {} }
end

-- The worker's tier for a class: the lowest of its tiers of the class's models (0: it lacks one).
local function class_tier(a, models)
  if a.reported == nil then a.reported = call('EXISTS', wmodels_key(a.p, a.worker)) == 1 end
  if not a.reported then return 0 end
  local lowest = TIER_LOADED
  for _, model in ipairs(models) do
    local tier = a.tiers[model]
    if tier == nil then
      tier = tonumber(call('HGET', wmodels_key(a.p, a.worker), model)) or 0
      a.tiers[model] = tier
    end
    if tier < lowest then lowest = tier end
    if lowest == 0 then return 0 end
  end
  return lowest
end

-- Whether `holder` holds every one of `models` at least on disk (the first is known to be).
local function holds_all(p, holder, models)
  for i = 2, #models do
    if (tonumber(call('ZSCORE', holders_key(p, models[i]), holder)) or 0) < TIER_ON_DISK then return false end
  end
  return true
end

-- A worker other than `worker`, online and not draining, able to run this job of
-- `class`, that holds all its `models` loaded or on disk: best tier first, one of
-- those waiting in `idle` before a busy one. Returns the holder and whether it is
-- waiting, or nil. Looks at HOLDER_LOOK holders of the first model at most.
local function warm_holder(p, class, models, worker, tenant, workflow)
  local found = nil
  for _, holder in ipairs(call('ZRANGE', holders_key(p, models[1]), '+inf', TIER_ON_DISK, 'BYSCORE', 'REV', 'LIMIT', 0, HOLDER_LOOK)) do
    if holder ~= worker then
      local f = call('HMGET', worker_key(p, holder), 'profile', 'state', 'waiting')
      if (f[2] == 'idle' or f[2] == 'busy') and profile_matches(p, f[1], class)
        and lane_allows(profile_lanes(p, f[1]), tenant, workflow) and holds_all(p, holder, models) then
        if f[3] == '1' then return holder, true end
        if not found then found = holder end
      end
    end
  end
  return found, false
end
