-- submit_many: accept a batch of new jobs into the shard, each on its own. A
-- batch costs one round trip, one clock read and one command dispatch, which is
-- most of what submitting a small job costs Redis.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] job count, [8] idempotency ttl ms, [9] most classes the shard
-- may have queued ('' no limit), [10] class count k, then k times: requirement class id,
-- its definition (canonical JSON), its duration class; then each job's arguments one after
-- another, without those (includes/60-submit.lua, emp_submit_many's layout): what every job
-- of a call shares is sent and read once.
-- Returns one entry per job: { id, duplicate (0|1), routable (0|1) }, or
-- { 'error', '<CODE> message' } for a job refused (which changed nothing).
local function submit_many(keys, args)
  local ctx = context(keys, args)
  local replies = {}
  local classes = {}
  local at = PRELUDE + 5
  for _ = 1, tonumber(args[PRELUDE + 4]) do
    classes[args[at]] = { args[at + 1], args[at + 2] }
    at = at + 3
  end
  -- seq_want: the places in line of the batch's jobs, reserved by its first job's submit
  -- (seq_next and seq_last then, 60-submit.lua)
  ctx.submit_shared = { idem_ttl = args[PRELUDE + 2], max_classes = tonumber(args[PRELUDE + 3]), classes = classes,
    seq_want = tonumber(args[PRELUDE + 1]), seq_next = nil, seq_last = nil }
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
      at = at + SUBMIT_HEADER.shared + tonumber(args[at + SUBMIT_HEADER.shared - 1])
    end
  end
  demand.flush(ctx)
  return replies
end

register('emp_submit_many', submit_many)
