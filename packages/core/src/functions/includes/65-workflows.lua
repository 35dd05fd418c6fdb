-- Workflows (docs/workflows.md): named steps, each a job, run in the order their
-- `needs` give. A workflow and every job of its steps live in one pool shard, so
-- the call that ends a step (complete, fail, cancel, expiry, worker loss: all go
-- through `finish`) queues the steps it unblocks in the same atomic call; no
-- process stands between two steps.
--
--   wf:<id>       the workflow: id, tenant, state (running | succeeded | failed | canceled), priority,
--                 seq (its place in line, which every step keeps), submitted_at, finished_at, error,
--                 failed_step, def (the steps as workflow.ts prepared them), steps, left (steps not ended);
--                 per step <s>: st:<s> (pending | queued | succeeded | failed | canceled), need:<s> (needs
--                 not ended), jobs:<s> (its jobs: 1, or a fan-out's items), ileft:<s> (items not ended),
--                 ready_at:<s>, ended_at:<s>, err:<s>; per job: j:<job id> -> <step>#<item>
--   wf:<id>:out   step -> its result (JSON text; a fan-out's: the array of its items'), <step>#<i> -> an item's
--   wfs           every workflow as "<id>|<tenant>" by submitted_at (listing); wfs:tenant:<t>: one tenant's ids
-- (`workflows`, the table of these transitions, is declared in 40-lifecycle.lua, whose `finish` calls it.)

do
  local MAX_ITEMS = 100
  local TERMINAL = { succeeded = true, failed = true, canceled = true, expired = true }

  -- JSON text is navigated as text, never decoded and encoded again: cjson would
  -- turn [] into {} and round numbers past 14 digits, and a payload must reach
  -- its worker as the earlier step wrote it.
  local function ws(s, i) return string.find(s, '[^ \t\r\n]', i) end

  local function skip_string(s, i)
    local j = i + 1
    while true do
      local q = string.find(s, '["\\]', j)
      if not q then return nil end
      if string.byte(s, q) == 34 then return q + 1 end
      j = q + 2
    end
  end

  -- The index just past the value starting at i (its first character), or nil.
  local function skip_value(s, i)
    local c = string.sub(s, i, i)
    if c == '"' then return skip_string(s, i) end
    if c == '{' or c == '[' then
      local depth, j = 0, i
      while true do
        local k = string.find(s, '[%[%]{}"]', j)
        if not k then return nil end
        local ch = string.sub(s, k, k)
        if ch == '"' then
          j = skip_string(s, k)
          if not j then return nil end
        elseif ch == '{' or ch == '[' then
          depth = depth + 1; j = k + 1
        else
          depth = depth - 1; j = k + 1
          if depth == 0 then return j end
        end
      end
    end
    return string.find(s, '[,%]} \t\r\n]', i) or (#s + 1)
  end

  -- The items of the array starting at i, as { start, stop } pairs (stop exclusive): the first
  -- `limit` only, so that a huge list in a result costs no more than what is read of it.
  local function array_items(s, i, limit)
    local items = {}
    local j = ws(s, i + 1)
    if not j or string.sub(s, j, j) == ']' then return items end
    while #items < limit do
      local e = skip_value(s, j)
      if not e then return items end
      items[#items + 1] = { j, e }
      j = ws(s, e)
      if not j or string.sub(s, j, j) ~= ',' then return items end
      j = ws(s, j + 1)
    end
    return items
  end

  -- The member `name` of the object starting at i: its value's start and stop, or nil.
  local function member(s, i, name)
    local j = ws(s, i + 1)
    while j and string.sub(s, j, j) == '"' do
      local e = skip_string(s, j)
      if not e then return nil end
      -- a key without escapes is its text; one with escapes is decoded, and one cjson refuses
      -- (a lone surrogate, which JSON text may hold) is no name a path can give
      local key = string.sub(s, j + 1, e - 2)
      if string.find(key, '\\', 1, true) then
        local ok, decoded = pcall(cjson.decode, string.sub(s, j, e - 1))
        key = ok and decoded or nil
      end
      local v = ws(s, e)
      if not v or string.sub(s, v, v) ~= ':' then return nil end
      v = ws(s, v + 1)
      local ve = v and skip_value(s, v)
      if not ve then return nil end
      if key == name then return v, ve end
      j = ws(s, ve)
      if not j or string.sub(s, j, j) ~= ',' then return nil end
      j = ws(s, j + 1)
    end
    return nil
  end

  local KINDS = { ['{'] = 'an object', ['['] = 'an array', ['"'] = 'a string', t = 'true', f = 'false', n = 'null' }
  local function kind_at(s, i)
    return KINDS[string.sub(s, i, i)] or 'a number'
  end

  local function path_text(path, upto)
    local out = ''
    for k = 1, upto do
      local seg = path[k]
      if type(seg) == 'number' then out = out .. '[' .. string.format('%d', seg) .. ']'
      else out = out .. (out == '' and '' or '.') .. seg end
    end
    return out
  end

  -- The JSON text at `path` in `text`, or nil and why not (`what` names the text in the message).
  local function resolve(text, path, what)
    local i = ws(text, 1)
    local e = i and skip_value(text, i)
    if not e then return nil, what .. ' is not JSON' end
    for k = 1, #path do
      local seg = path[k]
      local c = string.sub(text, i, i)
      local at = k == 1 and what or (what .. ' at ' .. path_text(path, k - 1))
      if type(seg) == 'number' then
        if c ~= '[' then return nil, at .. ' is ' .. kind_at(text, i) .. ', not an array' end
        local items = array_items(text, i, seg + 1)
        local item = items[seg + 1]
        if not item then return nil, at .. ' has ' .. #items .. ' items, no [' .. string.format('%d', seg) .. ']' end
        i, e = item[1], item[2]
      else
        if c ~= '{' then return nil, at .. ' is ' .. kind_at(text, i) .. ', not an object with ' .. seg end
        local v, ve = member(text, i, seg)
        if not v then return nil, at .. ' has no field ' .. seg end
        i, e = v, ve
      end
    end
    return string.sub(text, i, e - 1)
  end

  local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'
  local function base36_2(n)
    local hi, lo = math.floor(n / 36), n % 36
    return string.sub(B36, hi + 1, hi + 1) .. string.sub(B36, lo + 1, lo + 1)
  end

  -- A step's job id: the workflow's id, 's', the step's index and the item's (two base-36 digits each;
  -- workflow.ts derives the same).
  local function step_job_id(wf, index, item)
    return wf .. 's' .. base36_2(index) .. base36_2(item)
  end

  local function wf_key(p, id) return p .. 'wf:' .. id end

  -- The workflow as the transitions below use it (its definition decoded), or nil.
  local function load(p, id)
    local key = wf_key(p, id)
    local f = call('HMGET', key, 'state', 'tenant', 'priority', 'seq', 'def')
    if not f[1] then return nil end
    local def = cjson.decode(f[5])
    local by_name = {}
    for index, step in ipairs(def.steps) do
      step.index = index - 1
      by_name[step.n] = step
    end
    return { id = id, key = key, out = key .. ':out', state = f[1], tenant = f[2], priority = f[3],
      seq = tonumber(f[4]), def = def, steps = by_name }
  end

  local function event(ctx, w, event_type, ...)
    events_append(ctx.p, ctx.maxlen, 'type', event_type, 'workflow', w.id, 'state', w.state, 'tenant', w.tenant,
      'ts', ctx.ts, ...)
  end

  local function ended(ctx, w, state, ...)
    w.state = state
    call('HSET', w.key, 'state', state, 'finished_at', ctx.ts, ...)
    local retention = state == 'succeeded' and ctx.retention_ms or ctx.failed_retention_ms
    if tonumber(retention) > 0 then
      call('PEXPIRE', w.key, retention)
      call('PEXPIRE', w.out, retention)
    end
  end

  -- Cancels every job of the workflow still waiting or running, and the steps not started.
  local function cancel_rest(ctx, w, reason)
    local p = ctx.p
    for _, step in ipairs(w.def.steps) do
      local f = call('HMGET', w.key, 'st:' .. step.n, 'jobs:' .. step.n)
      if f[1] == 'pending' or f[1] == 'queued' then
        call('HSET', w.key, 'st:' .. step.n, 'canceled', 'ended_at:' .. step.n, ctx.ts)
      end
      -- a failed fan-out step may still have items running
      for item = 0, num(f[2], 0) - 1 do
        local job = load_job(p, step_job_id(w.id, step.index, item))
        if job and not TERMINAL[job.state] then
          detach(ctx, job, false)
          finish(ctx, job, 'canceled', 'cancel_reason', reason)
          if ACTIVE[job.state] and job.worker then signal_worker(p, job.worker, 'cancel:' .. job.id) end
        end
      end
    end
  end

  local function fail(ctx, w, step, message)
    local err = 'step ' .. step .. ' failed: ' .. message
    ended(ctx, w, 'failed', 'error', err, 'failed_step', step)
    cancel_rest(ctx, w, 'workflow ' .. w.id .. ' failed')
    event(ctx, w, 'workflow.failed', 'step', step, 'error', err)
  end

  -- Cancels the jobs of one step that are still waiting or running (an optional step that failed).
  local function cancel_rest_of_step(ctx, w, name)
    local step = w.steps[name]
    local count = num(call('HGET', w.key, 'jobs:' .. name), 0)
    for item = 0, count - 1 do
      local job = load_job(ctx.p, step_job_id(w.id, step.index, item))
      if job and not TERMINAL[job.state] then
        detach(ctx, job, false)
        finish(ctx, job, 'canceled', 'cancel_reason', 'step ' .. name .. ' of workflow ' .. w.id .. ' failed')
        if ACTIVE[job.state] and job.worker then signal_worker(ctx.p, job.worker, 'cancel:' .. job.id) end
      end
    end
  end

  local ready

  -- A step ended (every item of a fan-out, or its first failure): record it, then
  -- fail the workflow, or release the steps that were waiting for it.
  local function step_ended(ctx, w, name, state, message)
    local fields = { 'st:' .. name, state, 'ended_at:' .. name, ctx.ts }
    if message then fields[#fields + 1] = 'err:' .. name; fields[#fields + 1] = message end
    call('HSET', w.key, unpack(fields))
    call('HINCRBY', w.key, 'left', -1)
    local step = w.steps[name]
    -- a fan-out that failed at one item: its other items go first, whatever follows (the
    -- workflow may end below, failed, or succeeded when the step was optional and the last)
    if state ~= 'succeeded' and step.e then cancel_rest_of_step(ctx, w, name) end
    if state == 'succeeded' then
      event(ctx, w, 'workflow.step_succeeded', 'step', name)
    else
      -- said before the workflow's end it may cause; `optional` 1: the workflow goes on without it
      event(ctx, w, 'workflow.step_failed', 'step', name, 'error', message or state, 'optional', step.opt and '1' or '0')
      if not step.opt then
        fail(ctx, w, name, message or state)
        return
      end
    end
    for _, next_step in ipairs(step.dn or {}) do
      if w.state ~= 'running' then return end
      if call('HINCRBY', w.key, 'need:' .. next_step, -1) == 0 then ready(ctx, w, next_step) end
    end
    -- (a step released above may have ended the workflow already, or ended it with the last step)
    if w.state == 'running' and tonumber(call('HGET', w.key, 'left')) == 0 then
      ended(ctx, w, 'succeeded')
      event(ctx, w, 'workflow.succeeded')
    end
  end

  -- The result a reference `ref` ({ r = its text, s = step, p = path }) points to, or nil and why not.
  -- A step that failed but was optional has no result: a reference to it gives null.
  local function resolve_ref(w, ref)
    local out = call('HGET', w.out, ref.s)
    if not out then
      if call('HGET', w.key, 'st:' .. ref.s) == 'succeeded' then
        return nil, 'reference ' .. ref.r .. ': step ' .. ref.s .. ' has no result'
      end
      return 'null'
    end
    local value, why = resolve(out, ref.p, 'the result of step ' .. ref.s)
    if not value then return nil, 'reference ' .. ref.r .. ' does not resolve: ' .. why end
    return value
  end

  -- The step's payload from its template: text, references and (in a fan-out) the item's parts.
  local function payload_of(w, step, item_text)
    local parts = {}
    for _, seg in ipairs(step.t) do
      if type(seg) == 'string' then
        parts[#parts + 1] = seg
      elseif seg.s then
        local value, why = resolve_ref(w, seg)
        if not value then return nil, why end
        parts[#parts + 1] = value
      else
        local value, why = resolve(item_text, seg.p, 'the item')
        if not value then return nil, 'reference ' .. seg.r .. ' does not resolve: ' .. why end
        parts[#parts + 1] = value
      end
    end
    local payload = table.concat(parts)
    local max = tonumber(w.def.max_payload)
    if max and #payload > max then
      return nil, 'its payload is ' .. #payload .. ' bytes once references are resolved, over the ' .. max .. '-byte limit'
    end
    return payload
  end

  -- Submits one job of a step (the prepared arguments, its id and payload filled in), in the
  -- workflow's place in line. Returns nil, or why the submit was refused.
  local function submit_step_job(ctx, w, step, item, payload)
    local args = {}
    for i, value in ipairs(step.a) do args[i] = value end
    local id = step_job_id(w.id, step.index, item)
    args[1] = id
    args[11] = payload
    call('HSET', w.key, 'j:' .. id, step.n .. '#' .. item)
    local ok, why = pcall(submit_job, ctx, args, 1, w.seq)
    if not ok then return type(why) == 'table' and why.err or tostring(why) end
    return nil
  end

  -- The step's needs have all ended: resolve its references and queue its job(s), or fail it.
  ready = function(ctx, w, name)
    local step = w.steps[name]
    call('HSET', w.key, 'st:' .. name, 'queued', 'ready_at:' .. name, ctx.ts)
    local why
    if step.e then
      local list
      list, why = resolve_ref(w, step.e)
      if list then
        local start = ws(list, 1)
        if string.sub(list, start, start) ~= '[' then
          why = 'for_each ' .. step.e.r .. ' is ' .. kind_at(list, start) .. ', not an array'
        else
          local items = array_items(list, start, MAX_ITEMS + 1)
          if #items > MAX_ITEMS then
            why = 'for_each ' .. step.e.r .. ' has more than ' .. MAX_ITEMS .. ' items, the limit'
          elseif #items == 0 then
            call('HSET', w.key, 'jobs:' .. name, 0)
            call('HSET', w.out, name, '[]')
            step_ended(ctx, w, name, 'succeeded')
            return
          else
            -- every payload first: a reference that does not resolve queues none of them
            local payloads = {}
            for i, item in ipairs(items) do
              payloads[i], why = payload_of(w, step, string.sub(list, item[1], item[2] - 1))
              if not payloads[i] then break end
            end
            if not why then
              call('HSET', w.key, 'jobs:' .. name, #items, 'ileft:' .. name, #items)
              for i = 1, #items do
                why = submit_step_job(ctx, w, step, i - 1, payloads[i])
                if why then break end
              end
            end
          end
        end
      end
    else
      local payload
      payload, why = payload_of(w, step, nil)
      if payload then
        call('HSET', w.key, 'jobs:' .. name, 1)
        why = submit_step_job(ctx, w, step, 0, payload)
      end
    end
    -- (a fan-out whose later item could not be queued: step_ended cancels its earlier items)
    if why then step_ended(ctx, w, name, 'failed', why) end
  end

  -- A job of a step ended (called by `finish` for every job with `opt` fields).
  function workflows.step_ended(ctx, job, state)
    local p = ctx.p
    local key = job_key(p, job.id)
    local id = call('HGET', key, 'workflow_id')
    if not id then return end
    local f = call('HMGET', wf_key(p, id), 'j:' .. job.id, 'state')
    local at = f[1]
    if not at then return end -- a job that only carries a workflow label
    if f[2] ~= 'running' then return end -- the workflow ended (and is canceling its jobs)
    local w = load(p, id)
    local sep = string.find(at, '#', 1, true)
    local name, item = string.sub(at, 1, sep - 1), string.sub(at, sep + 1)
    if call('HGET', w.key, 'st:' .. name) ~= 'queued' then return end -- the step already ended
    local step = w.steps[name]
    if state == 'succeeded' then
      local result = call('HGET', key, 'result') or 'null'
      if not step.e then
        call('HSET', w.out, name, result)
        step_ended(ctx, w, name, 'succeeded')
        return
      end
      call('HSET', w.out, name .. '#' .. item, result)
      if call('HINCRBY', w.key, 'ileft:' .. name, -1) > 0 then return end
      local count = num(call('HGET', w.key, 'jobs:' .. name), 0)
      local fields = {}
      for i = 0, count - 1 do fields[#fields + 1] = name .. '#' .. i end
      local results = call('HMGET', w.out, unpack(fields))
      for i = 1, count do results[i] = results[i] or 'null' end
      call('HSET', w.out, name, '[' .. table.concat(results, ',') .. ']')
      step_ended(ctx, w, name, 'succeeded')
      return
    end
    local message = 'job ' .. job.id .. ' ' .. state
    if state == 'failed' then
      local raw = call('HGET', key, 'error')
      local ok, err = pcall(cjson.decode, raw or '')
      if ok and type(err) == 'table' and type(err.message) == 'string' then message = message .. ': ' .. err.message end
    else
      local reason = call('HGET', key, state == 'canceled' and 'cancel_reason' or 'expire_reason')
      if reason and reason ~= '' then message = message .. ': ' .. reason end
    end
    step_ended(ctx, w, name, 'failed', message)
  end

  -- Accepts a workflow (def: workflow.ts's prepared definition, as JSON) and queues its first steps.
  function workflows.submit(ctx, id, tenant, priority, def_json)
    local p = ctx.p
    local key = wf_key(p, id)
    if call('EXISTS', key) == 1 then raise('DUPLICATE_ID', 'workflow ' .. id .. ' already exists') end
    local def = cjson.decode(def_json)
    local seq = call('INCR', p .. 'seq')
    if seq == 1 then call('SET', schema_key(p), SCHEMA_VERSION) end
    local fields = { 'id', id, 'tenant', tenant, 'state', 'running', 'priority', priority, 'seq', seq,
      'submitted_at', ctx.ts, 'def', def_json, 'steps', #def.steps, 'left', #def.steps }
    for _, step in ipairs(def.steps) do
      fields[#fields + 1] = 'st:' .. step.n; fields[#fields + 1] = 'pending'
      fields[#fields + 1] = 'need:' .. step.n; fields[#fields + 1] = #(step.needs or {})
    end
    call('HSET', key, unpack(fields))
    call('ZADD', p .. 'wfs', ctx.ts, id .. '|' .. tenant)
    -- one tenant's, so that its listing does not page through every other tenant's
    local of_tenant = p .. 'wfs:tenant:' .. tenant
    call('ZADD', of_tenant, ctx.ts, id)
    -- the listings keep what retention keeps: entries older than the longer retention go (0: kept for ever)
    local kept, failed_kept = tonumber(ctx.retention_ms) or 0, tonumber(ctx.failed_retention_ms) or 0
    if kept > 0 and failed_kept > 0 then
      local before = string.format('(%d', ctx.now - math.max(kept, failed_kept))
      call('ZREMRANGEBYSCORE', p .. 'wfs', '-inf', before)
      call('ZREMRANGEBYSCORE', of_tenant, '-inf', before)
    end
    local w = load(p, id)
    event(ctx, w, 'workflow.submitted')
    for _, step in ipairs(def.steps) do
      if w.state ~= 'running' then break end
      if #(step.needs or {}) == 0 then ready(ctx, w, step.n) end
    end
    return w.state
  end

  -- Cancels a running workflow and every step job still waiting or running. Returns its state and whether it changed.
  function workflows.cancel(ctx, id, reason)
    local w = load(ctx.p, id)
    if not w then raise('NOT_FOUND', 'workflow ' .. id .. ' does not exist') end
    if w.state ~= 'running' then return { w.state, 0 } end
    ended(ctx, w, 'canceled', 'cancel_reason', reason)
    cancel_rest(ctx, w, reason ~= '' and reason or ('workflow ' .. id .. ' canceled'))
    event(ctx, w, 'workflow.canceled')
    return { 'canceled', 1 }
  end

  -- A workflow's state, or nil when it does not exist (or its retention passed).
  function workflows.state(p, id)
    return call('HGET', wf_key(p, id), 'state')
  end

  -- The workflow step a job is (step name), or nil: a step's job is retried by its workflow, not by hand.
  function workflows.step_of(p, job_id)
    local id = call('HGET', job_key(p, job_id), 'workflow_id')
    local at = id and call('HGET', wf_key(p, id), 'j:' .. job_id)
    if not at then return nil end
    return string.sub(at, 1, string.find(at, '#', 1, true) - 1), id
  end
end
