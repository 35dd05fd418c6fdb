-- machine_command: record an operator's command for a machine (drain, restart or
-- shut down the machine, or restart one service on it; prefetch a model into its
-- model cache or evict one from it; load one it holds into an idle GPU) and hand it to the machine agent through the
-- machine's command stream; the agent executes it, reports the outcome through
-- machine_command_done and its state through register_machine.
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] machine id  [8] action ('drain' | 'restart' | 'shutdown' | 'prefetch' | 'evict' | 'load')
--   [9] service ('' the whole machine)  [10] who asked ('' unknown)  [11] reason
--   [12] model (prefetch, evict and load name one; the other actions none: '' or absent, as callers
--   written before models came pass nothing)
-- Returns the command's id in the stream `machine-commands:<machine>`. Errors: NOT_FOUND, BAD_STATE.
local MODEL_ACTIONS = { prefetch = true, evict = true, load = true }
local MACHINE_ACTIONS = { drain = true, restart = true, shutdown = true, prefetch = true, evict = true, load = true }

local function machine_command(keys, args)
  local ctx = context(keys, args)
  local p, machine, action, service, model = ctx.p, args[7], args[8], args[9], args[12] or ''
  if not MACHINE_ACTIONS[action] then
    raise('BAD_STATE', 'a machine command is drain, restart, shutdown, prefetch, evict or load, not ' .. tostring(action))
  end
  if MODEL_ACTIONS[action] then
    if model == '' then raise('BAD_STATE', action .. ' names the model to ' .. action) end
    if service ~= '' then raise('BAD_STATE', action .. ' applies to the machine\'s models, not to a service') end
  elseif model ~= '' then
    raise('BAD_STATE', action .. ' takes no model (only prefetch, evict and load do)')
  end
  local key = machine_key(p, machine)
  if call('EXISTS', key) == 0 then raise('NOT_FOUND', 'machine ' .. machine .. ' is not registered in this shard') end
  local id = call('XADD', p .. 'machine-commands:' .. machine, 'MAXLEN', '~', 1000, '*', 'action', action,
    'service', service, 'model', model, 'by', args[10], 'reason', args[11], 'ts', ctx.now)
  call('HSET', key, 'last_command', action, 'last_command_id', id, 'last_command_service', service,
    'last_command_model', model, 'last_command_at', ctx.now)
  events_append(p, ctx.maxlen, 'type', 'machine.command', 'machine', machine, 'action', action, 'service', service,
    'model', model, 'command', id, 'by', args[10], 'ts', ctx.now)
  return id
end

register('emp_machine_command', machine_command)
