-- complete: one or more attempts of one worker succeeded; optionally each claims
-- the worker's next job in the same call. A busy worker running many jobs at once
-- sends the completions that are ready together, one round trip for all of them.
-- Each completion is checked against its fencing token and applied on its own:
-- one whose lease was lost fails alone and changes nothing.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] worker id to claim for ('' none)  [8] affinity bound in ms (as emp_claim's [9]),
--   then per completion:
--   job id, fencing token, result (JSON)
-- Returns one reply per completion, in order: { 'succeeded' } or
-- { 'succeeded', <claim reply as `claim` returns it...> }, or { 'error', '<CODE> <message>' }
-- (NOT_FOUND, LEASE_LOST).
-- Errors: UNKNOWN_WORKER (before anything changes).
local function complete_one(ctx, next_worker, w, id, token, result)
  local job = fenced(ctx, id, token)
  detach(ctx, job, next_worker ~= nil)
  finish(ctx, job, 'succeeded', 'result', result)
  if not next_worker then return { 'succeeded' } end
  local claimed = claim_for(ctx, next_worker, nil, w)
  table.insert(claimed, 1, 'succeeded')
  return claimed
end

local function complete(keys, args)
  local ctx = context(keys, args)
  local next_worker = args[7] ~= '' and args[7] or nil
  ctx.affinity_wait_ms = tonumber(args[8])
  local w = next_worker and load_worker(ctx.p, next_worker, ctx.now)
  -- a lone completion's error is the call's error: no protected call needed
  if #args == 11 then return { complete_one(ctx, next_worker, w, args[9], args[10], args[11]) } end
  local replies = {}
  for i = 9, #args - 2, 3 do
    local ok, reply = pcall(complete_one, ctx, next_worker, w, args[i], args[i + 1], args[i + 2])
    if ok then
      replies[#replies + 1] = reply
    else
      replies[#replies + 1] = { 'error', type(reply) == 'table' and reply.err or tostring(reply) }
    end
  end
  return replies
end

register('emp_complete', complete)
