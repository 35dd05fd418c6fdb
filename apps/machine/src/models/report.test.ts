import { WorkerCapabilities } from '@emp/core';
import { describe, expect, it } from 'vitest';
import type { ModelCacheContents } from './model-cache';
import { machineModelFields, modelCapabilities } from './report';

const contents: ModelCacheContents = {
  budget_bytes: 10_000,
  used_bytes: 3_500,
  models: [
    { name: 'b.bin', folder: 'checkpoints', path: '/m/checkpoints/b.bin', size_bytes: 2_000, last_used: 2, pins: 1 },
    { name: 'old.bin', folder: 'loras', path: '/m/loras/old.bin', size_bytes: 1_000, last_used: 1, pins: 0 },
  ],
  downloads: [{ model: 'c.bin', received: 100, total: 500 }],
  catalog: ['a.bin', 'b.bin', 'c.bin'],
};

describe('model reports', () => {
  it('give each service every model on disk or downloadable, as a valid capability', () => {
    const models = modelCapabilities(contents, ['comfyui', 'simulation']);
    expect(models).toEqual({ comfyui: ['a.bin', 'b.bin', 'c.bin', 'old.bin'], simulation: ['a.bin', 'b.bin', 'c.bin', 'old.bin'] });
    expect(WorkerCapabilities.safeParse({ services: ['comfyui'], models }).success).toBe(true);
    expect(modelCapabilities(contents, ['comfyui'], 'on_disk')).toEqual({ comfyui: ['b.bin', 'old.bin'] });
  });

  it('give the machine snapshot its models on disk, in use and downloading, as strings', () => {
    expect(machineModelFields(contents, 5_000_000)).toEqual({
      models: JSON.stringify([
        { name: 'b.bin', folder: 'checkpoints', size_bytes: 2_000, last_used: 2, in_use: true },
        { name: 'old.bin', folder: 'loras', size_bytes: 1_000, last_used: 1, in_use: false },
      ]),
      models_on_disk: '["b.bin","old.bin"]',
      models_in_use: '["b.bin"]',
      models_downloading: '[{"model":"c.bin","received":100,"total":500}]',
      model_cache_used_bytes: '3500',
      model_cache_budget_bytes: '10000',
      disk_free_bytes: '5000000',
    });
  });
});
