-- workflow_submit: accept a workflow into the shard and queue the steps that need nothing
-- (docs/workflows.md; the transitions are in includes/65-workflows.lua).
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] workflow id  [8] tenant  [9] priority  [10] definition (JSON, as workflow.ts prepares it)
--   [11] idempotency key ('<tenant>:<key>', '' none)  [12] request fingerprint  [13] idempotency ttl ms
-- Returns { state, id, duplicate }: the state after the call ('running', or 'failed' when a first step
-- could not be queued); for a repeat of a key still kept, the first workflow's id and state, duplicate 1.
-- Errors: DUPLICATE_ID, IDEMPOTENCY_CONFLICT (the key was used for a different workflow).
local function workflow_submit(keys, args)
  local ctx = context(keys, args)
  local id, idem, fingerprint = args[7], args[11], args[12]
  local idem_key
  if idem ~= '' then
    -- the jobs' idempotency keys are `idem:`; a workflow's are its own, so the same key names one of each
    idem_key = ctx.p .. 'wfidem:' .. idem
    local first_id = idempotent_original(idem_key, fingerprint, 'a different workflow (%s)')
    if first_id then
      -- the first workflow as it is now (running, or how it ended)
      local state = workflows.state(ctx.p, first_id)
      if state then return { state, first_id, 1 } end
      -- its retention passed before its key's TTL: nothing left to answer with, so this submit is a new one
    end
  end
  local state = workflows.submit(ctx, id, args[8], args[9], args[10])
  if idem_key then call('SET', idem_key, id .. '|' .. fingerprint, 'PX', args[13]) end
  return { state, id, 0 }
end

register('emp_workflow_submit', workflow_submit)
