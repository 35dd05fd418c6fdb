import { describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { NotFoundError, ValidationError } from './errors';
import { usePrivateRedis } from './testing/private-redis';

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
    expect(event?.fields).toMatchObject({ machine: 'm1', action: 'restart', service: 'comfyui', command: id });

    await expect(b.machineCommand('standard', 'nope', 'drain')).rejects.toThrow(NotFoundError);
    await expect(b.machineCommand('standard', 'm1', 'reboot' as 'drain')).rejects.toThrow(ValidationError);
  });
});
