-- workflow_cancel: end a running workflow as `canceled`, canceling every step job still
-- waiting or running (their workers are told, as for a canceled job). A workflow that
-- has ended is left as it is.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] workflow id  [8] reason ('' none)
-- Returns { state, changed (0|1) }. Errors: NOT_FOUND.
local function workflow_cancel(keys, args)
  return workflows.cancel(context(keys, args), args[7], args[8])
end

register('emp_workflow_cancel', workflow_cancel)
