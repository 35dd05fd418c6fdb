-- The body of one submit, shared by emp_submit and emp_submit_many. A job's
-- arguments, from its first one at [+0]:
--   [+0] job id  [+1] requirement class id  [+2] class definition (canonical JSON)
--   [+3] priority (-1000..1000)  [+4] idempotency key ('' none)  [+5] request fingerprint
--   [+6] idempotency ttl ms  [+7] delay ms  [+8] queue ttl ms ('' none)  [+9] start timeout ms ('' none)
--   [+10] payload (JSON)  [+11] most classes the shard may have queued ('' no limit)
--   [+12] duration class (routing.ts: service and models), kept on the requirement class,
--   which determines it, not on each job  [+13] n, the number of field/value arguments that follow
--   [+14 .. +13+n] field/value pairs stored on the job as given, starting with
--   'tenant', <tenant>, 'service', <service>
-- emp_submit_many sends each job without what the jobs of its call share (ctx.submit_shared,
-- see submit_many.lua: the idempotency ttl, the class limit, and each class's definition and
-- duration class once per call):
--   [+0] job id  [+1] requirement class id  [+2] priority  [+3] idempotency key  [+4] fingerprint
--   [+5] delay ms  [+6] queue ttl ms  [+7] start timeout ms  [+8] payload  [+9] n, then the n field/value arguments
-- Raises IDEMPOTENCY_CONFLICT (same key, different request), DUPLICATE_ID or
-- TOO_MANY_CLASSES (the job would open a class past the limit).
-- the arguments before a job's fields: in full, and in emp_submit_many's layout (one table: the
-- library's chunk has room for 200 top-level locals)
local SUBMIT_HEADER = { full = 14, shared = 10 }

-- Submits the job whose arguments start at args[at]; returns its reply and the
-- index just past its arguments. Everything that can raise comes before the
-- first write: a function that raises keeps the writes it already made.
-- the fields a claim reads only from a job marked `opt` (the deadlines among them
-- are written here, not given at submit), as a set
local OPTIONAL_SUBMIT_FIELDS = {}
for i = 1, #OPTIONAL_TAKE_FIELDS do OPTIONAL_SUBMIT_FIELDS[OPTIONAL_TAKE_FIELDS[i]] = true end

local function too_many_classes(p, max_classes)
  raise('TOO_MANY_CLASSES', 'pool ' .. string.match(p, '{(.*)}') .. ' already has ' .. max_classes ..
    ' requirement classes queued (the limit, maxQueuedClasses); a job that needs workers of another kind must wait until one empties')
end

-- Demand for the planner: `demand:<bucket>` (bucket = floor(now / 5 min)) counts the
-- jobs submitted in those five minutes per requirement class (`c:<class>`); `d:<class>`
-- holds the demand fields the class stands for (JSON: its distinct models, or
-- `service:<service>` when it names none), written with the class's first count in
-- the bucket. The reader (broker/demand.ts) turns the class counts into per-model
-- counts and the total `*`: one HINCRBY per job here (per class per batch in
-- emp_submit_many) instead of one per model and one for `*`, and no class
-- definition decoded per job. The key expires 8 days after its first write.
-- (One table, `demand`, holds these: the library's chunk has room for 200 top-level locals.)
local demand = { BUCKET_MS = 300000, TTL_MS = 8 * 24 * 3600 * 1000 }

function demand.fields(p, class, service)
  local models = load_class(p, class).models
  if type(models) ~= 'table' or #models == 0 then return cjson.encode({ 'service:' .. service }) end
  -- a model listed twice is still one job's demand for it
  local seen, distinct = {}, {}
  for i = 1, #models do
    local m = models[i]
    if not seen[m] then seen[m] = true; distinct[#distinct + 1] = m end
  end
  return cjson.encode(distinct)
end

function demand.add(p, now, class, service, n)
  local key = p .. 'demand:' .. string.format('%d', math.floor(now / demand.BUCKET_MS))
  -- the class's first jobs in this bucket: say what it stands for, and start the bucket's expiry if it is new
  if call('HINCRBY', key, 'c:' .. class, n) == n then
    call('HSET', key, 'd:' .. class, demand.fields(p, class, service))
    call('PEXPIRE', key, demand.TTL_MS, 'NX')
  end
end

-- Counts one submitted job: at once, or, inside a batch that collects them
-- (ctx.demand, see submit_many.lua), once per class when the batch flushes.
function demand.count(ctx, class, service)
  local batch = ctx.demand
  if not batch then return demand.add(ctx.p, ctx.now, class, service, 1) end
  local seen = batch[class]
  if seen then seen.n = seen.n + 1 else batch[class] = { n = 1, service = service } end
end

function demand.flush(ctx)
  for class, seen in pairs(ctx.demand) do demand.add(ctx.p, ctx.now, class, seen.service, seen.n) end
  ctx.demand = nil
end

-- The id an idempotency key names (kept as "<id>|<request fingerprint>"), or nil when the key
-- is not kept. A key kept for another request is IDEMPOTENCY_CONFLICT: `conflict` is the message's
-- end, with %s for the id the key names ('a different request (job %s)').
local function idempotent_original(key, fingerprint, conflict)
  local existing = call('GET', key)
  if not existing then return nil end
  local sep = string.find(existing, '|', 1, true)
  local id = string.sub(existing, 1, sep - 1)
  if string.sub(existing, sep + 1) ~= fingerprint then
    raise('IDEMPOTENCY_CONFLICT', 'idempotency key was used for ' .. string.format(conflict, id))
  end
  return id
end

-- `seq`: the place in line to take instead of a new one (a workflow's later steps keep
-- the workflow's, see 65-workflows.lua); nil for a plain submit.
local function submit_job(ctx, args, at, seq)
  local p, now = ctx.p, ctx.now
  local id, class = args[at], args[at + 1]
  -- numbers are read from their text by arithmetic where the broker always gives one
  -- (once; tonumber reads text twice), and the usual '0' and '' are compared, not read
  local def, priority, idem, fingerprint, idem_ttl, delay, queue_ttl, start_timeout, payload, max_classes, dclass, first_field
  local shared = ctx.submit_shared
  if shared then
    local known_class = shared.classes[class]
    if not known_class then raise('CORRUPT', 'job ' .. id .. ': class ' .. class .. ' is not among the classes of its call') end
    def, dclass = known_class[1], known_class[2]
    priority, idem, fingerprint, delay = args[at + 2] + 0, args[at + 3], args[at + 4], args[at + 5]
    queue_ttl, start_timeout, payload = args[at + 6], args[at + 7], args[at + 8]
    idem_ttl, max_classes = shared.idem_ttl, shared.max_classes
    first_field = at + SUBMIT_HEADER.shared
  else
    def, priority, idem, fingerprint, idem_ttl = args[at + 2], args[at + 3] + 0, args[at + 4], args[at + 5], args[at + 6]
    delay, queue_ttl, start_timeout, payload = args[at + 7], args[at + 8], args[at + 9], args[at + 10]
    max_classes, dclass = tonumber(args[at + 11]), args[at + 12]
    first_field = at + SUBMIT_HEADER.full
  end
  -- the field count comes just before the fields in either layout
  local next_at = first_field + args[first_field - 1]

  local idem_key
  if idem ~= '' then
    idem_key = p .. 'idem:' .. idem
    local existing_id = idempotent_original(idem_key, fingerprint, 'a different request (job %s)')
    if existing_id then
      local routable = call('HGET', class_key(p, class), 'routable') or '1'
      return { existing_id, 1, tonumber(routable) }, next_at
    end
  end
  local key = job_key(p, id)
  if call('EXISTS', key) == 1 then raise('DUPLICATE_ID', 'job ' .. id .. ' already exists') end

  -- A claim walks the queued classes, so their number is bounded: a job that would
  -- open one more past the limit is refused (one it joins is always welcome). A
  -- job queued now enters `classes` here, before anything else is written (the
  -- sequence number aside), so that the check costs a ZCARD only when its class
  -- was not queued; a delayed one is checked now and enters when it is due.
  delay = delay == '0' and 0 or tonumber(delay) or 0
  -- the score as text once: each redis.call would format a Lua number again
  if not seq then
    seq = shared and shared.seq_next
    if seq then
      shared.seq_next = seq < shared.seq_last and seq + 1 or nil
    else
      -- a batch reserves a place in line for each of its jobs with one INCRBY (submit_many's
      -- seq_want); a job that is refused or a duplicate leaves its number unused, which
      -- only orders, never counts
      local want = shared and shared.seq_want or 1
      local last = call('INCRBY', p .. 'seq', want)
      seq = last - want + 1
      if want > 1 then shared.seq_want, shared.seq_next, shared.seq_last = nil, seq + 1, last end
      -- the shard's first job ever: nothing stored in an older layout, so it starts at the current one
      if seq == 1 then call('SET', schema_key(p), SCHEMA_VERSION) end
    end
  end
  local score_n = job_score(priority, seq)
  local score = string.format('%d', score_n)
  -- in a batch (ctx.batch_classes, see submit_many.lua): what the batch's earlier jobs of the
  -- class left, the class's fields as HMGET below reads them and the most `classes` scores it
  local seen = ctx.batch_classes and ctx.batch_classes[class]
  if delay <= 0 then
    if seen and seen.score and seen.score <= score_n then
      -- queued at a score no later than this job's: ZADD LT would change nothing
    elseif call('ZADD', p .. 'classes', 'LT', score, class) == 1 and max_classes
      and call('ZCARD', p .. 'classes') > max_classes then
      call('ZREM', p .. 'classes', class)
      too_many_classes(p, max_classes)
    end
  elseif max_classes and call('ZCARD', p .. 'classes') >= max_classes and not call('ZSCORE', p .. 'classes', class) then
    too_many_classes(p, max_classes)
  end
  local ckey = class_key(p, class)
  local known = seen or call('HMGET', ckey, 'routable', 'listed', 'laned', 'dclass')
  local routable, laned = known[1], known[3] == '1'
  if not known[2] then
    -- a new class, or one swept from the class list while empty (see sweep_class_list in tick.lua)
    if routable ~= '1' then
      routable = '0'
      local req = cjson.decode(def)
      for _, profile in ipairs(call('SMEMBERS', p .. 'profiles')) do
        if satisfies(load_profile(p, profile), req) then routable = '1'; break end
      end
    end
    laned = call('EXISTS', laned_key(p)) == 1
    local fields = { 'routable', routable, 'listed', '1' }
    if laned then fields[#fields + 1] = 'laned'; fields[#fields + 1] = '1' end
    if not known[1] then
      fields[#fields + 1] = 'def'; fields[#fields + 1] = def
      fields[#fields + 1] = 'created_at'; fields[#fields + 1] = ctx.ts
    end
    if known[4] ~= dclass then
      fields[#fields + 1] = 'dclass'; fields[#fields + 1] = dclass
      -- a completion's call (a workflow's next step) may have kept the old one (complete.lua)
      memo.dclass_of = nil
    end
    call('HSET', ckey, unpack(fields))
    call('SADD', p .. 'classlist', class)
    if routable == '0' then call('SADD', p .. 'unroutable', class) end
  elseif known[4] ~= dclass then
    -- a class stored before classes kept their duration class (or whose definition a newer library names otherwise)
    call('HSET', ckey, 'dclass', dclass)
    memo.dclass_of = nil
  end
  if ctx.batch_classes then
    -- the class's fields as this job leaves them (a batch runs only submits, and only a
    -- submit writes them), and the score `classes` holds for it at most
    local lowest = seen and seen.score
    if delay <= 0 and not (lowest and lowest <= score_n) then lowest = score_n end
    if seen then
      seen[1], seen[2], seen[3], seen[4], seen.score = routable, '1', laned and '1' or known[3], dclass, lowest
    else
      ctx.batch_classes[class] = { routable, '1', laned and '1' or known[3], dclass, score = lowest }
    end
  end
  if idem_key then call('SET', idem_key, id .. '|' .. fingerprint, 'PX', idem_ttl) end

  queue_ttl, start_timeout = queue_ttl ~= '' and tonumber(queue_ttl) or nil, start_timeout ~= '' and tonumber(start_timeout) or nil
  -- the fields every job has and those given at submit, straight from the arguments
  -- (a table per job would cost more than the write)
  -- the fields few jobs have; `opt` tells a claim that the job has some (see OPTIONAL_TAKE_FIELDS)
  local opt = queue_ttl or start_timeout
  local workflow = nil
  -- a value over 64 bytes (a webhook, say) makes the hash a hashtable, where payload pieces cost more than a key
  local listpack = #idem <= INLINE_PAYLOAD
  for i = first_field, next_at - 1, 2 do
    local field = args[i]
    if OPTIONAL_SUBMIT_FIELDS[field] then
      opt = true
      if field == 'workflow_id' then workflow = args[i + 1] end
    end
    if #args[i + 1] > INLINE_PAYLOAD then listpack = false end
  end
  if #payload <= INLINE_PAYLOAD or (listpack and #payload <= pieces.MAX) then
    call('HSET', key, 'state', 'queued', 'class', class, 'score', score, 'submitted_at', ctx.ts,
      'payload', string.sub(payload, 1, INLINE_PAYLOAD), unpack(args, first_field, next_at - 1))
    if #payload > INLINE_PAYLOAD then call('HSET', key, unpack(pieces.rest(payload))) end
  else
    call('HSET', key, 'state', 'queued', 'class', class, 'score', score, 'submitted_at', ctx.ts,
      unpack(args, first_field, next_at - 1))
    call('SET', payload_key(p, id), payload)
  end
  -- a job queued now goes into its class's lanes when the class keeps them (a delayed one when it is due)
  laned = laned and delay <= 0
  if opt or laned or delay > 0 or idem ~= '' then
    local rare = {}
    if idem ~= '' then rare[#rare + 1] = 'idempotency_key'; rare[#rare + 1] = idem end
    if queue_ttl then rare[#rare + 1] = 'queue_deadline'; rare[#rare + 1] = now + queue_ttl end
    if start_timeout then rare[#rare + 1] = 'start_deadline'; rare[#rare + 1] = now + start_timeout end
    if delay > 0 then rare[#rare + 1] = 'run_at'; rare[#rare + 1] = now + delay end
    if opt or laned then rare[#rare + 1] = 'opt'; rare[#rare + 1] = (opt and '1' or '') .. (laned and 'l' or '') end
    call('HSET', key, unpack(rare))
  end

  if delay <= 0 then
    enqueue(p, id, class, score, nil, args[first_field + 1], workflow, true, laned)
  else
    count_deferred(p, 'delayed', args[first_field + 3], '1')
  end
  if delay > 0 or queue_ttl or start_timeout then schedule(p, id) end
  job_log.add(p, id, args[first_field + 1], ctx.ts)
  demand.count(ctx, class, args[first_field + 3])
  job_event(ctx, id, 'job.queued', 'queued', 'tenant', args[first_field + 1], 'service', args[first_field + 3],
    'routable', routable)
  return { id, 0, routable == '1' and 1 or routable == '0' and 0 or tonumber(routable) }, next_at
end
