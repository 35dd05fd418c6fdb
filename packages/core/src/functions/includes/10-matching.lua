-- Matching of a requirement class against a worker capability profile.
-- Both are immutable once written (their ids are content hashes), so a verdict
-- can be cached for the life of the loaded library.

-- The caches are generational: lookups try the current generation, then the
-- previous one (moving a hit forward); when the current one is full it becomes
-- the previous one. What a claim uses again stays, however many classes pass
-- through, so no walk ever empties the cache (a single bound shared by every
-- entry once made each walk past it clear and re-decode everything).
local CACHE_GENERATION = 50000

local function generational()
  return { now = {}, old = {}, n = 0 }
end

local function cache_get(c, k)
  local v = c.now[k]
  if v ~= nil then return v end
  v = c.old[k]
  if v ~= nil then
    c.now[k] = v
    c.n = c.n + 1
  end
  return v
end

local function cache_put(c, k, v)
  if c.n >= CACHE_GENERATION then
    c.old, c.now, c.n = c.now, {}, 0
  end
  c.now[k] = v
  c.n = c.n + 1
end

-- profile -> capabilities; class -> { raw = definition, req = decoded, models = its models or
-- false (affinity.class_models) };
-- verdicts[profile]: class -> verdict (two lookups, where one by profile .. class made a string every claim)
local profiles_cache = generational()
local classes_cache = generational()
local verdicts = generational()

local function is_array(t)
  if type(t) ~= 'table' then return false end
  if next(t) == nil then return true end
  return t[1] ~= nil
end

local function contains(list, value)
  if type(list) ~= 'table' then return list == value end
  for _, v in ipairs(list) do
    if v == value then return true end
  end
  return false
end

-- Positive constraint: array -> worker has all; number -> worker has at least;
-- object -> every key matches recursively; string/bool -> equal.
local function has(required, actual)
  if actual == nil or actual == cjson.null then return false end
  if is_array(required) then
    for _, v in ipairs(required) do
      if not contains(actual, v) then return false end
    end
    return true
  end
  if type(required) == 'table' then
    if type(actual) ~= 'table' then return false end
    for k, v in pairs(required) do
      if not has(v, actual[k]) then return false end
    end
    return true
  end
  if type(required) == 'number' then
    return type(actual) == 'number' and actual >= required
  end
  if type(actual) == 'table' then return contains(actual, required) end
  return actual == required
end

-- Negative constraint: array -> worker has none of them; object -> every key is
-- excluded recursively; anything else -> the positive test fails.
local function lacks(excluded, actual)
  if actual == nil or actual == cjson.null then return true end
  if is_array(excluded) then
    for _, v in ipairs(excluded) do
      if contains(actual, v) then return false end
    end
    return true
  end
  if type(excluded) == 'table' then
    if type(actual) ~= 'table' then return true end
    for k, v in pairs(excluded) do
      if not lacks(v, actual[k]) then return false end
    end
    return true
  end
  return not has(excluded, actual)
end

local function satisfies(caps, req)
  if not contains(caps.services, req.service) then return false end
  if req.hardware then
    local hw = caps.hardware or {}
    for k, v in pairs(req.hardware) do
      local have = hw[k]
      if type(have) ~= 'number' or have < v then return false end
    end
  end
  if req.models then
    local served = caps.models and caps.models[req.service]
    if served ~= '*' then
      for _, m in ipairs(req.models) do
        if not contains(served or {}, m) then return false end
      end
    end
  end
  if req.custom_nodes then
    for _, n in ipairs(req.custom_nodes) do
      if not contains(caps.custom_nodes or {}, n) then return false end
    end
  end
  -- A class names its tenant only under strict isolation (and, until emp_migrate has
  -- moved their jobs, in classes of schema version 1, which also name their workflow);
  -- otherwise tenant and workflow restrictions are checked per job, through the lanes (see 20-queue).
  local tenants = caps.tenants
  if req.tenant ~= nil and tenants then
    if tenants.denied and contains(tenants.denied, req.tenant) then return false end
    if tenants.allowed and not contains(tenants.allowed, req.tenant) then return false end
  end
  if req.isolation == 'strict' then
    -- strict isolation: only a worker dedicated to this one tenant
    if not (tenants and tenants.allowed and #tenants.allowed == 1 and tenants.allowed[1] == req.tenant) then
      return false
    end
  end
  if req.workflow_id ~= nil and caps.workflow_id and caps.workflow_id ~= req.workflow_id then return false end
  if req.constraints and not has(req.constraints, caps.labels or {}) then return false end
  if req.exclude and not lacks(req.exclude, caps.labels or {}) then return false end
  return true
end

-- (The lookups below try the current generation first themselves: a claim makes
-- several, and nearly every one is a hit there, which needs no call of cache_get.)
local function load_profile(p, profile)
  local caps = profiles_cache.now[profile]
  if caps == nil then caps = cache_get(profiles_cache, profile) end
  if caps == nil then
    local raw = call('GET', profile_key(p, profile))
    if not raw then raise('CORRUPT', 'capability profile ' .. profile .. ' is missing') end
    caps = cjson.decode(raw)
    cache_put(profiles_cache, profile, caps)
  end
  return caps
end

local function cached_class(p, class)
  local c = classes_cache.now[class]
  if c == nil then c = cache_get(classes_cache, class) end
  if c == nil then
    local raw = call('HGET', class_key(p, class), 'def')
    if not raw then raise('CORRUPT', 'requirement class ' .. class .. ' is missing') end
    c = { raw = raw, req = nil, models = nil }
    cache_put(classes_cache, class, c)
  end
  return c
end

local function load_class(p, class)
  local c = cached_class(p, class)
  if c.req == nil then c.req = cjson.decode(c.raw) end
  return c.req
end

local function profile_matches(p, profile, class)
  local of_profile = verdicts.now[profile]
  if of_profile == nil then of_profile = cache_get(verdicts, profile) end
  if of_profile == nil then
    of_profile = generational()
    cache_put(verdicts, profile, of_profile)
  end
  local verdict = of_profile.now[class]
  if verdict == nil then verdict = cache_get(of_profile, class) end
  if verdict == nil then
    verdict = satisfies(load_profile(p, profile), load_class(p, class))
    cache_put(of_profile, class, verdict)
  end
  return verdict
end

-- What restricts a profile to some of a class's jobs (tenants allowed or denied, a
-- reserved workflow), or false when it runs every job of the classes it matches.
local function profile_lanes(p, profile)
  local caps = load_profile(p, profile)
  local r = caps.lanes
  if r == nil then
    r = false
    local tenants = caps.tenants
    if caps.workflow_id or (tenants and (tenants.allowed or tenants.denied)) then
      r = { workflow = caps.workflow_id, allowed = tenants and tenants.allowed, denied = {}, ndenied = 0 }
      if tenants and tenants.denied then
        for _, t in ipairs(tenants.denied) do r.denied[t] = true end
        r.ndenied = #tenants.denied
      end
    end
    caps.lanes = r
  end
  return r
end

-- Whether a restricted worker (`lanes` as profile_lanes gives them) may run a job of this tenant and workflow.
local function lane_allows(lanes, tenant, workflow)
  if not lanes then return true end
  if lanes.workflow and lanes.workflow ~= workflow then return false end
  if lanes.denied[tenant] then return false end
  if lanes.allowed and not contains(lanes.allowed, tenant) then return false end
  return true
end
