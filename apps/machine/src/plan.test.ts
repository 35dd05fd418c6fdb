import { WORKER_CONFIG_ENV, workerConfigFromEnv } from '@emp/core';
import { describe, expect, it } from 'vitest';
import { MachineConfig } from './config';
import type { Hardware } from './hardware';
import { planProcesses } from './plan';

const twoGpus: Hardware = {
  gpus: [
    { index: 0, name: 'NVIDIA L4', memory_total_mb: 23_034 },
    { index: 1, name: 'NVIDIA L4', memory_total_mb: 23_034 },
  ],
  cpu_cores: 16,
  ram_gb: 64,
  disk_free_gb: 500,
};

const configInput = {
  machine_id: 'salad-42',
  pool: 'standard',
  region: 'eu-west',
  services: [
    { name: 'comfyui', command: 'python', args: ['main.py', '--port', '{port}', '--cuda-device', '{gpu}'], port_base: 8188, env: { OUT: '/out/{gpu}' }, ready_path: '/system_stats' },
    { name: 'vllm', command: 'vllm', args: ['serve', '--port', '{port}'], port_base: 8000, ready_path: '/health' },
  ],
  connectors: ['comfyui', { type: 'openai', uses: 'vllm', options: { service: 'llm' } }, 'simulation'],
  worker: { assets: { type: 'local', directory: '/out' }, labels: { tier: 'gold' } },
};
const config = MachineConfig.parse(configInput);

const plan = () => planProcesses(config, twoGpus, { redisUrl: 'redis://10.0.0.1:6379', workerCommand: { command: 'node', args: ['worker.js'] } });

describe('the process plan', () => {
  it('runs every service and one worker per GPU, named by service and slot', () => {
    expect(plan().map((p) => [p.name, p.kind, p.port ?? null, p.workerId ?? null])).toEqual([
      ['comfyui-gpu0', 'service', 8188, null],
      ['vllm-gpu0', 'service', 8000, null],
      ['worker-comfyui-gpu0', 'worker', null, 'salad-42.comfyui-gpu0'],
      ['comfyui-gpu1', 'service', 8189, null],
      ['vllm-gpu1', 'service', 8001, null],
      ['worker-comfyui-gpu1', 'worker', null, 'salad-42.comfyui-gpu1'],
    ]);
  });

  it('gives each service its port and GPU, in args, env and CUDA_VISIBLE_DEVICES', () => {
    const service = plan().find((p) => p.name === 'comfyui-gpu1')!;
    expect(service).toMatchObject({ command: 'python', args: ['main.py', '--port', '8189', '--cuda-device', '1'], env: { PORT: '8189', CUDA_VISIBLE_DEVICES: '1', OUT: '/out/1' } });
  });

  it('tells each worker its services\' URLs, what to wait for, and what it offers', () => {
    const worker = plan().find((p) => p.name === 'worker-comfyui-gpu1')!;
    expect(worker.env.CUDA_VISIBLE_DEVICES).toBe('1');
    const settings = workerConfigFromEnv({ [WORKER_CONFIG_ENV]: worker.env[WORKER_CONFIG_ENV] });
    expect(settings).toMatchObject({
      redis_url: 'redis://10.0.0.1:6379',
      worker_id: 'salad-42.comfyui-gpu1',
      machine_id: 'salad-42',
      pool: 'standard',
      region: 'eu-west',
      wait_for: ['http://127.0.0.1:8189/system_stats', 'http://127.0.0.1:8001/health'],
      capabilities: { hardware: { gpu_memory_gb: 22.5, cpu_cores: 16, ram_gb: 64 }, labels: { gpu: 'NVIDIA L4', region: 'eu-west', tier: 'gold' } },
      assets: { type: 'local', directory: '/out' },
    });
    expect(settings.connectors.map((c) => [c.type, c.options.service, 'baseUrl' in c.options ? c.options.baseUrl : null])).toEqual([
      ['comfyui', 'comfyui', 'http://127.0.0.1:8189'],
      ['openai', 'llm', 'http://127.0.0.1:8001/v1'],
      ['simulation', 'simulation', null],
    ]);
  });

  it('tells each worker the model routes and the models and custom nodes the machine offers', () => {
    const processes = planProcesses(config, twoGpus, {
      redisUrl: 'redis://10.0.0.1:6379',
      modelsUrl: 'http://127.0.0.1:9090',
      capabilities: { models: { comfyui: ['sdxl.safetensors'] }, custom_nodes: ['ComfyUI-Manager'] },
    });
    const settings = workerConfigFromEnv({ [WORKER_CONFIG_ENV]: processes.find((p) => p.kind === 'worker')!.env[WORKER_CONFIG_ENV] });
    expect(settings).toMatchObject({ models_url: 'http://127.0.0.1:9090', capabilities: { models: { comfyui: ['sdxl.safetensors'] }, custom_nodes: ['ComfyUI-Manager'] } });
    expect(workerConfigFromEnv({ [WORKER_CONFIG_ENV]: plan().find((p) => p.kind === 'worker')!.env[WORKER_CONFIG_ENV] }).models_url).toBeUndefined();
  });

  it('hands the machine\'s node policy to every ComfyUI connector of every worker, and to no other', () => {
    const guarded = MachineConfig.parse({ ...configInput, comfyui_node_policy: { allow: ['KSampler', 'SaveImage'], deny: ['*URL*'] } });
    for (const worker of planProcesses(guarded, twoGpus, { redisUrl: 'redis://10.0.0.1:6379' }).filter((p) => p.kind === 'worker')) {
      const settings = workerConfigFromEnv({ [WORKER_CONFIG_ENV]: worker.env[WORKER_CONFIG_ENV] });
      expect(settings.connectors.map((c) => [c.type, 'nodePolicy' in c.options ? c.options.nodePolicy : null])).toEqual([
        ['comfyui', { allow: ['KSampler', 'SaveImage'], deny: ['*URL*'] }],
        ['openai', null],
        ['simulation', null],
      ]);
    }
    const settings = workerConfigFromEnv({ [WORKER_CONFIG_ENV]: plan().find((p) => p.kind === 'worker')!.env[WORKER_CONFIG_ENV] });
    expect(settings.connectors[0]!.options).not.toHaveProperty('nodePolicy');
  });

  it('runs cpu_workers slots on a machine without GPUs', () => {
    const cpu = MachineConfig.parse({ machine_id: 'laptop', pool: 'standard', connectors: ['simulation'], cpu_workers: 3 });
    const processes = planProcesses(cpu, { ...twoGpus, gpus: [] }, { redisUrl: 'redis://127.0.0.1:6379' });
    expect(processes.map((p) => p.name)).toEqual(['worker-simulation-cpu0', 'worker-simulation-cpu1', 'worker-simulation-cpu2']);
    expect(processes[0]!.env.CUDA_VISIBLE_DEVICES).toBeUndefined();
    expect(processes[0]!.args.at(-1)).toMatch(/apps\/worker\/src\/main\.ts$/);
  });
});
