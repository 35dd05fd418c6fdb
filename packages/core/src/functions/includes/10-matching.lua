-- Matching of a requirement class against a worker capability profile.
-- Both are immutable once written (their ids are content hashes), so a verdict
-- can be cached for the life of the loaded library.

local CACHE_LIMIT = 100000
local decoded_profiles = {}
local decoded_classes = {}
local raw_classes = {}
local verdicts = {}
local cached = 0

-- The caches only save work, so past one shared bound they simply start over.
local function count_cached()
  cached = cached + 1
  if cached > CACHE_LIMIT then
    decoded_profiles, decoded_classes, raw_classes, verdicts, cached = {}, {}, {}, {}, 0
  end
end

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
  local tenants = caps.tenants
  if tenants then
    if tenants.denied and contains(tenants.denied, req.tenant) then return false end
    if tenants.allowed and not contains(tenants.allowed, req.tenant) then return false end
  end
  if req.isolation == 'strict' then
    -- strict isolation: only a worker dedicated to this one tenant
    if not (tenants and tenants.allowed and #tenants.allowed == 1 and tenants.allowed[1] == req.tenant) then
      return false
    end
  end
  if caps.workflow_id and caps.workflow_id ~= req.workflow_id then return false end
  if req.constraints and not has(req.constraints, caps.labels or {}) then return false end
  if req.exclude and not lacks(req.exclude, caps.labels or {}) then return false end
  return true
end

local function load_profile(p, profile)
  local caps = decoded_profiles[profile]
  if caps == nil then
    local raw = call('GET', profile_key(p, profile))
    if not raw then raise('CORRUPT', 'capability profile ' .. profile .. ' is missing') end
    caps = cjson.decode(raw)
    count_cached()
    decoded_profiles[profile] = caps
  end
  return caps
end

-- The class definition as stored (canonical JSON), as claims hand it to workers.
local function class_definition(p, class)
  local raw = raw_classes[class]
  if raw == nil then
    raw = call('HGET', class_key(p, class), 'def')
    if not raw then raise('CORRUPT', 'requirement class ' .. class .. ' is missing') end
    count_cached()
    raw_classes[class] = raw
  end
  return raw
end

local function load_class(p, class)
  local req = decoded_classes[class]
  if req == nil then
    req = cjson.decode(class_definition(p, class))
    count_cached()
    decoded_classes[class] = req
  end
  return req
end

-- verdicts[profile][class]: two lookups, where one by profile .. class made a string every claim
local function profile_matches(p, profile, class)
  local of_profile = verdicts[profile]
  if of_profile == nil then
    of_profile = {}
    verdicts[profile] = of_profile
  end
  local verdict = of_profile[class]
  if verdict == nil then
    verdict = satisfies(load_profile(p, profile), load_class(p, class))
    count_cached()
    of_profile[class] = verdict
  end
  return verdict
end
