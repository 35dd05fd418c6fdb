-- progress: record the attempt's progress; a worker that reports progress is
-- alive, so this renews its lease too.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] job id  [8] fencing token  [9] progress (JSON)
-- Returns the job's state. Errors: NOT_FOUND, LEASE_LOST.
local function progress(keys, args)
  local ctx = context(keys, args)
  local id = args[7]
  local job = fenced(ctx, id, args[8])
  call('HSET', job_key(ctx.p, id), 'progress', args[9], 'updated_at', ctx.ts)
  renew_lease(ctx.p, job.worker, ctx.now, ctx.lease_ms)
  job_event(ctx, id, 'job.progress', job.state, 'tenant', job.tenant, 'service', job.service, 'progress', args[9])
  return job.state
end

register('emp_progress', progress)
