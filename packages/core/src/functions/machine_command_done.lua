-- machine_command_done: the machine agent reports what became of an operator's
-- command (see machine_command): the outcome is recorded on the machine hash,
-- with the command's id as the point its agent resumes from after a restart, and
-- announced as a machine.command.done event.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] machine id  [8] command id (its entry in `machine-commands:<machine>`)
--   [9] outcome ('ok' | 'failed')  [10] message
-- Returns 1 when the command is the newest handled so far (the resume point moved), else 0.
-- Errors: NOT_FOUND (machine or command), BAD_STATE (outcome).
local function stream_id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function machine_command_done(keys, args)
  local ctx = context(keys, args)
  local p, machine, command, outcome, message = ctx.p, args[7], args[8], args[9], args[10]
  if outcome ~= 'ok' and outcome ~= 'failed' then
    raise('BAD_STATE', 'a command outcome is ok or failed, not ' .. tostring(outcome))
  end
  local key = machine_key(p, machine)
  if call('EXISTS', key) == 0 then raise('NOT_FOUND', 'machine ' .. machine .. ' is not registered in this shard') end
  local entry = call('XRANGE', p .. 'machine-commands:' .. machine, command, command)[1]
  if not entry then raise('NOT_FOUND', 'machine ' .. machine .. ' has no command ' .. command) end
  local fields = hash_to_table(entry[2])

  local moved = 0
  local handled = call('HGET', key, 'last_command_handled')
  local ms, seq = stream_id_parts(command)
  local last_ms, last_seq = -1, -1
  if handled then last_ms, last_seq = stream_id_parts(handled) end
  if ms > last_ms or (ms == last_ms and seq > last_seq) then
    call('HSET', key, 'last_command_handled', command, 'last_command_outcome', outcome,
      'last_command_message', message, 'last_command_done_at', ctx.ts)
    moved = 1
  end
  events_append(p, ctx.maxlen, 'type', 'machine.command.done', 'machine', machine, 'command', command,
    'action', fields.action or '', 'service', fields.service or '', 'model', fields.model or '', 'outcome', outcome, 'message', message, 'ts', ctx.ts)
  return moved
end

register('emp_machine_command_done', machine_command_done)
