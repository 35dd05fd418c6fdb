-- machine_process: the machine agent announces a transition of a process it
-- supervises (started, exited, restarting, failed after a crash loop, stopped),
-- so that the monitor can show each process's restart history. The machine's
-- full status follows through register_machine.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] machine id  [8] process name  [9] state
--   [10..] field/value pairs added to the event as given (restarts, exit_code, signal, pid, delay_ms, ...)
-- Returns the event's stream id. Errors: NOT_FOUND.
local function machine_process(keys, args)
  local ctx = context(keys, args)
  local p, machine = ctx.p, args[7]
  local key = machine_key(p, machine)
  if call('EXISTS', key) == 0 then raise('NOT_FOUND', 'machine ' .. machine .. ' is not registered in this shard') end
  local fields = { 'type', 'machine.process', 'machine', machine, 'process', args[8], 'state', args[9] }
  for i = 10, #args do table.insert(fields, args[i]) end
  table.insert(fields, 'ts')
  table.insert(fields, ctx.ts)
  return events_append(p, ctx.maxlen, unpack(fields))
end

register('emp_machine_process', machine_process)
