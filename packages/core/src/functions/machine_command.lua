-- machine_command: record an operator's command for a machine (drain, restart or
-- shut down the machine, or restart one service on it) and hand it to the machine
-- agent through the machine's command stream; the agent executes it, reports the
-- outcome through machine_command_done and its state through register_machine.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] machine id  [8] action ('drain' | 'restart' | 'shutdown')  [9] service ('' the whole machine)
--   [10] who asked ('' unknown)  [11] reason
-- Returns the command's id in the stream `machine-commands:<machine>`. Errors: NOT_FOUND, BAD_STATE.
local function machine_command(keys, args)
  local ctx = context(keys, args)
  local p, machine, action, service = ctx.p, args[7], args[8], args[9]
  if action ~= 'drain' and action ~= 'restart' and action ~= 'shutdown' then
    raise('BAD_STATE', 'a machine command is drain, restart or shutdown, not ' .. tostring(action))
  end
  local key = machine_key(p, machine)
  if call('EXISTS', key) == 0 then raise('NOT_FOUND', 'machine ' .. machine .. ' is not registered in this shard') end
  local id = call('XADD', p .. 'machine-commands:' .. machine, 'MAXLEN', '~', 1000, '*', 'action', action,
    'service', service, 'by', args[10], 'reason', args[11], 'ts', ctx.now)
  call('HSET', key, 'last_command', action, 'last_command_id', id, 'last_command_service', service,
    'last_command_at', ctx.now)
  events_append(p, ctx.maxlen, 'type', 'machine.command', 'machine', machine, 'action', action, 'service', service,
    'command', id, 'by', args[10], 'ts', ctx.now)
  return id
end

register('emp_machine_command', machine_command)
