import { usePrivateRedis } from '@emp/testkit/private-redis';
import { describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { NotFoundError, ValidationError } from './errors';

const { redis } = usePrivateRedis();

describe('pausing a service', () => {
  it('stops claims of its jobs (others still run), wakes nobody for them, and resuming wakes an idle worker', async () => {
    const b = await Broker.connect({ redis });
    await b.registerWorker({ id: 'w', pool: 'standard', capabilities: { services: ['simulation', 'ollama'] } });
    expect(await b.setServicePaused('standard', 'simulation', true, { by: 'ops', reason: 'bad model' })).toBe(true);
    expect(await b.setServicePaused('standard', 'simulation', true)).toBe(false);
    expect(await b.pausedServices('standard')).toEqual([expect.objectContaining({ service: 'simulation', by: 'ops', reason: 'bad model' })]);

    const paused = await b.submit({ service: 'simulation', priority: 10 });
    const other = await b.submit({ service: 'ollama' });
    const first = await b.claim('standard', 'w');
    expect(first.job?.id).toBe(other.id); // the higher-priority paused job is skipped
    await b.complete(first.job!.lease, null);
    expect((await b.claim('standard', 'w')).job).toBeNull();
    expect(await redis.lrange(b.keys.signal('standard', 'w'), 0, -1)).toEqual([]);

    await b.submit({ service: 'simulation' });
    expect(await redis.lrange(b.keys.signal('standard', 'w'), 0, -1)).toEqual([]); // a submit wakes nobody for a paused service

    expect(await b.setServicePaused('standard', 'simulation', false)).toBe(true);
    expect(await redis.lrange(b.keys.signal('standard', 'w'), 0, -1)).toHaveLength(1);
    expect((await b.claim('standard', 'w')).job?.id).toBe(paused.id);
    const types = (await b.readEvents('standard', '0', { count: 1_000 })).map((e) => e.type);
    expect(types).toContain('service.paused');
    expect(types).toContain('service.resumed');
  });
});

describe('machine commands', () => {
  it('are recorded on the machine, appended to its command stream and announced', async () => {
    const b = await Broker.connect({ redis });
    await b.registerMachine('standard', 'm1', 'ready');
    const id = await b.machineCommand('standard', 'm1', 'restart', { service: 'comfyui', by: 'ops', reason: 'stuck' });
    const stream = await redis.xrange(b.keys.machineCommands('standard', 'm1'), '-', '+');
    expect(stream).toHaveLength(1);
    expect(stream[0]![0]).toBe(id);
    expect(stream[0]![1]).toEqual(expect.arrayContaining(['action', 'restart', 'service', 'comfyui', 'by', 'ops', 'reason', 'stuck']));
    expect((await b.machines('standard'))[0]).toMatchObject({ id: 'm1', last_command: 'restart', last_command_id: id });
    const event = (await b.readEvents('standard', '0', { count: 100 })).find((e) => e.type === 'machine.command');
    expect(event).toMatchObject({ machine: 'm1', action: 'restart', service: 'comfyui', command: id });

    await expect(b.machineCommand('standard', 'nope', 'drain')).rejects.toThrow(NotFoundError);
    await expect(b.machineCommand('standard', 'm1', 'reboot' as 'drain')).rejects.toThrow(ValidationError);
  });
});

describe('model commands (prefetch, evict, load)', () => {
  it('name their model in the command stream, on the machine and in the events; the other actions take none', async () => {
    const b = await Broker.connect({ redis });
    await b.registerMachine('standard', 'm1', 'ready');
    const prefetch = await b.machineCommand('standard', 'm1', { action: 'prefetch', model: 'sdxl.safetensors', by: 'planner', reason: 'rising demand' });
    expect((await b.machines('standard'))[0]).toMatchObject({ last_command: 'prefetch', last_command_id: prefetch, last_command_model: 'sdxl.safetensors' });
    const evict = await b.machineCommand('standard', 'm1', { action: 'evict', model: 'flux.safetensors' });
    const drain = await b.machineCommand('standard', 'm1', 'drain');
    expect((await b.machines('standard'))[0]).toMatchObject({ last_command: 'drain', last_command_model: '' });
    expect((await b.readMachineCommands('standard', 'm1', '0')).map((c) => [c.id, c.action, c.model, c.by, c.reason])).toEqual([
      [prefetch, 'prefetch', 'sdxl.safetensors', 'planner', 'rising demand'],
      [evict, 'evict', 'flux.safetensors', undefined, undefined],
      [drain, 'drain', undefined, undefined, undefined],
    ]);
    await b.machineCommandDone('standard', 'm1', prefetch, 'failed', 'no room');
    const events = (await b.readEvents('standard', '0', { count: 100 })).filter((e) => e.type.startsWith('machine.command'));
    expect(events).toEqual([
      expect.objectContaining({ type: 'machine.command', action: 'prefetch', model: 'sdxl.safetensors', command: prefetch, by: 'planner' }),
      expect.objectContaining({ type: 'machine.command', action: 'evict', model: 'flux.safetensors', command: evict }),
      expect.objectContaining({ type: 'machine.command', action: 'drain', command: drain }),
      expect.objectContaining({ type: 'machine.command.done', action: 'prefetch', model: 'sdxl.safetensors', command: prefetch, outcome: 'failed' }),
    ]);
    expect(events[2]).not.toHaveProperty('model', expect.anything());

    // model exactly for prefetch and evict, checked in TS and again in the function
    await expect(b.machineCommand('standard', 'm1', { action: 'prefetch' } as never)).rejects.toThrow(ValidationError);
    await expect(b.machineCommand('standard', 'm1', { action: 'evict', model: '' })).rejects.toThrow(ValidationError);
    await expect(b.machineCommand('standard', 'm1', { action: 'drain', model: 'sdxl' } as never)).rejects.toThrow(ValidationError);
    await expect(b.machineCommand('standard', 'm1', { action: 'prefetch', model: 'sdxl', service: 'comfyui' } as never)).rejects.toThrow(ValidationError);
    await expect(b.machineCommand('standard', 'nope', { action: 'prefetch', model: 'sdxl' })).rejects.toThrow(NotFoundError);
    const lua = (machine: string, action: string, service: string, model?: string) =>
      redis.fcall('emp_machine_command', 1, b.keys.anchor('standard'), '', '1000', '30000', '1000', '1000', '0', machine, action, service, '', '', ...(model === undefined ? [] : [model]));
    await expect(lua('m1', 'prefetch', '')).rejects.toThrow(/prefetch names the model/);
    await expect(lua('m1', 'restart', '', 'sdxl')).rejects.toThrow(/takes no model/);
    // a caller written before models came passes no model argument
    expect(await lua('m1', 'restart', '')).toMatch(/^\d+-\d+$/);
    await expect(lua('m1', 'load', '')).rejects.toThrow(/load names the model to load/);
    await expect(lua('m1', 'load', 'ollama', 'llama3.2')).rejects.toThrow(/load applies to the machine's models, not to a service/);
    await expect(lua('m1', 'warm', '', 'llama3.2')).rejects.toThrow(/a machine command is drain, restart, shutdown, prefetch, evict or load, not warm/);
  });

  it('load (the planner\'s warm load) names its model like prefetch and evict, on the machine, in the stream and in the events', async () => {
    const b = await Broker.connect({ redis });
    await b.registerMachine('standard', 'm2', 'ready');
    const load = await b.machineCommand('standard', 'm2', { action: 'load', model: 'video-14b', by: 'planner', reason: 'forecast 4/bucket' });
    expect((await b.machines('standard')).find((m) => m.id === 'm2')).toMatchObject({ last_command: 'load', last_command_id: load, last_command_model: 'video-14b' });
    expect((await b.readMachineCommands('standard', 'm2', '0')).map((c) => [c.action, c.model, c.by])).toEqual([['load', 'video-14b', 'planner']]);
    const events = (await b.readEvents('standard', '0', { count: 1_000 })).filter((e) => e.type === 'machine.command' && e.command === load);
    expect(events).toEqual([expect.objectContaining({ action: 'load', model: 'video-14b', by: 'planner' })]);
    await expect(b.machineCommand('standard', 'm2', { action: 'load', model: '' })).rejects.toThrow(ValidationError);
    await expect(b.machineCommand('standard', 'm2', { action: 'load', model: 'x', service: 'ollama' } as never)).rejects.toThrow(ValidationError);
  });
});

describe('machine command acknowledgements', () => {
  it('record the outcome and the resume point on the machine and announce it; an older command does not move the resume point back', async () => {
    const b = await Broker.connect({ redis });
    await b.registerMachine('standard', 'm1', 'ready');
    const restart = await b.machineCommand('standard', 'm1', 'restart', { service: 'comfyui' });
    const shutdown = await b.machineCommand('standard', 'm1', 'shutdown', { reason: 'scale down' });
    expect((await b.readMachineCommands('standard', 'm1', '0')).map((c) => [c.id, c.action, c.service, c.reason])).toEqual([
      [restart, 'restart', 'comfyui', undefined],
      [shutdown, 'shutdown', undefined, 'scale down'],
    ]);
    expect(await b.readMachineCommands('standard', 'm1', restart)).toEqual([expect.objectContaining({ id: shutdown })]);

    expect(await b.machineCommandDone('standard', 'm1', shutdown, 'ok', 'drained and exited')).toBe(true);
    expect(await b.machineCommandDone('standard', 'm1', restart, 'failed', 'no process named comfyui')).toBe(false);
    expect((await b.machines('standard'))[0]).toMatchObject({
      last_command_handled: shutdown,
      last_command_outcome: 'ok',
      last_command_message: 'drained and exited',
      last_command_done_at: expect.stringMatching(/^\d+$/),
    });
    const done = (await b.readEvents('standard', '0', { count: 100 })).filter((e) => e.type === 'machine.command.done');
    expect(done).toEqual([
      expect.objectContaining({ machine: 'm1', command: shutdown, action: 'shutdown', outcome: 'ok', message: 'drained and exited' }),
      expect.objectContaining({ machine: 'm1', command: restart, action: 'restart', service: 'comfyui', outcome: 'failed' }),
    ]);

    await expect(b.machineCommandDone('standard', 'm1', '1-0', 'ok')).rejects.toThrow(NotFoundError);
    await expect(b.machineCommandDone('standard', 'nope', restart, 'ok')).rejects.toThrow(NotFoundError);
    await expect(b.machineCommandDone('standard', 'm1', restart, 'maybe' as 'ok')).rejects.toThrow(ValidationError);
    await expect(b.machineCommandDone('standard', 'm1', 'latest', 'ok')).rejects.toThrow(ValidationError);
  });
});

describe('machine process events', () => {
  it("announce a supervised process's transition with the fields given, for a registered machine only", async () => {
    const b = await Broker.connect({ redis });
    await b.registerMachine('standard', 'm1', 'ready');
    const id = await b.machineProcessEvent('standard', 'm1', 'comfyui-gpu0', 'exited', { restarts: 2, exit_code: 1, signal: '' });
    const event = (await b.readEvents('standard', '0', { count: 100 })).find((e) => e.type === 'machine.process');
    expect(event).toMatchObject({ id, machine: 'm1', process: 'comfyui-gpu0', state: 'exited', restarts: '2', exit_code: '1', signal: '' });
    await expect(b.machineProcessEvent('standard', 'nope', 'comfyui-gpu0', 'exited')).rejects.toThrow(NotFoundError);
  });
});

describe('machine logs', () => {
  it("are read in order from the machine's log stream, optionally of one process, with a cursor to continue from", async () => {
    const b = await Broker.connect({ redis });
    const key = b.keys.machineLogs('standard', 'm1');
    expect(key).toBe('emp:{standard}:machine-logs:m1');
    for (const [process, line] of [['comfyui-gpu0', 'loading'], ['worker-comfyui-gpu0', '{"msg":"worker started"}'], ['comfyui-gpu0', 'ready']]) {
      await redis.xadd(key, '*', 'process', process!, 'stream', 'stdout', 'line', line!, 'ts', '1');
    }
    const all = await b.readMachineLogs('standard', 'm1', '0');
    expect(all.entries.map((e) => e.line)).toEqual(['loading', '{"msg":"worker started"}', 'ready']);
    const one = await b.readMachineLogs('standard', 'm1', '0', { process: 'comfyui-gpu0', count: 2 });
    expect(one.entries.map((e) => e.line)).toEqual(['loading']);
    expect(one.cursor).toBe(all.entries[1]!.id);
    const rest = await b.readMachineLogs('standard', 'm1', one.cursor, { process: 'comfyui-gpu0' });
    expect(rest.entries).toEqual([expect.objectContaining({ process: 'comfyui-gpu0', stream: 'stdout', line: 'ready', ts: 1 })]);

    expect((await b.tailMachineLogs('standard', 'm1', { limit: 2 })).map((e) => e.line)).toEqual(['{"msg":"worker started"}', 'ready']);
    expect((await b.tailMachineLogs('standard', 'm1', { process: 'comfyui-gpu0' })).map((e) => e.line)).toEqual(['loading', 'ready']);
    expect(await b.tailMachineLogs('standard', 'nope')).toEqual([]);
  });
});
