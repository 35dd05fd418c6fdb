-- workflow_submit: accept a workflow into the shard and queue the steps that need nothing
-- (docs/workflows.md; the transitions are in includes/65-workflows.lua).
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] workflow id  [8] tenant  [9] priority  [10] definition (JSON, as workflow.ts prepares it)
-- Returns the workflow's state after the call: 'running', or 'failed' when a first step could not be queued.
-- Errors: DUPLICATE_ID.
local function workflow_submit(keys, args)
  return workflows.submit(context(keys, args), args[7], args[8], args[9], args[10])
end

register('emp_workflow_submit', workflow_submit)
