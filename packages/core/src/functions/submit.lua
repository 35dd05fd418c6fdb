-- submit: accept a new job into the shard.
-- KEYS[1] shard anchor
-- ARGV prelude (see includes/00-base.lua), then:
--   [7] job id  [8] requirement class id  [9] class definition (canonical JSON)
--   [10] priority (-1000..1000)  [11] idempotency key ('' none)  [12] request fingerprint
--   [13] idempotency ttl ms  [14] delay ms  [15] queue ttl ms ('' none)  [16] start timeout ms ('' none)
--   [17] payload (JSON)  [18..] field/value pairs stored on the job as given (tenant, service, ...)
-- Returns { id, duplicate (0|1), routable (0|1) }.
-- Errors: IDEMPOTENCY_CONFLICT (same key, different request), DUPLICATE_ID.
local function submit(keys, args)
  local ctx = context(keys, args)
  local p, now = ctx.p, ctx.now
  local id, class, def = args[7], args[8], args[9]
  local priority = tonumber(args[10])
  local idem, fingerprint = args[11], args[12]

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
      return { existing_id, 1, tonumber(routable) }
    end
  end
  local key = job_key(p, id)
  if redis.call('EXISTS', key) == 1 then raise('DUPLICATE_ID', 'job ' .. id .. ' already exists') end

  -- Everything that can raise (decoding the class) comes before the first write:
  -- a function that raises keeps the writes it already made.
  local ckey = class_key(p, class)
  local routable = redis.call('HGET', ckey, 'routable')
  if not routable then
    routable = '0'
    local req = cjson.decode(def)
    for _, profile in ipairs(redis.call('SMEMBERS', p .. 'profiles')) do
      if satisfies(load_profile(p, profile), req) then routable = '1'; break end
    end
    redis.call('HSET', ckey, 'def', def, 'routable', routable, 'created_at', now)
    redis.call('SADD', p .. 'classlist', class)
    if routable == '0' then redis.call('SADD', p .. 'unroutable', class) end
  end
  if idem_key then redis.call('SET', idem_key, id .. '|' .. fingerprint, 'PX', args[13]) end

  local score = job_score(priority, redis.call('INCR', p .. 'seq'))
  local queue_ttl, start_timeout = tonumber(args[15]), tonumber(args[16])
  local delay = tonumber(args[14]) or 0
  local fields = { 'state', 'queued', 'class', class, 'score', score, 'submitted_at', now }
  if idem ~= '' then fields[#fields + 1] = 'idempotency_key'; fields[#fields + 1] = idem end
  if queue_ttl then fields[#fields + 1] = 'queue_deadline'; fields[#fields + 1] = now + queue_ttl end
  if start_timeout then fields[#fields + 1] = 'start_deadline'; fields[#fields + 1] = now + start_timeout end
  if delay > 0 then fields[#fields + 1] = 'run_at'; fields[#fields + 1] = now + delay end
  for i = 18, #args do fields[#fields + 1] = args[i] end
  redis.call('HSET', key, unpack(fields))
  redis.call('SET', payload_key(p, id), args[17])

  if delay <= 0 then enqueue(p, id, class, score, nil) end
  if delay > 0 or queue_ttl or start_timeout then schedule(p, id) end
  local info = redis.call('HMGET', key, 'tenant', 'service')
  index_job(p, id, info[1], now)
  job_event(ctx, id, 'job.queued', 'queued', { 'tenant', info[1], 'service', info[2], 'routable', routable })
  return { id, 0, tonumber(routable) }
end

redis.register_function('emp_submit', submit)
