import type { ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Broker } from '@emp/core';
import { temporaryFolder, waitFor } from '@emp/testkit';
import { alive, simulatedServiceSpec } from '@emp/testkit/machine';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { exitCode, runEmp, spawnEmp, waitForOutput } from './testing/emp-process';

const db = usePrivateRedis();
let folder: Awaited<ReturnType<typeof temporaryFolder>>;
const running = new Set<ChildProcess>();

beforeAll(async () => {
  folder = await temporaryFolder();
});
afterEach(async () => {
  for (const child of running) child.kill('SIGKILL');
  await Promise.all([...running].map((child) => exitCode(child, 5_000)));
});
afterAll(async () => {
  await folder?.remove();
});

async function configFile(content: unknown): Promise<string> {
  const file = join(folder.path, `machine-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return file;
}

describe('emp machine', () => {
  it('on SIGTERM (a spot preemption notice) hands the running job back at once without using an attempt, goes draining then offline, and exits 0', async () => {
    const file = await configFile({
      machine_id: 'spot-7',
      pool: 'standard',
      redis_url: '${TEST_REDIS_URL}',
      services: [await simulatedServiceSpec('simulation', 1)],
      connectors: [{ type: 'simulation', options: { durationMs: 600_000, steps: 1 } }],
      hardware: { gpus: [] },
      health_port: 0,
      health_host: '127.0.0.1',
      logs: { dir: join(folder.path, 'logs') },
      storage: { models_dir: folder.path },
    });
    const agent = spawnEmp(['machine', '--config', file], { TEST_REDIS_URL: db.url() });
    running.add(agent);
    const banner = await waitForOutput(agent, /agent running, health (http:\S+)\/status/);
    const health = /health (http:\S+)\/status/.exec(banner)![1]!;

    const broker = await Broker.connect({ redis: db.redis });
    const { id } = await broker.submit({ service: 'simulation' });
    await waitFor('the job to run', async () => (await broker.getJob(id))?.state === 'running', 30_000);
    const status = (await (await fetch(`${health}/status`)).json()) as { processes: Array<{ name: string; pid: number }> };
    const pids = status.processes.map((p) => p.pid);
    expect(status.processes.map((p) => p.name)).toEqual(['simulation-cpu0', 'worker-simulation-cpu0']);

    agent.kill('SIGTERM');
    expect(await exitCode(agent, 30_000)).toBe(0);
    running.delete(agent);

    const job = await broker.getJob(id);
    expect(job).toMatchObject({ state: 'queued', failures: 0, infra_failures: 1, error: { kind: 'infrastructure', message: 'worker shutting down' } });
    const states = (await broker.readEvents('standard', '0', { count: 10_000 }))
      .filter((e) => /^machine\.(ready|draining|offline)$/.test(e.type) && 'machine' in e && e.machine === 'spot-7')
      .map((e) => e.type);
    expect(states.slice(-2)).toEqual(['machine.draining', 'machine.offline']);
    expect((await broker.machines('standard')).map((m) => [m.id, m.state])).toEqual([['spot-7', 'offline']]);
    expect((await broker.workers('standard')).map((w) => [w.id, w.state])).toEqual([['spot-7.simulation-cpu0', 'offline']]);
    for (const pid of pids) expect(alive(pid)).toBe(false);
  });

  it('refuses a bad config with the file, the field and the reason, and says when Redis cannot be reached', async () => {
    const file = await configFile({ machine_id: 'm', pool: 'standard', connectors: ['teleport'] });
    const bad = await runEmp(['machine', '--config', file], { REDIS_URL: 'redis://127.0.0.1:1' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(new RegExp(`^error: invalid machine config ${file}: connectors\\.0\\.type: `, 'm'));

    const unreachable = await configFile({ machine_id: 'm', pool: 'standard', connectors: ['simulation'], hardware: { gpus: [] }, health_port: 0, logs: { dir: join(folder.path, 'logs') } });
    const noRedis = await runEmp(['machine', '--config', unreachable, '--redis', 'redis://:secret@127.0.0.1:1'], {});
    expect(noRedis.code).toBe(1);
    expect(noRedis.stderr).toContain('error: machine m could not start: cannot reach Redis at redis://127.0.0.1:1: connect ECONNREFUSED');

    const missing = await runEmp(['machine', '--config', join(folder.path, 'nope.json')], {});
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`error: invalid machine config ${join(folder.path, 'nope.json')}: ENOENT`);
  });
});

describe('emp machine prefetch | evict | load', () => {
  it("append a model command to the machine's command stream, finding its pool when not named, and refuse what is not one", async () => {
    const broker = await Broker.connect({ redis: db.redis });
    await broker.registerMachine('fast', 'gpu-9', 'ready');
    const env = { REDIS_URL: db.url() };

    const prefetch = await runEmp(['machine', 'prefetch', 'gpu-9', 'sdxl.safetensors', '--reason', 'morning peak', '--json'], env);
    expect(prefetch.stderr).toBe('');
    expect(prefetch.code).toBe(0);
    const answer = JSON.parse(prefetch.stdout) as { command_id: string };
    expect(answer).toEqual({ command_id: expect.stringMatching(/^\d+-\d+$/), machine: 'gpu-9', pool: 'fast', action: 'prefetch', model: 'sdxl.safetensors' });

    const evict = await runEmp(['machine', 'evict', 'gpu-9', 'flux.safetensors', '--pool', 'fast'], env);
    expect(evict.code).toBe(0);
    expect(evict.stdout).toMatch(/^evict flux\.safetensors sent to machine gpu-9 \(pool fast\) as command \d+-\d+; /);

    const load = await runEmp(['machine', 'load', 'gpu-9', 'llama3.2', '--reason', 'warm it'], env);
    expect(load.code).toBe(0);
    expect(load.stdout).toMatch(/^load llama3\.2 sent to machine gpu-9 \(pool fast\) as command \d+-\d+; /);

    expect((await broker.readMachineCommands('fast', 'gpu-9', '0')).map((c) => [c.action, c.model, c.by, c.reason])).toEqual([
      ['prefetch', 'sdxl.safetensors', 'cli', 'morning peak'],
      ['evict', 'flux.safetensors', 'cli', undefined],
      ['load', 'llama3.2', 'cli', 'warm it'],
    ]);
    expect((await broker.machine('fast', 'gpu-9'))?.last_command_model).toBe('llama3.2');

    const nowhere = await runEmp(['machine', 'prefetch', 'gpu-404', 'sdxl.safetensors'], env);
    expect(nowhere.code).toBe(1);
    expect(nowhere.stderr).toContain('error: machine gpu-404 is not registered in any pool');
    const otherPool = await runEmp(['machine', 'evict', 'gpu-9', 'sdxl.safetensors', '--pool', 'heavy'], env);
    expect(otherPool.code).toBe(1);
    expect(otherPool.stderr).toContain('error: machine gpu-9 is not registered in pool heavy');
    const noModel = await runEmp(['machine', 'prefetch', 'gpu-9'], env);
    expect(noModel.code).toBe(2);
    expect(noModel.stderr).toContain("missing required argument 'model'");
    const noConfig = await runEmp(['machine'], env);
    expect(noConfig.code).toBe(2);
    expect(noConfig.stderr).toContain("error: required option '--config <file>' not specified (or name a subcommand: prefetch, evict, load)");
    expect(await broker.readMachineCommands('fast', 'gpu-9', '0')).toHaveLength(3);
  });
});

describe('emp machine prefetch --wait', () => {
  it("waits for the agent's outcome and exits 1 when it failed", async () => {
    const file = await configFile({
      machine_id: 'no-cache-1',
      pool: 'standard',
      redis_url: '${TEST_REDIS_URL}',
      connectors: [{ type: 'simulation', options: { durationMs: 10, steps: 1 } }],
      hardware: { gpus: [] },
      health_port: 0,
      health_host: '127.0.0.1',
      logs: { dir: join(folder.path, 'logs-wait') },
      storage: { models_dir: folder.path },
    });
    const agent = spawnEmp(['machine', '--config', file], { TEST_REDIS_URL: db.url() });
    running.add(agent);
    await waitForOutput(agent, /agent running/);

    const env = { REDIS_URL: db.url() };
    const waited = await runEmp(['machine', 'prefetch', 'no-cache-1', 'sdxl.safetensors', '--wait', '20'], env);
    expect(waited.stdout).toBe('machine no-cache-1: failed: prefetch sdxl.safetensors: this machine has no model cache (its config lists no models)\n');
    expect(waited.code).toBe(1);
    const asJson = await runEmp(['machine', 'evict', 'no-cache-1', 'sdxl.safetensors', '--wait', '20', '--json'], env);
    expect(asJson.code).toBe(1);
    expect(JSON.parse(asJson.stdout)).toMatchObject({ machine: 'no-cache-1', pool: 'standard', action: 'evict', outcome: 'failed', message: expect.stringContaining('no model cache') });
    const badWait = await runEmp(['machine', 'evict', 'no-cache-1', 'sdxl.safetensors', '--wait', 'soon'], env);
    expect(badWait.code).toBe(2);
    expect(badWait.stderr).toContain("invalid --wait: expected a positive number of seconds, got 'soon'");
  });
});
