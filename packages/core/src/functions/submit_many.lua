-- submit_many: accept a batch of new jobs into the shard, each on its own. A
-- batch costs one round trip, one clock read and one command dispatch, which is
-- most of what submitting a small job costs Redis.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] job count, then that many jobs' arguments one after
-- another (see includes/60-submit.lua).
-- Returns one entry per job: { id, duplicate (0|1), routable (0|1) }, or
-- { 'error', '<CODE> message' } for a job refused (which changed nothing).
local function submit_many(keys, args)
  local ctx = context(keys, args)
  local replies = {}
  local at = PRELUDE + 2
  -- demand is counted once per class for the whole batch (demand.flush, 60-submit.lua)
  ctx.demand = {}
  -- what the batch's jobs leave of their classes, so that the next job of one reads nothing again (60-submit.lua)
  ctx.batch_classes = {}
  for i = 1, tonumber(args[PRELUDE + 1]) do
    local ok, reply, next_at = pcall(submit_job, ctx, args, at)
    if ok then
      replies[i] = reply
      at = next_at
    else
      -- submit_job raises before its first write, so the batch goes on after it
      replies[i] = { 'error', type(reply) == 'table' and reply.err or tostring(reply) }
      at = at + SUBMIT_HEADER + tonumber(args[at + 13])
    end
  end
  demand.flush(ctx)
  return replies
end

register('emp_submit_many', submit_many)
