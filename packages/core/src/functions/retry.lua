-- retry: put a failed, canceled or expired job back in the queue under the same
-- id, with a fresh attempts budget and its original place in line.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] job id
-- Returns the new state ('queued'). Errors: NOT_FOUND, NOT_RETRYABLE (job not finished, or succeeded, or
-- a step of a workflow: its workflow decided what followed its end).
local function retry(keys, args)
  local ctx = context(keys, args)
  local job = must_exist(ctx.p, args[7])
  if not (job.state == 'failed' or job.state == 'canceled' or job.state == 'expired') then
    raise('NOT_RETRYABLE', 'job ' .. job.id .. ' is ' .. job.state .. '; only failed, canceled or expired jobs can be retried')
  end
  local step, workflow = workflows.step_of(ctx.p, job.id)
  if step then
    raise('NOT_RETRYABLE', 'job ' .. job.id .. ' is step ' .. step .. ' of workflow ' .. workflow ..
      ', which has moved on from it; submit the workflow again to rerun it')
  end
  local key = job_key(ctx.p, job.id)
  call('PERSIST', key)
  if job.payload_apart then call('PERSIST', payload_key(ctx.p, job.id)) end
  call('HSET', key, 'failures', 0, 'infra_failures', 0, 'retried_at', ctx.now)
  call('HINCRBY', key, 'manual_retries', 1)
  call('HDEL', key, 'finished_at', 'result', 'queue_deadline', 'start_deadline', 'cancel_reason',
    'expire_reason', 'avoid_worker', 'avoid_until')
  requeue(ctx, job, nil)
  job_event(ctx, job.id, 'job.queued', 'queued', 'tenant', job.tenant, 'service', job.service, 'reason', 'manual_retry')
  return 'queued'
end

register('emp_retry', retry)
