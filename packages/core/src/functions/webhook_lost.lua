-- webhook_lost: records that the webhook service lost events of a pool's stream (trimmed by its
-- MAXLEN before the consumer group read them, or pending when they were trimmed) as an operator
-- event on the outbox's own stream (events: webhook.events.lost), so it is on record in Redis
-- besides the service's log and metric.
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now ('' = server time)  [2] pool  [3] consumer group  [4] how many entries were lost
--   [5] the group's last-delivered id before them ('' unknown)  [6] the oldest entry kept after them ('' unknown)
-- Returns the id of the event.
local function webhook_lost(keys, args)
  local p = prefix_of(keys[1])
  local now = clock(args[1])
  return outbox_event(p, now, 'webhook.events.lost', 'pool', args[2], 'group', args[3], 'count', args[4],
    'after', args[5], 'before', args[6])
end

register('emp_webhook_lost', webhook_lost)
