import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Broker, WORKER_CONFIG_ENV, WORKER_MAIN, type WorkerProcessConfigInput, type WorkerProcessMessage, workerConfigFromEnv } from '@emp/core';
import { waitFor } from '@emp/testkit';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { afterEach, describe, expect, it } from 'vitest';

const db = usePrivateRedis();
const children: ChildProcess[] = [];
const servers: Server[] = [];
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});



function spawnMain(env: Record<string, string | undefined>) {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER_MAIN], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  children.push(child);
  let output = '';
  const messages: WorkerProcessMessage[] = [];
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.on('message', (message) => messages.push(message as WorkerProcessMessage));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, messages, output: () => output };
}

/** A service that answers its ready path with 503 until `ready` is set. */
async function slowService(): Promise<{ url: string; setReady(): void }> {
  let ready = false;
  const server = createServer((request, response) => {
    response.writeHead(request.url === '/ready' && ready ? 200 : 503).end();
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, setReady: () => (ready = true) };
}

describe('the worker process', () => {
  it('claims only once its service answers, tells its supervisor, takes new capabilities from it, and stops cleanly when it goes away', async () => {
    const service = await slowService();
    const config: WorkerProcessConfigInput = {
      redis_url: db.url(),
      worker_id: 'm1.simulation-gpu0',
      pool: 'standard',
      machine_id: 'm1',
      capabilities: { labels: { gpu: 'test' } },
      connectors: [{ type: 'simulation', options: { durationMs: 50, steps: 1 } }],
      wait_for: [`${service.url}/ready`],
    };
    const worker = spawnMain({ [WORKER_CONFIG_ENV]: JSON.stringify(config) });
    const broker = await Broker.connect({ redis: db.redis });
    await waitFor('the worker to say it waits', () => worker.messages.some((m) => m.type === 'waiting'), 20_000);
    expect(await broker.workers('standard')).toEqual([]); // not registered while its service does not answer

    service.setReady();
    await waitFor(`the worker to be ready (${worker.output()})`, () => worker.messages.some((m) => m.type === 'ready'), 20_000);
    const [registered] = await broker.workers('standard');
    expect(registered).toMatchObject({ id: 'm1.simulation-gpu0', machine: 'm1', state: 'idle' });
    expect(JSON.parse(registered!.capabilities!)).toMatchObject({ services: ['simulation'], labels: { gpu: 'test' } });

    const { id } = await broker.submit({ service: 'simulation' });
    await waitFor('the job to succeed', async () => (await broker.getJob(id))?.state === 'succeeded');
    const lastCount = () => worker.messages.filter((m) => m.type === 'jobs').at(-1);
    await waitFor('the running count to go back to 0', () => lastCount()?.running === 0);
    expect(worker.messages).toContainEqual({ type: 'jobs', running: 1 });
    const lines = worker.output().split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.find((line) => line.msg === 'worker started')).toMatchObject({ worker_id: 'm1.simulation-gpu0', machine_id: 'm1', pool: 'standard' });

    // the agent's model cache changed: the process registers again with what it was sent
    worker.child.send({ type: 'capabilities', capabilities: { models: { simulation: ['sdxl.safetensors'] } } });
    await waitFor('the new capabilities in the registry', async () => {
      const [again] = await broker.workers('standard');
      return (JSON.parse(again!.capabilities!) as { models?: unknown }).models !== undefined;
    });
    expect(JSON.parse((await broker.workers('standard'))[0]!.capabilities!)).toMatchObject({ models: { simulation: ['sdxl.safetensors'] }, labels: { gpu: 'test' } });

    worker.child.disconnect();
    expect(await worker.exited).toBe(0);
    expect((await broker.workers('standard'))[0]?.state).toBe('offline');
  });

  it('exits 2 with the field and the reason when its config is wrong', async () => {
    const bad = spawnMain({ [WORKER_CONFIG_ENV]: JSON.stringify({ redis_url: 'http://nope', worker_id: 'w', pool: 'standard', connectors: [] }) });
    expect(await bad.exited).toBe(2);
    expect(bad.output()).toMatch(/invalid worker config EMP_WORKER_CONFIG: redis_url: a Redis URL starts with redis:\/\/ .*; connectors: /);
    const unset = spawnMain({ [WORKER_CONFIG_ENV]: undefined });
    expect(await unset.exited).toBe(2);
    expect(unset.output()).toContain('invalid worker config EMP_WORKER_CONFIG: not set');
  });
});

describe('the worker process config', () => {
  const base = { redis_url: 'redis://127.0.0.1:1', worker_id: 'w', pool: 'standard' };
  it.each([
    ['a connector type nobody knows', { connectors: [{ type: 'teleport' }] }, /connectors\.0\.type: /],
    ['ComfyUI without an asset store', { connectors: [{ type: 'comfyui' }] }, /assets: connector comfyui writes result files/],
    ['two connectors for one service', { connectors: [{ type: 'simulation' }, { type: 'simulation' }] }, /connectors\.1\.options\.service: a second connector for service 'simulation'/],
    ['a bad option of a connector', { connectors: [{ type: 'ollama', options: { baseUrl: 'nowhere' } }] }, /connectors\.0\.options\.baseUrl/],
    ['model routes that are not an http URL', { connectors: [{ type: 'simulation' }], models_url: 'file:///models' }, /models_url: the model routes are an http\(s\) URL/],
    ['not JSON', '{', /not JSON/],
    ['a node policy of the wrong shape', { assets: { type: 'local', directory: '/out' }, connectors: [{ type: 'comfyui', options: { nodePolicy: { deny: 'LoadImageFromURL' } } }] }, /connectors\.0\.options\.nodePolicy\.deny: /],
  ])('refuses %s, naming the field', (_name, config, message) => {
    const text = typeof config === 'string' ? config : JSON.stringify({ ...base, ...config });
    expect(() => workerConfigFromEnv({ [WORKER_CONFIG_ENV]: text })).toThrow(message);
  });

  it('takes a node policy for a ComfyUI connector of a worker run on its own', () => {
    const text = JSON.stringify({ ...base, assets: { type: 'local', directory: '/out' }, connectors: [{ type: 'comfyui', options: { nodePolicy: { deny: ['LoadImageFromURL'] } } }] });
    expect(workerConfigFromEnv({ [WORKER_CONFIG_ENV]: text }).connectors[0]!.options).toMatchObject({ nodePolicy: { deny: ['LoadImageFromURL'] } });
  });

  it('fills connector options from their own defaults', () => {
    const config = workerConfigFromEnv({ [WORKER_CONFIG_ENV]: JSON.stringify({ ...base, connectors: [{ type: 'ollama' }] }) });
    expect(config.connectors[0]).toMatchObject({ type: 'ollama', options: { service: 'ollama', baseUrl: 'http://127.0.0.1:11434' } });
    expect(config).toMatchObject({ machine_id: 'local', concurrency: 1, grace_ms: 0, wait_for: [] });
  });
});
