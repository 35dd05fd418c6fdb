-- Model affinity: which models each worker holds, so that a claim prefers the
-- jobs whose models the worker has warm (see docs/broker.md, "Model affinity").
-- `wmodels:<worker>`: model -> tier; `holders:<model>`: worker -> tier, so a
-- claim can ask whether another worker holds a model without walking workers.
-- Both are replaced together (emp_worker_models) and dropped together when the
-- worker goes offline or is removed (affinity.forget_worker).
-- One table, so that the helpers use up one of the library's shared locals.
local affinity = {
  TIER_LOADED = 3,
  TIER_ON_DISK = 2,
  -- what a job.starting event says of the worker's tier of the job's models
  NAMES = { [0] = 'cold', [1] = 'cold', [2] = 'disk', [3] = 'warm' },
  -- candidate ranks of a claim: a job whose class names no models ranks as warm
  -- (nothing to load); one that waited past the affinity bound outranks every tier
  RANK_WARM = 3,
  RANK_OVERDUE = 4,
}

do
  -- holders of a model a claim or a wake-up looks at, best tier first
  local HOLDER_LOOK = 16

  function affinity.wmodels_key(p, worker) return p .. 'wmodels:' .. worker end
  function affinity.holders_key(p, model) return p .. 'holders:' .. model end
  local wmodels_key, holders_key = affinity.wmodels_key, affinity.holders_key

  -- Drops everything the worker said it holds (it went offline, or it is gone).
  function affinity.forget_worker(p, worker)
    local key = wmodels_key(p, worker)
    for _, model in ipairs(call('HKEYS', key)) do call('ZREM', holders_key(p, model), worker) end
    call('DEL', key)
    call('HDEL', worker_key(p, worker), 'models', 'models_at')
  end

  -- The affinity bounds a claiming call passes (see claim.lua): 'wait/overdue' in ms, or one
  -- number for both. Kept as text: only a claim of a job whose class names models reads
  -- them (affinity.limits).
  function affinity.bounds(ctx, arg)
    ctx.affinity_bounds = arg
  end

  -- The call's affinity bounds in ms (see affinity.bounds; none: 0 and 0): wait, overdue.
  function affinity.limits(ctx)
    local wait = ctx.affinity_wait_ms
    if wait ~= nil then return wait, ctx.affinity_overdue_ms end
    local arg = ctx.affinity_bounds
    local overdue
    wait, overdue = string.match(arg or '', '^(%d+)/(%d+)$')
    if wait then
      wait, overdue = tonumber(wait), tonumber(overdue)
    else
      wait = tonumber(arg) or 0
      overdue = wait
    end
    ctx.affinity_wait_ms, ctx.affinity_overdue_ms = wait, overdue
    return wait, overdue
  end

  -- The models a class's jobs need (its requirements' `models`), or nil for none. Every
  -- candidate of a claim asks: the answer is kept with the class's cached definition.
  function affinity.class_models(p, class)
    local c = cached_class(p, class)
    local models = c.models
    if models == nil then
      models = load_class(p, class).models
      if type(models) ~= 'table' or models[1] == nil then models = false end
      c.models = models
    end
    return models or nil
  end

  -- Per claim call: the worker's tiers (read once, when the walk first meets a
  -- class with models) and which jobs have a holder elsewhere (see warm_holder;
  -- made when a claim first asks).
  function affinity.of(p, worker)
    return { p = p, worker = worker, tiers = nil, reported = false, elsewhere = nil }
  end

  -- The worker's tier for a class: the lowest of its tiers of the class's models (0: it lacks one).
  function affinity.class_tier(a, models)
    if a.tiers == nil then
      local flat = call('HGETALL', wmodels_key(a.p, a.worker))
      a.tiers, a.reported = {}, flat[1] ~= nil
      for i = 1, #flat, 2 do a.tiers[flat[i]] = tonumber(flat[i + 1]) end
    end
    local lowest = affinity.TIER_LOADED
    for _, model in ipairs(models) do
      local tier = a.tiers[model] or 0
      if tier < lowest then lowest = tier end
    end
    return lowest
  end

  -- The rank of a class's jobs for the worker before age counts (see RANK_WARM):
  -- its tier, or warm for a class naming no models and for a worker reporting none
  -- (which so keeps plain head order).
  function affinity.class_rank(a, class)
    local models = affinity.class_models(a.p, class)
    if not models then return affinity.RANK_WARM end
    local tier = affinity.class_tier(a, models)
    return a.reported and tier or affinity.RANK_WARM
  end

  -- Whether `holder` holds every one of `models` at least on disk (the first is known to be).
  local function holds_all(p, holder, models)
    for i = 2, #models do
      if (tonumber(call('ZSCORE', holders_key(p, models[i]), holder)) or 0) < affinity.TIER_ON_DISK then return false end
    end
    return true
  end

  -- A worker other than `worker`, online and not draining, able to run a job of
  -- `class`, `tenant` and `workflow`, that holds all its `models` loaded or on disk,
  -- best tier first and one waiting in `idle` before a busy one. Returns the holder
  -- and whether it is waiting, or nil. Looks at HOLDER_LOOK holders of the first model at most.
  function affinity.warm_holder(p, class, models, worker, tenant, workflow)
    local found = nil
    local holders = call('ZRANGE', holders_key(p, models[1]), '+inf', affinity.TIER_ON_DISK, 'BYSCORE', 'REV', 'LIMIT', 0, HOLDER_LOOK)
    for _, holder in ipairs(holders) do
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

  -- Whether a claim candidate (its priority, rank and score) is served before another
  -- (`b_priority` nil: there is none): higher priority, then better rank, then older (lower score).
  function affinity.better(priority, rank, score, b_priority, b_rank, b_score)
    if b_priority == nil then return true end
    if priority ~= b_priority then return priority > b_priority end
    if rank ~= b_rank then return rank > b_rank end
    return score < b_score
  end
end
