-- progress: record the progress of one or more attempts; a worker that reports
-- progress is alive, so this renews its lease too (once per worker per call). A
-- process running many jobs sends the reports that are due together (one call per
-- tick, not one per job: call-batch.ts). Each report is checked against its
-- fencing token and applied on its own: one whose lease was lost fails alone.
-- KEYS[1] shard anchor
-- ARGV prelude, then per report: [7] job id  [8] fencing token  [9] progress (JSON)
-- Returns one reply per report, in order: { <state> } or { 'error', '<CODE> <message>' }
-- (NOT_FOUND, LEASE_LOST); a lone report's error is the call's, as it always was.

local function progress_one(ctx, renewed, id, token, report)
  local job = fenced(ctx, id, token)
  call('HSET', job.key, 'progress', report, 'updated_at', ctx.ts)
  if not renewed[job.worker] then
    renew_lease(ctx.p, job.worker, ctx.now, ctx.lease_ms)
    renewed[job.worker] = true
  end
  job_event(ctx, id, 'job.progress', job.state, 'tenant', job.tenant, 'service', job.service, 'progress', report)
  return job.state
end

local function progress(keys, args)
  local ctx = context(keys, args)
  local renewed = {}
  -- a lone report's error is the call's error: no protected call needed
  if #args == 9 then return { { progress_one(ctx, renewed, args[7], args[8], args[9]) } } end
  local replies = {}
  for i = 7, #args - 2, 3 do
    local ok, reply = pcall(progress_one, ctx, renewed, args[i], args[i + 1], args[i + 2])
    replies[#replies + 1] = ok and { reply } or { 'error', type(reply) == 'table' and reply.err or tostring(reply) }
  end
  return replies
end

register('emp_progress', progress)
