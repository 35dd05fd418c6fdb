-- The claim: walk the non-empty requirement classes in the order of their head
-- jobs and take the first job of the first class this worker satisfies. The walk
-- is over classes, never over jobs, so its cost does not depend on queue depth,
-- and every class is looked at, so a capable worker always finds a waiting job.

local CLASS_PAGE = 64
-- Most class heads and lanes one claim call looks at. A walk past it ends the
-- call with 'more' and a cursor on the worker, and the next call goes on from
-- there, so no call blocks Redis for long however many classes are queued.
local CLAIM_BUDGET = 256
-- a walk's cursor older than this belongs to a walk nobody continued (the worker restarted)
local CURSOR_TTL_MS = 2000
-- range bounds as text: a Lua number passed to redis.call is formatted with sprintf
local AVOID_LOOKAHEAD_LAST = '15' -- a job and the 15 behind it: a pick looks 16 jobs deep
-- ranks 0 .. CLASS_PAGE - 1, and the option that adds the scores (see claim_for: a range is passed with it or without)
local FIRST_PAGE = { '0', '63', 'WITHSCORES' }

-- A field a job hash lacks costs Redis a scan of the whole hash, so a take reads
-- the fields every job has (and `attempts`, which a job has once claimed) and
-- only the fields few jobs have when the job says it has them: `opt` for those
-- given at submit, `attempts` for those a failure leaves (avoid_worker/until).
local OPTIONAL_TAKE_FIELDS = { 'workflow_id', 'step', 'exec_timeout_ms', 'start_deadline', 'queue_deadline', 'traceparent' }
local RETRY_TAKE_FIELDS = { 'avoid_worker', 'avoid_until' }

-- Whether a worker other than `worker` that could run this job is online (not
-- draining, not offline). Walks the shard's workers: it runs only for a job that
-- just failed on `worker`, which is rare.
local function another_capable_online(p, class, worker, tenant, workflow)
  for _, other in ipairs(call('ZRANGE', p .. 'workers', '0', '-1')) do
    if other ~= worker then
      local f = call('HMGET', worker_key(p, other), 'profile', 'state')
      if f[1] and f[2] ~= 'draining' and f[2] ~= 'offline' and profile_matches(p, f[1], class)
        and lane_allows(profile_lanes(p, f[1]), tenant, workflow) then
        return true
      end
    end
  end
  return false
end

-- The job's fields when this worker may take it now, else nil and when it may.
-- A job that just failed on this worker is left for others until its avoid
-- window ends, but only while another worker able to run it is online: with
-- nobody else to take it, waiting would only delay it. `lanes`: the worker's
-- restrictions (profile_lanes), checked against the job's tenant and workflow.
-- The fields come as f[1] attempts, tenant, service, score, submitted_at, payload, f[7] opt by position, and
-- f.workflow_id, f.step, f.exec_timeout_ms, f.start_deadline, f.queue_deadline,
-- f.traceparent by name (false when absent); then nil and the job's key (take's `key`). A job this
-- worker may never run answers nil, nil.
local function takeable(p, class, id, worker, now, lanes)
  local key = job_key(p, id)
  local f = call('HMGET', key, 'attempts', 'tenant', 'service', 'score', 'submitted_at', 'payload', 'opt')
  if f[7] and opt_fields(f[7]) then
    local o = call('HMGET', key, unpack(OPTIONAL_TAKE_FIELDS))
    f.workflow_id, f.step, f.exec_timeout_ms, f.start_deadline, f.queue_deadline, f.traceparent = o[1], o[2], o[3], o[4], o[5], o[6]
  end
  if lanes and not lane_allows(lanes, f[2], f.workflow_id or nil) then return nil, nil end
  if f[1] then
    local avoid = call('HMGET', key, unpack(RETRY_TAKE_FIELDS))
    if avoid[1] == worker then
      local until_ = tonumber(avoid[2]) or 0
      if until_ > now and another_capable_online(p, class, worker, f[2], f.workflow_id or nil) then
        return nil, until_
      end
    end
  end
  return f, nil, key
end

local function earlier(a, b)
  if a == nil then return b end
  if b == nil or a < b then return a end
  return b
end

-- The first job of sorted set `zset` (a class queue or one of its lanes) this
-- worker may take now, looking 16 jobs deep (AVOID_LOOKAHEAD_LAST); or nil and the
-- earliest time a skipped job becomes its to take. When the job is the set's
-- head and `zset` is the class queue itself, the id of the job behind it comes
-- too (false: none), whose score is the class's next head score (see take).
-- A job found comes with its key (take's `key`), and a head with the ids read from the
-- set's start: `last` (text, default '1') is the rank of the last one read, more than
-- the head and the one behind it for a call that may take a run of them (deferred.start_run).
local function pick_in(p, class, zset, worker, now, lanes, is_class_queue, last)
  local heads = call('ZRANGE', zset, '0', last or '1')
  if not heads[1] then return nil end
  local f, soonest, key = takeable(p, class, heads[1], worker, now, lanes)
  if f then return heads[1], f, nil, is_class_queue and (heads[2] or false) or nil, key, heads end
  if not heads[2] then return nil, nil, soonest end
  for _, id in ipairs(call('ZRANGE', zset, '1', AVOID_LOOKAHEAD_LAST)) do
    local until_
    f, until_, key = takeable(p, class, id, worker, now, lanes)
    if f then return id, f, nil, nil, key end
    soonest = earlier(soonest, until_)
  end
  return nil, nil, soonest
end

-- For a restricted worker: its first takeable job in the class's lanes, best
-- lane first. Returns id, fields, soonest (as pick_in) and the lanes looked at.
local function pick_in_lanes(p, class, worker, now, lanes)
  if lanes.workflow then
    local id, f, soonest = pick_in(p, class, workflow_lane_key(p, class, lanes.workflow), worker, now, lanes, false)
    return id, f, soonest, 1
  end
  local tenants = {}
  local ct = lane_tenants_key(p, class)
  if lanes.allowed then
    local scores = call('ZMSCORE', ct, unpack(lanes.allowed))
    for i, t in ipairs(lanes.allowed) do
      if scores[i] and not lanes.denied[t] then tenants[#tenants + 1] = { tonumber(scores[i]), t } end
    end
    table.sort(tenants, function(a, b) return a[1] < b[1] end)
  else
    -- the denied tenants can fill at most the first #denied places
    local top = call('ZRANGE', ct, '0', tostring(lanes.ndenied + 2))
    for _, t in ipairs(top) do
      if not lanes.denied[t] then tenants[#tenants + 1] = { 0, t } end
    end
  end
  local soonest = nil
  for i, entry in ipairs(tenants) do
    local id, f, until_ = pick_in(p, class, tenant_lane_key(p, class, entry[2]), worker, now, lanes, false)
    if id then return id, f, nil, i end
    soonest = earlier(soonest, until_)
  end
  return nil, nil, soonest, #tenants
end

-- What a call that claims several times (emp_claim_many; emp_complete, claiming after each
-- completion) leaves to its end, so that it runs once for the call instead of once a job:
--
-- A run: the jobs such a call takes from the head of one class queue in turn, read once
-- (pick_in's `last`) and taken out of the queue together as the run ends (settle_run): one
-- ZRANGE, one ZREM, one HGET and one ZADD of the class's head score for the run instead of
-- for each job. A run takes a job only where the call's next claim would take that same job
-- (see start_run), and ends where it cannot tell: the claim then walks the classes as any
-- claim does. `w.run`: the worker's run in this call (nil: none).
--
-- The worker's set of jobs (wjobs), changed once as the call ends: `w.set_changes` (made by
-- keep_set_changes) keeps, in the order first changed, each id the call added or removed and,
-- in `member`, whether its last change added it, which is all the set's final state depends
-- on. Anything in the call that reads the set applies them first (apply_set).
--
-- Anything else in the call that reads the class queues, `classes` or the set (a workflow's
-- step ending, which may submit, cancel or fail jobs) settles both first.
-- (One table, `deferred`, and `take` with its helpers scoped below: the library's chunk has
-- room for 200 top-level locals.)
local take
local deferred = {}
do
  -- The score of `class`'s next head, the job `behind` (false: none, the class is empty), in
  -- `classes`: the score the job was queued at, which its hash keeps as text (Redis would
  -- format the queue's own as a double, ZRANGE WITHSCORES, which costs more than this read).
  local function follow_head(ctx, class, queue, behind)
    set_class_head(ctx.p, class, behind and (call('HGET', job_key(ctx.p, behind), 'score') or call('ZSCORE', queue, behind)),
      ctx.classes)
  end

  -- Gives job `id` (fields `f` as read by takeable), already out of its class's queue and
  -- lanes (see take), to the worker. `tier`, `extra`, `priority`, `key` as take's.
  local function hand_over(ctx, id, f, class, worker, w, tier, extra, priority, key)
    local p = ctx.p
    key = key or job_key(p, id)
    -- the attempt number is the attempt's fencing token; claimed_at is also the job's last update
    local attempt = f[1] and tostring((tonumber(f[1]) or 0) + 1) or '1'
    call('HSET', key, 'state', 'starting', 'worker', worker, 'machine', w.machine, 'attempts', attempt,
      'claimed_at', ctx.ts)
    if w.waiting or w.woken then
      stop_waiting(p, worker)
      w.waiting, w.woken = false, nil
    end
    deferred.change_set(w, id, true)
    if w.state ~= 'busy' then
      -- a busy worker's lease is already running (and renewed by its heartbeats)
      renew_lease(p, worker, ctx.now, ctx.lease_ms)
      set_worker_state(p, worker, 'busy', ctx.ts, ctx.maxlen, w.state, w.machine)
      w.state = 'busy'
    end
    -- a claimed job's only possible timer is its start deadline; its queue deadline no longer applies
    if f.start_deadline then
      call('ZADD', p .. 'timers', f.start_deadline, id)
    elseif f.queue_deadline then
      call('ZREM', p .. 'timers', id)
    end
    -- submitted_at lets a reader of the stream measure submit-to-claim latency without another read
    -- affinity (warm | disk | cold) lets a reader count how often a job found its models loaded
    if tier or extra then
      local more = extra or {}
      if tier then more = { 'affinity', affinity.NAMES[tier], unpack(more) } end
      job_event(ctx, id, 'job.starting', 'starting', 'tenant', f[2], 'service', f[3], 'worker', worker,
        'machine', w.machine, 'attempt', attempt, 'submitted_at', f[5], unpack(more))
    else
      job_event(ctx, id, 'job.starting', 'starting', 'tenant', f[2], 'service', f[3], 'worker', worker,
        'machine', w.machine, 'attempt', attempt, 'submitted_at', f[5])
    end
    -- (pieces.take_out's own first test, made here: nearly every payload is short and stays;
    -- the class's definition goes to the worker as stored, canonical JSON)
    local payload = f[6]
    if not payload or #payload == INLINE_PAYLOAD then payload = pieces.take_out(p, id, key, payload) end
    return { 'job', id, attempt, attempt, f[3], f[2], payload,
      cached_class(p, class).raw, priority or priority_of(f[4]), f.workflow_id or '', f.step or '', f.exec_timeout_ms or '', f[5] or '', f.traceparent or '' }
  end

  -- Gives job `id` (fields `f` as read by takeable) to the worker. `behind` is
  -- the id of the job behind it when it was its class's head (false: none; nil:
  -- not known, the job may be anywhere in its class). `tier`: the worker's
  -- tier of the class's models (nil: the class names none). `extra`: field/value
  -- pairs the `job.starting` event carries besides the usual ones (nil: none).
  -- `priority`: the job's, when the caller has it (nil: from its score). `key`, `queue`: the
  -- job's key and its class queue's, when the caller made them (nil: made here).
  function take(ctx, id, f, class, worker, w, behind, tier, extra, priority, key, queue)
    local p = ctx.p
    key = key or job_key(p, id)
    local workflow = f.workflow_id or nil
    local laned = f[7] and opt_laned(f[7])
    if behind == nil then
      remove_from_queue(p, id, class, f[2], workflow, laned)
    else
      queue = queue or queue_key(p, class)
      call('ZREM', queue, id)
      follow_head(ctx, class, queue, behind)
      if laned then remove_from_lanes(p, id, class, f[2], workflow) end
    end
    return hand_over(ctx, id, f, class, worker, w, tier, extra, priority, key)
  end

  -- The worker's set changes are kept from now on until apply_set.
  function deferred.keep_set_changes(w)
    w.set_changes = { member = {} }
  end

  -- Adds (`member` true) or removes job `id` from the worker's set: kept while the call keeps
  -- its changes (keep_set_changes), else at once.
  function deferred.change_set(w, id, member)
    local changes = w.set_changes
    if not changes then
      call(member and 'SADD' or 'SREM', w.jobs, id)
      return
    end
    if changes.member[id] == nil then changes[#changes + 1] = id end
    changes.member[id] = member
  end

  -- Applies the kept changes (one SREM, one SADD); later ones are kept again.
  function deferred.apply_set(w)
    local changes = w.set_changes
    if not changes or not changes[1] then return end
    local added, removed = {}, {}
    for _, id in ipairs(changes) do
      if changes.member[id] then added[#added + 1] = id else removed[#removed + 1] = id end
    end
    if removed[1] then call('SREM', w.jobs, unpack(removed)) end
    if added[1] then call('SADD', w.jobs, unpack(added)) end
    w.set_changes = { member = {} }
  end

  -- Gives the worker job `id` (fields `f`, key `key`, priority `priority`), the head of
  -- `class`'s queue `queue`, and starts a run with it; returns the claim reply. The queue's
  -- first ids, that head's first, are `heads`; `whole`: they are all the queue holds. The walk
  -- that found the head met no class before it this worker may claim from (every earlier one is
  -- of a profile it does not match, or paused), the class names no models (so its head is always taken
  -- when first met) and the worker has no lanes. The next claim would then take the class's
  -- new head too unless another class's head now comes first: every job of the run is before
  -- `bound` (nil: no bound), the head score of the first class after it in the walk's `page`
  -- (from `at`) the worker matches, or of the page's last when it matches none and the page
  -- is full (every class beyond comes after it).
  function deferred.start_run(ctx, worker, w, id, f, class, priority, key, queue, heads, whole, page, at)
    local p = ctx.p
    local bound_class = nil
    for i = at + 1, #page do
      if profile_matches(p, w.profile, page[i]) then
        bound_class = page[i]
        break
      end
    end
    if not bound_class and #page == CLASS_PAGE then bound_class = page[#page] end
    local bound = bound_class and tonumber(call('ZSCORE', ctx.classes, bound_class)) or nil
    w.run = { class = class, queue = queue, ids = heads, at = 2, whole = whole, bound = bound }
    if f[7] and opt_laned(f[7]) then remove_from_lanes(p, id, class, f[2], f.workflow_id or nil) end
    return hand_over(ctx, id, f, class, worker, w, nil, nil, priority, key)
  end

  -- The claim reply of the run's next job, taken, or nil when the run cannot tell that it is
  -- the one a claim would take: none left that was read, one whose follower was not read (the
  -- class's next head score would be unknown), one a failure makes this worker avoid
  -- (takeable) or one queued at or after the bound.
  function deferred.next_in_run(ctx, worker, w)
    local run = w.run
    local at, ids = run.at, run.ids
    local id = ids[at]
    if not id or not (ids[at + 1] or run.whole) then return nil end
    local class = run.class
    local f, _, key = takeable(ctx.p, class, id, worker, ctx.now, false)
    if not f or (run.bound and f[4] + 0 >= run.bound) then return nil end
    run.at = at + 1
    if f[7] and opt_laned(f[7]) then remove_from_lanes(ctx.p, id, class, f[2], f.workflow_id or nil) end
    return hand_over(ctx, id, f, class, worker, w, nil, nil, nil, key)
  end

  -- Ends the worker's run, if any: its jobs leave the class queue and the class is scored by
  -- the job behind them. Anything in the call that reads the queue or `classes` ends it first.
  function deferred.settle_run(ctx, w)
    local run = w.run
    if not run then return end
    w.run = nil
    call('ZREM', run.queue, unpack(run.ids, 1, run.at - 1))
    follow_head(ctx, run.class, run.queue, run.ids[run.at] or false)
  end
end

-- What a claim needs to know about the worker; raises UNKNOWN_WORKER. `waiting`:
-- it is in `idle`; `woken`: the class a wake-up named since (see wake());
-- `cursor`: where the walk its last claim call paused goes on (see claim_for); `jobs`:
-- the key of its set of jobs (wjobs), which nearly every call that loads it changes or counts.
local function load_worker(p, worker, now)
  local f = call('HMGET', worker_key(p, worker), 'profile', 'state', 'machine', 'waiting', 'cursor')
  if not f[1] then raise('UNKNOWN_WORKER', 'worker ' .. worker .. ' is not registered in this shard') end
  local waiting = f[4]
  local cursor, cursor_set = nil, f[5] ~= false
  if cursor_set then
    local sep = string.find(f[5], '|', 1, true)
    -- a walk is continued at once; an older cursor belongs to an abandoned walk
    if now - tonumber(string.sub(f[5], sep + 1)) <= CURSOR_TTL_MS then cursor = string.sub(f[5], 1, sep - 1) end
  end
  return { profile = f[1], state = f[2], machine = f[3] or '', waiting = waiting == '1',
    woken = waiting and waiting ~= '1' and string.sub(waiting, 7) or nil, cursor = cursor, cursor_set = cursor_set,
    jobs = p .. 'wjobs:' .. worker }
end

-- Wakes an idle worker for the job at the head of `class` (a wake-up passed on names only its class).
local function wake_for_head(p, class, avoid)
  local head = call('ZRANGE', queue_key(p, class), '0', '0')[1]
  if not head then return end
  local f = call('HMGET', job_key(p, head), 'tenant', 'opt')
  local workflow = job_workflow(p, head, f[2])
  wake_one(p, class, avoid, f[1], workflow)
end

-- A job of `class` (fields `f`) as a claim candidate: its priority, score, rank and
-- tier (nil: the class names no models); or nil and the time
-- to claim again when this worker leaves it, for now, to a worker holding its
-- models: the worker lacks them (not even on disk), the job is younger than the
-- affinity bound `wait_ms`, and another online worker able to run it holds them
-- loaded or on disk (a waiting one is woken for it). With nobody holding them, a
-- cold worker starts at once: downloading beats waiting. A job older than
-- `overdue_ms` outranks every tier (0: never), so that no job starves behind a
-- stream of jobs other workers hold warm.
local function candidate(ctx, a, class, f, worker)
  local score = f[4] + 0 -- a queued job's score is always there (arithmetic reads text once, tonumber twice)
  local priority = 1000 - math.floor(score / PRIORITY_SPAN) -- priority_of(score), written out
  local models = affinity.class_models(ctx.p, class)
  if not models then return priority, score, affinity.RANK_WARM, nil end
  local wait_ms, overdue_ms = affinity.limits(ctx)
  local tier = affinity.class_tier(a, models)
  local rank = affinity.class_rank(a, class)
  local submitted = tonumber(f[5]) or ctx.now
  if overdue_ms > 0 and ctx.now - submitted >= overdue_ms then
    rank = affinity.RANK_OVERDUE
  elseif wait_ms > 0 and ctx.now - submitted < wait_ms and tier < affinity.TIER_ON_DISK then
    local workflow = f.workflow_id or nil
    local seen = class .. '|' .. (f[2] or '') .. '|' .. (workflow or '')
    if not a.elsewhere then a.elsewhere = {} end
    local holder = a.elsewhere[seen]
    if holder == nil then
      local waiting
      holder, waiting = affinity.warm_holder(ctx.p, class, models, worker, f[2], workflow)
      if holder and waiting then wake(ctx.p, holder, class) end
      a.elsewhere[seen] = holder or false
    end
    if holder then return nil, submitted + wait_ms end
  end
  return priority, score, rank, tier
end

-- Whether no job of `class`, whose head has score `head` (of the best candidate's
-- priority), can be served before the best candidate (its rank and score): its rank is
-- lower, or the same with a later head. The walk then need not read its jobs. (A job whose
-- age would rank it overdue comes before the best in head order: the walk met it first.)
local function cannot_beat(a, class, head, best_rank, best_score)
  local rank = affinity.class_rank(a, class)
  return rank < best_rank or (rank == best_rank and head >= best_score)
end

-- Returns the claim reply: a job, or { 'none', retry_at, worker state } after
-- recording the worker as idle so that the next capable submit wakes it, or
-- { 'none', retry_at, worker state, 'more' } when the walk over the classes
-- used up this call's budget without a job to take: the worker calls again and
-- the walk goes on after the cursor it leaves. The worker is recorded idle from
-- that first call on, so a job submitted meanwhile into a class the walk has
-- passed still wakes it. `w` is the worker as load_worker read it.
-- The walk keeps the best candidate (affinity.better) and ends early at one ranked warm
-- or better, or at the first class whose head is of a lower priority than it;
-- a walk out of budget with a candidate in hand takes it. affinity.limits(ctx):
-- the affinity bounds (absent or 0: no job is left for a worker holding its models).
local function claim_for(ctx, worker, woken_class, w)
  local p = ctx.p
  if w.state == 'draining' or w.state == 'offline' then
    return { 'none', '', w.state }
  end
  woken_class = woken_class or w.woken
  if w.run then
    -- the call's next claim, in a run (one passed a wake-up walks: the woken class may be owed a pass-on)
    if not woken_class then
      local reply = deferred.next_in_run(ctx, worker, w)
      if reply then return reply end
    end
    deferred.settle_run(ctx, w)
  end
  -- profile_lanes(p, w.profile), which the profile keeps once asked
  local lanes = load_profile(p, w.profile).lanes
  if lanes == nil then lanes = profile_lanes(p, w.profile) end
  local retry_at = nil
  local budget = CLAIM_BUDGET
  -- what affinity needs of the worker (affinity.of): made once needed, below
  local a = nil
  -- the best candidate so far (affinity.better), in locals: a table per claim costs more
  local best, best_f, best_class, best_behind, best_priority, best_score, best_rank, best_tier, best_key, best_queue
  -- a call that may claim again (w.want: its claims left, this one included) reads more of a
  -- queue's head for a run (deferred.start_run); `first_open`: the first class the walk may claim from, its
  -- page and its place there, and the ids its pick read
  local want = w.want
  local last = want and want > 1 and not w.cursor and not lanes and tostring(want) or nil
  local first_open, first_page, first_at, first_heads
  -- a wake-up means a job this worker can run arrived, perhaps in a class the walk has passed: start again
  local after = not woken_class and w.cursor or nil
  -- an operator paused these services: their jobs stay queued, nobody claims them
  -- (memo.paused_services, called only for the call's first claim)
  local paused = memo.paused
  if paused == nil then paused = memo.paused_services(p) end
  local classes = ctx.classes or p .. 'classes'
  local offset, last_score, last_class, walking = 0, nil, nil, true
  -- The classes' head scores are read only once the walk has a candidate to compare them
  -- with (Redis formats each as a double, which costs more than the rest of a page): until
  -- then a page holds classes only, and `last_score` is the cursor's score once it is needed.
  local scored = false
  while walking do
    -- a page of classes (and their head scores), by rank from the start, or by score after the cursor of a paused walk
    -- (each range ends with WITHSCORES, passed once the scores are wanted)
    local range = after and { '(' .. after, '+inf', 'BYSCORE', 'LIMIT', offset, CLASS_PAGE, 'WITHSCORES' }
      or (offset == 0 and FIRST_PAGE) or { offset, offset + CLASS_PAGE - 1, 'WITHSCORES' }
    local page
    if range == FIRST_PAGE and not scored then
      page = call('ZRANGE', classes, '0', FIRST_PAGE[2]) -- (the commonest page, without unpack)
    else
      page = call('ZRANGE', classes, unpack(range, 1, scored and #range or #range - 1))
    end
    local stride = scored and 2 or 1
    local i = 1
    while i <= #page do
      if budget <= 0 then
        if best then break end
        -- the walk goes on after the last class it looked at (the set has not changed in this call)
        last_score = last_score or call('ZSCORE', classes, last_class)
        call('HSET', worker_key(p, worker), 'cursor', last_score .. '|' .. ctx.ts)
        if not w.waiting then start_waiting(p, worker, w.profile, false) end
        return { 'none', retry_at and tostring(retry_at) or '', w.state or 'idle', 'more' }
      end
      if best and not scored then
        -- a candidate in hand: the page again with its scores, from the same class on
        scored, stride, i = true, 2, 2 * i - 1
        page = call('ZRANGE', classes, unpack(range))
      end
      local class, head = page[i], scored and page[i + 1] or nil
      -- every job of this class and of the classes after it is of its head's priority or lower
      if best and priority_of(head) < best_priority then
        walking = false
        break
      end
      last_score, last_class = head, class
      budget = budget - 1
      local open = profile_matches(p, w.profile, class) and not (paused and paused[load_class(p, class).service])
      -- a candidate of a class naming models and a class compared with the best need `a`; most claims, neither
      if open and a == nil and (best or affinity.class_models(p, class)) then a = affinity.of(p, worker) end
      if open and not (best and cannot_beat(a, class, tonumber(head), best_rank, best_score)) then
        local id, fields, until_, behind, looked, key, queue, heads
        if lanes then
          id, fields, until_, looked = pick_in_lanes(p, class, worker, ctx.now, lanes)
          budget = budget - looked
        else
          queue = queue_key(p, class)
          id, fields, until_, behind, key, heads = pick_in(p, class, queue, worker, ctx.now, false, true, last)
        end
        if not first_open then first_open, first_page, first_at, first_heads = class, page, i, heads end
        if id then
          local priority, score, rank, tier = candidate(ctx, a, class, fields, worker)
          if not priority then
            until_ = score -- left for now: candidate's second answer is when to claim again
          elseif not best or affinity.better(priority, rank, score, best_priority, best_rank, best_score) then
            best, best_f, best_class, best_behind, best_key, best_queue = id, fields, class, behind, key, queue
            best_priority, best_score, best_rank, best_tier = priority, score, rank, tier
          end
        end
        -- earlier(retry_at, until_), written out: most classes leave no until_
        if until_ ~= nil and (retry_at == nil or until_ < retry_at) then retry_at = until_ end
        if best and best_rank >= affinity.RANK_WARM then
          walking = false
          break
        end
      end
      i = i + stride
    end
    if budget <= 0 and best then break end
    if #page < stride * CLASS_PAGE then break end
    offset = offset + CLASS_PAGE
  end
  if w.cursor_set then call('HDEL', worker_key(p, worker), 'cursor') end
  if best then
    local reply
    if last and best_behind and best_class == first_open and first_heads and not scored and not best_tier then
      -- the head of the first class the worker may claim from, with more behind it: a run starts
      reply = deferred.start_run(ctx, worker, w, best, best_f, best_class, best_priority, best_key, best_queue, first_heads,
        #first_heads <= want, first_page, first_at)
    else
      reply = take(ctx, best, best_f, best_class, worker, w, best_behind, best_tier, nil, best_priority, best_key, best_queue)
    end
    if woken_class and woken_class ~= best_class and call('EXISTS', queue_key(p, woken_class)) == 1 then
      -- we were woken for another class's job and took this one instead: pass the wake on
      wake_for_head(p, woken_class, worker)
    end
    return reply
  end
  start_waiting(p, worker, w.profile, w.waiting)
  local state = w.state or 'idle'
  deferred.apply_set(w)
  if call('SCARD', w.jobs) == 0 then
    state = 'idle'
    set_worker_state(p, worker, state, ctx.ts, ctx.maxlen, w.state, w.machine)
  end
  return { 'none', retry_at and tostring(retry_at) or '', state }
end
