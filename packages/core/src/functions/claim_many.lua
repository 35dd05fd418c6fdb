-- claim_many: what `claim` does, up to n times in one call, for a worker with n
-- free slots (starting, or woken with several free): each claim takes the best
-- job left as a claim of its own would (priority order across classes, model
-- affinity, lanes), each job gets its own fencing token, and the call ends at the
-- first claim that finds none (which records the worker idle, as `claim` does).
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] worker id  [8] class the worker was woken for ('' none)
--   [9] affinity bounds (as emp_claim's [9])  [10] n, the most jobs to take (held to 1..64;
--   the broker refuses other counts before calling)
-- Returns the claims' replies, in order, each as `claim` returns it: the jobs
-- taken, then, when fewer than n were, the reply of the claim that found none
-- ({ 'none', retry_at, worker state } or { ..., 'more' }).
-- Errors: UNKNOWN_WORKER.
local MOST_CLAIMS = 64

-- Up to n claims for the worker into `replies`, ending at the first that finds none.
local function claims(ctx, worker, woken, w, n, replies)
  for i = 1, n do
    w.want = n - i + 1
    local reply = claim_for(ctx, worker, woken, w)
    replies[i] = reply
    if reply[1] ~= 'job' then return end
    -- as the next call of its own would find it: a wake-up passed on once, no paused walk left
    woken = nil
    w.cursor, w.cursor_set = nil, false
  end
end

local function claim_many(keys, args)
  local ctx = context(keys, args)
  local worker = args[7]
  local n = math.min(math.max(math.floor(tonumber(args[10]) or 1), 1), MOST_CLAIMS)
  local w = load_worker(ctx.p, worker, ctx.now)
  affinity.bounds(ctx, args[9])
  local woken = args[8] ~= '' and args[8] or nil
  local replies = {}
  -- the claims' additions to the worker's set, made once as the call ends; each claim may start
  -- or go on with a run of one class's jobs (deferred.start_run)
  if n > 1 then deferred.keep_set_changes(w) end
  local ok, err = pcall(claims, ctx, worker, woken, w, n, replies)
  -- a function's writes stay when it raises: the jobs taken before an error (a class or profile
  -- found corrupt) leave their queue and join the worker's set all the same
  deferred.settle_run(ctx, w)
  deferred.apply_set(w)
  if not ok then error(err, 0) end
  return replies
end

register('emp_claim_many', claim_many)
