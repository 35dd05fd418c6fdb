import { ApiKeyStore } from '@emp/core';
import { Broker } from '@emp/core';
import { type RedisProcess, startRedis } from '@emp/testkit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runEmp } from './testing/emp-process';

let redis: RedisProcess;
let connection: Redis;
let env: Record<string, string>;

beforeAll(async () => {
  redis = await startRedis();
  connection = new Redis(redis.url);
  env = { REDIS_URL: redis.url };
});
afterAll(async () => {
  connection?.disconnect();
  await redis?.stop();
});

describe('emp jobs', () => {
  it('lists jobs newest first, filtered, as a table or JSON with a cursor for the next page', async () => {
    const broker = await Broker.connect({ redis: connection });
    const a = await broker.submit({ service: 'simulation', tenant: 'acme' });
    const b = await broker.submit({ service: 'ollama', tenant: 'acme' });
    await broker.cancel(b.id, 'not needed');
    await broker.submit({ service: 'simulation', tenant: 'globex' });

    const table = await runEmp(['jobs', '--tenant', 'acme'], env);
    expect(table.code).toBe(0);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^ID\s+STATE\s+SERVICE\s+TENANT\s+SUBMITTED\s+ATTEMPTS\s+WORKER\s+DETAIL$/);
    expect(lines.slice(1).map((line) => line.split(/\s+/)[0])).toEqual([b.id, a.id]);
    expect(lines[2]).toMatch(/queued\s+simulation\s+acme .* position 0$/);

    const paged = await runEmp(['jobs', '--state', 'queued,canceled', '--limit', '1', '--json'], env);
    const first = JSON.parse(paged.stdout) as { jobs: Array<{ id: string }>; next_cursor: string };
    expect(first.jobs).toHaveLength(1);
    const next = JSON.parse((await runEmp(['jobs', '--state', 'queued,canceled', '--limit', '1', '--json', '--cursor', first.next_cursor], env)).stdout) as { jobs: Array<{ id: string }> };
    expect(next.jobs[0]!.id).not.toBe(first.jobs[0]!.id);

    const bad = await runEmp(['jobs', '--state', 'done'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: invalid --state: 0: Invalid option: expected one of "queued"/m);
  });
});

describe('emp machines', () => {
  it('lists machines with their last operator command', async () => {
    const broker = await Broker.connect({ redis: connection });
    await broker.registerMachine('standard', 'gpu-box-1', 'ready', { workers: '2' });
    await broker.machineCommand('standard', 'gpu-box-1', 'drain', { service: 'comfyui' });
    const listed = await runEmp(['machines'], env);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(/^standard\s+gpu-box-1\s+ready\s+\S+\s+\S+ ago\s+2\s+drain comfyui \(\S+ ago\)$/m);
    const asJson = JSON.parse((await runEmp(['machines', '--json'], env)).stdout) as { machines: Array<Record<string, string>> };
    expect(asJson.machines).toContainEqual(expect.objectContaining({ id: 'gpu-box-1', pool: 'standard', last_command: 'drain' }));

    await broker.machineCommand('standard', 'gpu-box-1', { action: 'prefetch', model: 'sdxl.safetensors' });
    expect((await runEmp(['machines'], env)).stdout).toMatch(/^standard\s+gpu-box-1\s+ready\s+.*\s+prefetch sdxl\.safetensors \(\S+ ago\)$/m);
  });
});

describe('emp workers', () => {
  it('shows the models a worker holds: loaded by name, then how many more on disk and downloading', async () => {
    const broker = await Broker.connect({ redis: connection });
    await broker.registerWorker({ id: 'warm-worker', pool: 'standard', capabilities: { services: ['simulation'] } });
    await broker.reportModels('standard', 'warm-worker', { loaded: ['sdxl', 'flux'], on_disk: ['sdxl', 'wan'], downloading: ['ltx'] });
    const workers = await runEmp(['workers'], env);
    expect(workers.code).toBe(0);
    expect(workers.stdout).toMatch(/^standard\s+warm-worker\s+local\s+idle\s+\S+\s+\S+ ago\s+simulation\s+1\s+sdxl,flux \+1 on disk 1 downloading$/m);
    const asJson = JSON.parse((await runEmp(['workers', '--json'], env)).stdout) as { workers: Array<Record<string, unknown>> };
    expect(asJson.workers.find((w) => w.id === 'warm-worker')?.models).toBe(JSON.stringify({ loaded: ['sdxl', 'flux'], on_disk: ['sdxl', 'wan'], downloading: ['ltx'] }));
  });
});

describe('emp machines and emp workers, on a corrupt record', () => {
  it('still list every record, show an unreadable field as ? and name it with the reason', async () => {
    const broker = await Broker.connect({ redis: connection });
    await broker.registerMachine('standard', 'odd-box', 'ready', { workers: 'w1, w2' });
    await connection.hset(broker.keys.prefix('standard') + 'machine:odd-box', 'last_seen', 'soon', 'gpus', '[{"index":"first"}]');
    const listed = await runEmp(['machines'], env);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(/^standard\s+odd-box\s+ready\s+\S+\s+-\s+w1, w2\s+-$/m);
    expect(listed.stdout).toContain('standard/odd-box: last_seen: "soon" is not a time in ms');
    expect(listed.stdout).toMatch(/standard\/odd-box: gpus\.0\.index: /);
    const asJson = JSON.parse((await runEmp(['machines', '--json'], env)).stdout) as { machines: Array<Record<string, unknown>> };
    expect(asJson.machines).toContainEqual(expect.objectContaining({ id: 'odd-box', last_seen: 'soon', problems: [expect.stringMatching(/^last_seen: /), expect.stringMatching(/^gpus\.0\.index: /)] }));

    await broker.registerWorker({ id: 'odd-worker', pool: 'standard', capabilities: { services: ['simulation'] } });
    await connection.hset(broker.keys.prefix('standard') + 'worker:odd-worker', 'capabilities', '{not json');
    const workers = await runEmp(['workers'], env);
    expect(workers.code).toBe(0);
    expect(workers.stdout).toMatch(/^standard\s+odd-worker\s+local\s+idle\s+\S+\s+\S+ ago\s+\?\s+1$/m);
    expect(workers.stdout).toContain('standard/odd-worker: capabilities: not JSON');
  });
});

describe('emp keys', () => {
  it('creates a key shown once, lists keys without secrets, and revokes by id', async () => {
    const created = await runEmp(['keys', 'create', '--role', 'client', '--tenant', 'acme', '--name', 'acme web app', '--json'], env);
    expect(created.code).toBe(0);
    const { key, id } = JSON.parse(created.stdout) as { key: string; id: string };
    const store = new ApiKeyStore(connection);
    expect(await store.verify(key)).toEqual({ keyId: id, role: 'client', tenant: 'acme' });

    const listed = await runEmp(['keys', 'list'], env);
    expect(listed.stdout).toMatch(new RegExp(`^${id}\\s+client\\s+acme\\s+acme web app\\s+\\S+ \\S+\\s+-$`, 'm'));
    expect(listed.stdout).not.toContain(key);

    expect((await runEmp(['keys', 'revoke', id], env)).stdout).toBe(`${id} revoked\n`);
    expect(await new ApiKeyStore(connection).verify(key)).toBeNull();
    const unknown = await runEmp(['keys', 'revoke', 'nosuchkey'], env);
    expect(unknown.code).toBe(1);

    const tenantless = await runEmp(['keys', 'create', '--role', 'client'], env);
    expect(tenantless.code).toBe(2);
    expect(tenantless.stderr).toMatch(/^error: invalid --tenant: a client key belongs to a tenant$/m);
  });
});
