-- claim_fallback: cross-pool fallback. An idle worker of another pool (its home pool),
-- registered in this shard as a borrower, takes one job of this pool under the home
-- pool's stated policy: the job has waited here at least `after_ms`, the worker meets
-- its requirements (the same matching as any claim), and the job's expected duration
-- is at most `max_expected_s`, so that a long job never holds a fast-lane worker for
-- longer than its pool allows. The worker calls it only when its own pool had nothing
-- for it. A borrower is never put in this shard's `idle` set: this pool's submits wake
-- this pool's workers, never a borrower, and nothing here is written unless a job is
-- taken. The take is the ordinary one (fencing token, lease, `job.starting`), with the
-- event's `fallback` field saying why the job left its pool.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] worker id  [8] its home pool  [9] least wait in ms  [10] most expected
--   duration in s ('' no bound)  [11] expected duration in s assumed for a job without an
--   estimate ('' such jobs are taken only when [10] is '')
-- Returns the claim reply as emp_claim gives it, or { 'none', retry_at ('' none), worker state }:
-- retry_at is when the oldest job here it could take will have waited long enough.
-- Errors: UNKNOWN_WORKER (the worker is not registered in this shard).
local FALLBACK_BUDGET = 256

-- ms as seconds for a reason: '12 s', '0.3 s'
local function seconds(ms)
  return (string.gsub(string.format('%.1f', ms / 1000), '%.0$', '')) .. ' s'
end

local function claim_fallback(keys, args)
  local ctx = context(keys, args)
  local p, worker, home = ctx.p, args[7], args[8]
  local after = tonumber(args[9]) or 0
  local max_expected = tonumber(args[10])
  local unknown_expected = tonumber(args[11])
  local w = load_worker(p, worker, ctx.now)
  if w.state == 'draining' or w.state == 'offline' then return { 'none', '', w.state } end
  local lanes = profile_lanes(p, w.profile)
  local paused = nil
  if call('HLEN', p .. 'paused') > 0 then paused = hash_to_table(call('HGETALL', p .. 'paused')) end
  local retry_at = nil
  for _, class in ipairs(call('ZRANGE', p .. 'classes', '0', tostring(FALLBACK_BUDGET - 1))) do
    if profile_matches(p, w.profile, class) and not (paused and paused[load_class(p, class).service]) then
      local id, f, until_, behind
      if lanes then
        id, f, until_ = pick_in_lanes(p, class, worker, ctx.now, lanes)
      else
        id, f, until_, behind = pick_in(p, class, queue_key(p, class), worker, ctx.now, false, true)
      end
      if id then
        local waited = ctx.now - (tonumber(f[5]) or ctx.now)
        local expected = tonumber(call('HGET', job_key(p, id), 'route_estimate_s')) or unknown_expected
        local fits = max_expected == nil or (expected ~= nil and expected <= max_expected)
        if fits and waited >= after then
          local reason = 'waited ' .. seconds(waited) .. ' in ' .. string.match(p, '{(.*)}') ..
            ' (fallback after ' .. seconds(after) .. '); ' .. home .. ' had nothing for ' .. worker
          if expected ~= nil then reason = reason .. '; expected ' .. expected .. ' s' end
          if max_expected ~= nil then reason = reason .. ' (at most ' .. max_expected .. ' s)' end
          return take(ctx, id, f, class, worker, w, behind, nil, { 'fallback', reason, 'home_pool', home })
        elseif fits then
          retry_at = earlier(retry_at, (tonumber(f[5]) or ctx.now) + after)
        end
      end
      retry_at = earlier(retry_at, until_)
    end
  end
  return { 'none', retry_at and tostring(retry_at) or '', w.state or 'idle' }
end

register('emp_claim_fallback', claim_fallback)
