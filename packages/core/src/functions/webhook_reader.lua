-- webhook_reader: one webhook service instance at a time reads a pool's event stream (so a job's
-- events are queued in the order they happened, whichever instances run); the reader holds a
-- lease it renews, and when it stops renewing another instance takes over.
-- KEYS[1] webhook anchor emp:{_webhooks}:shard
-- ARGV [1] now (unused; the lease runs on Redis's clock)  [2] pool  [3] consumer  [4] lease ms
--   [5] '1' release (only the holder's own lease)
-- Returns 1 when `consumer` holds the pool's lease now, else 0.
local function webhook_reader(keys, args)
  local p = prefix_of(keys[1])
  local key, consumer = p .. 'reader:' .. args[2], args[3]
  local holder = call('GET', key)
  if args[5] == '1' then
    if holder == consumer then call('DEL', key) end
    return 0
  end
  if holder and holder ~= consumer then return 0 end
  call('SET', key, consumer, 'PX', args[4])
  return 1
end

register('emp_webhook_reader', webhook_reader)
