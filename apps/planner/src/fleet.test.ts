import { encodeMachineStatus } from '@emp/core';
import { describe, expect, it } from 'vitest';
import { configFromEnv, plannerConfig, waitTargetMs } from './config';
import { evictionBlocker, fleetMachine } from './fleet';

const GB = 1024 ** 3;

/** A machine hash as register_machine stores the agent's status snapshot. */
function record(id: string, status: Parameters<typeof encodeMachineStatus>[0]) {
  return { id, state: 'ready', ...encodeMachineStatus(status) };
}

describe('the fleet as the planner reads it', () => {
  it('takes models, sizes, budget, downloads and models in use from the machine record', () => {
    const machine = fleetMachine('standard', record('m1', {
      models: [{ name: 'sdxl', size_bytes: 7 * GB, loaded: true }, { name: 'flux', size_bytes: 12 * GB }],
      models_on_disk: ['sdxl', 'flux', 'lora-a'],
      models_in_use: ['flux'],
      models_downloading: [{ model: 'wan', received: 10, total: 100 }],
      model_cache_budget_bytes: 40 * GB,
      model_cache_used_bytes: 19 * GB,
    }))!;
    expect(machine).toMatchObject({ id: 'm1', state: 'ready', budgetBytes: 40 * GB, usedBytes: 19 * GB, downloading: ['wan'], inUse: ['flux'] });
    expect(machine.models.map((m) => m.name)).toEqual(['sdxl', 'flux', 'lora-a']);
    expect(machine.models.find((m) => m.name === 'flux')!.in_use).toBe(true);
  });

  it('never lets a model in use, loaded or downloading be evicted', () => {
    const machine = fleetMachine('standard', record('m1', {
      models: [{ name: 'sdxl', loaded: true }, { name: 'flux', in_use: true }, { name: 'idle' }, { name: 'listed' }],
      models_in_use: ['listed'],
      models_downloading: [{ model: 'wan', received: 0 }],
    }))!;
    expect(evictionBlocker(machine, 'sdxl')).toBe('loaded');
    expect(evictionBlocker(machine, 'flux')).toBe('in use');
    expect(evictionBlocker(machine, 'listed')).toBe('in use');
    expect(evictionBlocker(machine, 'wan')).toBe('downloading');
    expect(evictionBlocker(machine, 'idle')).toBeUndefined();
  });

  it('with the worker records: idle when every online worker of the machine is, the models they report loaded, the GPU memory', () => {
    const status = record('m1', { models: [{ name: 'sdxl', size_bytes: 7 * GB }, { name: 'flux', size_bytes: 12 * GB }], gpus: [{ index: 0, name: 'A100', memory_total_mb: 81_920 }, { index: 1, name: 'A100', memory_total_mb: 40_960 }] });
    const worker = (id: string, machine: string, state: string, loaded: string[] = []) => ({
      id, machine, state, capabilities: JSON.stringify({ services: ['comfyui'], hardware: { gpu_memory_gb: 24 } }), models: JSON.stringify({ loaded, on_disk: [], downloading: [] }),
    });
    const idle = fleetMachine('heavy', status, [worker('w0', 'm1', 'idle', ['flux', 'lora']), worker('w1', 'm1', 'offline'), worker('x', 'm2', 'busy')])!;
    expect(idle).toMatchObject({ idle: true, gpuMemoryBytes: 40_960 * 1024 ** 2 });
    expect(idle.models.map((m) => [m.name, m.loaded ?? false])).toEqual([['sdxl', false], ['flux', true], ['lora', true]]);
    expect(fleetMachine('heavy', status, [worker('w0', 'm1', 'idle'), worker('w1', 'm1', 'busy')])!.idle).toBe(false);
    // no online worker: not idle; no nvidia-smi view: the memory the workers registered
    expect(fleetMachine('heavy', status, [])!.idle).toBe(false);
    expect(fleetMachine('heavy', record('m1', {}), [worker('w0', 'm1', 'idle')])!.gpuMemoryBytes).toBe(24 * GB);
    // without the worker records nothing is known: the planner loads nothing there
    expect(fleetMachine('heavy', status)).not.toHaveProperty('idle');
  });

  it('reads an unreadable models field as no models, and a hash without id as no machine', () => {
    expect(fleetMachine('standard', { id: 'm1', models: 'not json' })!.models).toEqual([]);
    expect(fleetMachine('standard', { id: '', state: 'ready' } as never)).toBeNull();
  });
});

describe('planner config', () => {
  it('reads EMP_PLANNER_* and gives each pool its wait target', () => {
    const config = plannerConfig(configFromEnv({ EMP_PLANNER_INTERVAL_MS: '5000', EMP_PLANNER_POOLS: 'fast, heavy', EMP_PLANNER_WAIT_TARGETS_MS: 'fast=1500,*=20000', EMP_PLANNER_DRY_RUN: '1' }));
    expect(config).toMatchObject({ intervalMs: 5_000, pools: ['fast', 'heavy'], dryRun: true });
    const pools = [{ name: 'fast', target_wait_s: 2 }, { name: 'heavy', target_wait_s: 30 }];
    expect(waitTargetMs(config, 'fast', pools)).toBe(1_500);
    // the pool config's target_wait_s, unless the planner's settings name the pool
    expect(waitTargetMs(config, 'heavy', pools)).toBe(30_000);
    expect(waitTargetMs(config, 'other', pools)).toBe(20_000);
    expect(waitTargetMs(plannerConfig(), 'fast', pools)).toBe(2_000);
    expect(waitTargetMs(plannerConfig(), 'other', pools)).toBe(10_000);
  });

  it('refuses a setting out of range with its name', () => {
    expect(() => plannerConfig({ percentile: 1.5 })).toThrow(/percentile/);
  });
});
