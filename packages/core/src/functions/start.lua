-- start: the worker has what it needs (model loaded) and begins executing.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] job id  [8] fencing token
-- Returns the job's state ('running'). Errors: NOT_FOUND, LEASE_LOST.
local function start(keys, args)
  local ctx = context(keys, args)
  local id = args[7]
  local job = fenced(ctx, id, args[8])
  if job.state == 'running' then return 'running' end
  local key = job_key(ctx.p, id)
  call('HSET', key, 'state', 'running', 'started_at', ctx.ts)
  local timeout = tonumber(call('HGET', key, 'exec_timeout_ms'))
  if timeout then call('HSET', key, 'exec_deadline', ctx.now + timeout) end
  if job.timed or timeout then schedule(ctx.p, id) end
  job_event(ctx, id, 'job.running', 'running', 'tenant', job.tenant, 'service', job.service, 'worker', job.worker)
  return 'running'
end

register('emp_start', start)
