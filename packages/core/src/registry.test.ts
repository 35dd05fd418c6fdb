import { describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { decodeMachine, decodeWorker, encodeMachineStatus, encodeWorkerRegistration, isInvalidRecord } from './registry';
import { usePrivateRedis } from '@emp/testkit/private-redis';

const { redis } = usePrivateRedis();

const status = {
  hostname: 'gpu-box',
  pid: 4242,
  agent_started_at: 1_700_000_000_000,
  status_at: 1_700_000_001_000,
  gpus: [{ index: 0, name: 'L4', memory_total_mb: 23_034, utilization_pct: 12 }],
  hardware: { gpus: [{ index: 0, name: 'L4', memory_total_mb: 23_034 }], cpu_cores: 8, ram_gb: 32, disk_free_gb: 100 },
  workers: ['gpu-box.comfyui-gpu0', 'gpu-box.simulation-cpu0'],
  services: ['comfyui'],
  processes: [{ name: 'worker-comfyui-gpu0', kind: 'worker', state: 'running', restarts: 1, ready: true, running: 0 }],
  models: [{ name: 'sdxl.safetensors', folder: 'checkpoints', size_bytes: 6_900_000_000, in_use: true }],
  models_downloading: [{ model: 'flux.safetensors', received: 10, total: 100 }],
  model_cache_used_bytes: 6_900_000_000,
};

describe('the registry records', () => {
  it('read back what the agent wrote: a machine status round trip through register_machine', async () => {
    const broker = await Broker.connect({ redis });
    await broker.registerMachine('standard', 'gpu-box', 'ready', encodeMachineStatus(status));
    const [stored] = await broker.machines('standard');
    const machine = decodeMachine('standard', stored!);
    if (isInvalidRecord(machine)) throw new Error(machine.invalid);
    expect(machine.problems).toEqual([]);
    expect(machine).toMatchObject({ ...status, id: 'gpu-box', pool: 'standard', state: 'ready' });
    expect(machine.last_seen).toBeGreaterThan(0);
    expect(machine.registered_at).toBe(machine.last_seen);
  });

  it('read back a worker as register_worker stores it, capabilities included', async () => {
    const broker = await Broker.connect({ redis });
    await broker.registerWorker({ id: 'w1', pool: 'standard', machine_id: 'gpu-box', concurrency: 2, version: '1.2.3', capabilities: { services: ['simulation'] } });
    const worker = decodeWorker('standard', (await broker.workers('standard'))[0]!);
    if (isInvalidRecord(worker)) throw new Error(worker.invalid);
    expect(worker.problems).toEqual([]);
    expect(worker).toMatchObject({ id: 'w1', machine: 'gpu-box', state: 'idle', concurrency: 2, version: '1.2.3', pool: 'standard', capabilities: { services: ['simulation'] } });
    // what Broker.registerWorker writes beside register_worker's own fields, encoded here (for when the broker takes it)
    const fields = encodeWorkerRegistration({ pool: 'standard', concurrency: 2, version: '1.2.3' }, worker.stored.capabilities!);
    expect(fields).toEqual({ pool: 'standard', concurrency: '2', version: '1.2.3', capabilities: worker.stored.capabilities });
  });

  it('names each corrupt field with why, keeps the rest, and marks a JSON one unreadable', () => {
    const machine = decodeMachine('standard', {
      ...encodeMachineStatus(status),
      id: 'gpu-box',
      state: 'levitating',
      last_seen: 'yesterday',
      gpus: '[{"index":0}]',
      processes: '{oops',
    });
    if (isInvalidRecord(machine)) throw new Error(machine.invalid);
    expect(machine.problems).toEqual([
      'last_seen: "yesterday" is not a time in ms',
      'state: "levitating" is not one of starting, ready, degraded, draining, offline',
      'gpus.0.name: Invalid input: expected string, received undefined',
      'processes: not JSON',
    ]);
    expect(machine.state).toBeUndefined();
    expect(machine.stored.state).toBe('levitating');
    expect(machine.gpus).toEqual({ unreadable: 'gpus.0.name: Invalid input: expected string, received undefined' });
    expect(machine.processes).toEqual({ unreadable: 'processes: not JSON' });
    expect(machine.hostname).toBe('gpu-box');
    expect(machine.workers).toEqual(status.workers);
  });

  it('marks a hash without an id as invalid rather than a record', () => {
    expect(decodeWorker('standard', { state: 'idle' })).toEqual({ pool: 'standard', invalid: 'no id: not a registry record', stored: { state: 'idle' } });
  });

  it('refuses to write a field wrong or one it does not declare, naming each', () => {
    expect(() => encodeMachineStatus({ pid: -1, workers: ['a,b'], colour: 'blue' } as never)).toThrow(
      'the machine status cannot be written: pid: Too small: expected number to be >=0; workers: a listed name has no comma; colour: not a field of the machine status',
    );
  });
});
