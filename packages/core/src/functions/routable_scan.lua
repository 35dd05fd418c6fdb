-- routable_scan: go on checking the classes no worker could run so far against
-- a newly registered capability profile (emp_register_worker checks the first
-- page), one bounded page per call.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] profile id  [8] SSCAN cursor of `unroutable`
-- Returns { classes that became routable, cursor ('0': done) }.
local function routable_scan(keys, args)
  local ctx = context(keys, args)
  local became, cursor = check_routable(ctx, args[7], args[8])
  return { became, cursor }
end

register('emp_routable_scan', routable_scan)
