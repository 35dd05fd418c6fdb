-- complete: the attempt succeeded; optionally claim the worker's next job in the
-- same call (one round trip per job for a busy worker).
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] job id  [8] fencing token  [9] result (JSON)  [10] worker id to claim for ('' none)
-- Returns { 'succeeded' } or { 'succeeded', <claim reply...> }. Errors: NOT_FOUND, LEASE_LOST.
local function complete(keys, args)
  local ctx = context(keys, args)
  local job = fenced(ctx, args[7], args[8])
  local next_worker = args[10] ~= '' and args[10] or nil
  -- read before anything changes: an unknown worker must change nothing
  local w = next_worker and load_worker(ctx.p, next_worker)
  detach(ctx, job, next_worker ~= nil)
  finish(ctx, job, 'succeeded', { 'result', args[9] })
  if not next_worker then return { 'succeeded' } end
  local reply = claim_for(ctx, next_worker, nil, w)
  table.insert(reply, 1, 'succeeded')
  return reply
end

redis.register_function('emp_complete', complete)
