-- The body of one submit, shared by emp_submit and emp_submit_many. A job's
-- arguments, from its first one at [+0]:
--   [+0] job id  [+1] requirement class id  [+2] class definition (canonical JSON)
--   [+3] priority (-1000..1000)  [+4] idempotency key ('' none)  [+5] request fingerprint
--   [+6] idempotency ttl ms  [+7] delay ms  [+8] queue ttl ms ('' none)  [+9] start timeout ms ('' none)
--   [+10] payload (JSON)  [+11] n, the number of field/value arguments that follow
--   [+12 .. +11+n] field/value pairs stored on the job as given, starting with
--   'tenant', <tenant>, 'service', <service>
-- Raises IDEMPOTENCY_CONFLICT (same key, different request) or DUPLICATE_ID.

-- Submits the job whose arguments start at args[at]; returns its reply and the
-- index just past its arguments. Everything that can raise comes before the
-- first write: a function that raises keeps the writes it already made.
-- the fields given at submit that a claim reads only from a job marked `opt`
local OPTIONAL_SUBMIT_FIELDS = { workflow_id = true, step = true, exec_timeout_ms = true }

local function submit_job(ctx, args, at)
  local p, now = ctx.p, ctx.now
  local id, class, def = args[at], args[at + 1], args[at + 2]
  local priority = tonumber(args[at + 3])
  local idem, fingerprint = args[at + 4], args[at + 5]
  local first_field = at + 12
  local next_at = first_field + tonumber(args[at + 11])

  local idem_key
  if idem ~= '' then
    idem_key = p .. 'idem:' .. idem
    local existing = redis.call('GET', idem_key)
    if existing then
      local sep = string.find(existing, '|', 1, true)
      local existing_id, existing_fp = string.sub(existing, 1, sep - 1), string.sub(existing, sep + 1)
      if existing_fp ~= fingerprint then
        raise('IDEMPOTENCY_CONFLICT', 'idempotency key was used for a different request (job ' .. existing_id .. ')')
      end
      local routable = redis.call('HGET', class_key(p, class), 'routable') or '1'
      return { existing_id, 1, tonumber(routable) }, next_at
    end
  end
  local key = job_key(p, id)
  if redis.call('EXISTS', key) == 1 then raise('DUPLICATE_ID', 'job ' .. id .. ' already exists') end

  local ckey = class_key(p, class)
  local routable = redis.call('HGET', ckey, 'routable')
  if not routable then
    routable = '0'
    local req = cjson.decode(def)
    for _, profile in ipairs(redis.call('SMEMBERS', p .. 'profiles')) do
      if satisfies(load_profile(p, profile), req) then routable = '1'; break end
    end
    redis.call('HSET', ckey, 'def', def, 'routable', routable, 'created_at', ctx.ts)
    redis.call('SADD', p .. 'classlist', class)
    if routable == '0' then redis.call('SADD', p .. 'unroutable', class) end
  end
  if idem_key then redis.call('SET', idem_key, id .. '|' .. fingerprint, 'PX', args[at + 6]) end

  -- the score as text once: each redis.call would format a Lua number again
  local score = string.format('%d', job_score(priority, redis.call('INCR', p .. 'seq')))
  local queue_ttl, start_timeout = tonumber(args[at + 8]), tonumber(args[at + 9])
  local delay = tonumber(args[at + 7]) or 0
  local fields = { 'state', 'queued', 'class', class, 'score', score, 'submitted_at', ctx.ts }
  if idem ~= '' then fields[#fields + 1] = 'idempotency_key'; fields[#fields + 1] = idem end
  if queue_ttl then fields[#fields + 1] = 'queue_deadline'; fields[#fields + 1] = now + queue_ttl end
  if start_timeout then fields[#fields + 1] = 'start_deadline'; fields[#fields + 1] = now + start_timeout end
  if delay > 0 then fields[#fields + 1] = 'run_at'; fields[#fields + 1] = now + delay end
  local payload = args[at + 10]
  local inline = #payload <= INLINE_PAYLOAD
  if inline then fields[#fields + 1] = 'payload'; fields[#fields + 1] = payload end
  local n = #fields
  -- `opt` tells a claim that the job has fields most jobs lack (see OPTIONAL_TAKE_FIELDS)
  local opt = queue_ttl or start_timeout
  for i = first_field, next_at - 1, 2 do
    local name = args[i]
    if OPTIONAL_SUBMIT_FIELDS[name] then opt = true end
    fields[n + 1] = name
    fields[n + 2] = args[i + 1]
    n = n + 2
  end
  if opt then fields[n + 1] = 'opt'; fields[n + 2] = '1' end
  redis.call('HSET', key, unpack(fields))
  if not inline then redis.call('SET', payload_key(p, id), payload) end

  if delay <= 0 then
    enqueue(p, id, class, score, nil)
  else
    count_deferred(p, 'delayed', args[first_field + 3], '1')
  end
  if delay > 0 or queue_ttl or start_timeout then schedule(p, id) end
  index_job(p, id, args[first_field + 1], ctx.ts)
  job_event(ctx, id, 'job.queued', 'queued', { 'tenant', args[first_field + 1], 'service', args[first_field + 3],
    'routable', routable })
  return { id, 0, tonumber(routable) }, next_at
end
