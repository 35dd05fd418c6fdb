-- get_job: one consistent read of a job with its requirement class and, while
-- queued, its position (jobs ahead of it in its class). The job's fields include
-- its duration class (`dclass`), which the requirement class keeps for its jobs.
-- KEYS[1] shard anchor
-- ARGV [1] job id
-- Returns { flat job hash, class definition, routable ('0' | '1'), position (-1 unless queued),
--   payload, lease_until ('' unless held) } or false.
local function get_job(keys, args)
  local p = prefix_of(keys[1])
  local flat = call('HGETALL', job_key(p, args[1]))
  if #flat == 0 then return false end
  local job = hash_to_table(flat)
  local class = call('HMGET', class_key(p, job.class), 'def', 'routable', 'dclass')
  -- the duration class is kept on the requirement class (60-submit.lua); shown on the job as before
  if not job.dclass and class[3] then
    flat[#flat + 1] = 'dclass'
    flat[#flat + 1] = class[3]
  end
  local position = -1
  if job.state == 'queued' then
    position = call('ZRANK', queue_key(p, job.class), args[1]) or -1
  end
  local lease = ''
  if ACTIVE[job.state] and job.worker then lease = call('ZSCORE', p .. 'leases', job.worker) or '' end
  local payload = job.payload or call('GET', payload_key(p, args[1])) or ''
  if job.pn then payload = pieces.join(payload, job) end
  return { flat, class[1] or '{}', class[2] or '1', position, payload, lease }
end

register('emp_get_job', get_job, true)
