-- register_machine: announce a machine (or refresh its status snapshot).
-- KEYS[1] shard anchor
-- ARGV prelude, then [7] machine id  [8] state  [9..] field/value pairs stored as given
-- Returns 1 when the machine is new, else 0.
local function register_machine(keys, args)
  local ctx = context(keys, args)
  local p, machine, state = ctx.p, args[7], args[8]
  local key = machine_key(p, machine)
  local fresh = call('EXISTS', key) == 0
  local previous = call('HGET', key, 'state')
  call('HSET', key, 'id', machine, 'state', state, 'last_seen', ctx.now, unpack(args, 9))
  if fresh then call('HSET', key, 'registered_at', ctx.now) end
  call('ZADD', p .. 'machines', ctx.now, machine)
  call('ZREM', p .. 'machines:offline', machine)
  if previous ~= state then
    call('HSET', key, 'state_since', ctx.now)
    events_append(p, ctx.maxlen, 'type', 'machine.' .. state, 'machine', machine, 'state', state, 'ts', ctx.now)
  end
  return fresh and 1 or 0
end

register('emp_register_machine', register_machine)
