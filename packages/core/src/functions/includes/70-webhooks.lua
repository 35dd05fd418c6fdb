-- Shared by the webhook outbox functions (webhook_*.lua): keys under the
-- outbox's own anchor `emp:{_webhooks}:shard`.

-- Makes message `id`, now at the head of its chain (one job's messages to one
-- URL, sent in order), due: at once, or for a progress message no sooner than
-- `throttle_ms` after the chain's last delivered progress.
local function schedule_message(p, id, chain, kind, now, throttle_ms)
  local due = now
  if kind == 'job.progress' then
    local last = tonumber(call('GET', p .. 'throttle:' .. chain))
    if last and last + throttle_ms > due then due = last + throttle_ms end
  end
  call('HSET', p .. 'msg:' .. id, 'next_at', due)
  call('ZADD', p .. 'due', due, id)
end
