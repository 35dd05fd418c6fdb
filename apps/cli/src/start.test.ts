import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type RedisProcess, freePort, startRedis } from '@emp/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { exitCode, runEmp, spawnEmp, waitForOutput } from './testing/emp-process';

const BANNER = /local stack running[\s\S]*Ctrl-C stops everything/;
/** the first start of a run may build the monitor page (a fresh clone), which takes a while on a busy 2-CPU machine */
const STARTUP_MS = 120_000;
const running = new Set<ChildProcess>();

function start(args: string[], env: Record<string, string | undefined>): ChildProcess {
  // a free API port: tests must not take (or fail on) the default 3331 a developer's stack may hold
  const child = spawnEmp(['start', '--sim-duration-ms', '300', '--api-port', '0', '--monitor-port', '0', '--webhooks-port', '0', ...args], env);
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

afterEach(async () => {
  for (const child of running) child.kill('SIGKILL');
  await Promise.all([...running].map((child) => exitCode(child, 5_000)));
});

describe('emp start with REDIS_URL', { timeout: 180_000 }, () => {
  let redis: RedisProcess;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('runs jobs submitted from another process, serves the monitor page, and stops cleanly on SIGTERM', async () => {
    const env = { REDIS_URL: redis.url };
    const stack = start([], env);
    const banner = await waitForOutput(stack, BANNER, STARTUP_MS);
    expect(banner).toContain(redis.url);
    expect(banner).toContain('agent with workers local-sim.simulation-cpu0, local-sim.simulation-cpu1 (service simulation)');
    expect(banner).toMatch(/processes simulation-cpu0, worker-simulation-cpu0, simulation-cpu1, worker-simulation-cpu1; logs in /);

    const succeeded = await runEmp(['submit', '--service', 'simulation', '--wait', '--json', '--timeout', '20'], env);
    expect(succeeded.code).toBe(0);
    expect(JSON.parse(succeeded.stdout)).toMatchObject({
      state: 'succeeded',
      result: { simulated: true, duration_ms: 300 },
      worker: expect.stringMatching(/^local-sim\.simulation-cpu[01]$/),
      machine: 'local-sim',
    });

    // a job that fails for good: --wait exits 1 and shows why
    const failed = await runEmp(['submit', '--service', 'simulation', '--payload', '{"fail":"non_retryable"}', '--wait', '--timeout', '20'], env);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/ failed in .*: non_retryable: simulated non_retryable failure$/m);
    // piped (not a terminal): progress comes as plain lines on stderr
    expect(failed.stderr).toMatch(/ running$/m);

    // the API runs too, without keys on loopback, and says so
    const api = /api {8}(http:\/\/127\.0\.0\.1:\d+)/.exec(banner)?.[1];
    expect(banner).toMatch(/auth OFF \(local development\): restart with `npm start -- --auth`/);
    const viaHttp = await fetch(`${api}/v1/jobs?wait=20`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"service":"simulation"}' });
    expect(viaHttp.status).toBe(201);
    expect(await viaHttp.json()).toMatchObject({ state: 'succeeded', machine: 'local-sim' });
    // a developer's webhook receiver on localhost is allowed here (a deployed API refuses it)
    expect(banner).toContain('webhooks may target localhost and private addresses');
    const localHook = await fetch(`${api}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"service":"simulation","webhook":{"url":"http://localhost:4000/hook"}}' });
    expect(localHook.status).toBe(201);

    // the webhook service runs beside the API and delivers a job's events to a receiver on loopback, signed
    const hooks = /webhooks {3}(http:\/\/127\.0\.0\.1:\d+)/.exec(banner)?.[1];
    expect(await (await fetch(`${hooks}/health`)).json()).toMatchObject({ status: 'ok' });
    const received: Array<{ type: string; signature: string }> = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        received.push({ type: (JSON.parse(body) as { type: string }).type, signature: String(req.headers['webhook-signature']) });
        res.end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    try {
      const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
      const hooked = await fetch(`${api}/v1/jobs?wait=20`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ service: 'simulation', webhook: { url: hookUrl } }) });
      expect(hooked.status).toBe(201);
      for (let waited = 0; !received.some((r) => r.type === 'job.succeeded') && waited < 10_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
      expect(received.map((r) => r.type).filter((t) => t !== 'job.progress')).toEqual(['job.queued', 'job.started', 'job.succeeded']);
      expect(received[0]!.signature).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    } finally {
      receiver.close();
    }

    // the monitor page is served, knows where the API is, and the API lets it call from a browser
    const monitor = /monitor {4}(http:\/\/127\.0\.0\.1:\d+)/.exec(banner)?.[1];
    expect(monitor).toBeDefined();
    expect(await (await fetch(`${monitor}/`)).text()).toContain('<div id="root"></div>');
    expect(await (await fetch(`${monitor}/config.json`)).json()).toEqual({ api_url: api, auth: false });
    const fromPage = await fetch(`${api}/v1/whoami`, { headers: { origin: monitor! } });
    expect(fromPage.headers.get('access-control-allow-origin')).toBe(monitor);
    expect(await fromPage.json()).toEqual({ key_id: 'anonymous', role: 'operator', auth: false });

    const workers = await runEmp(['workers', '--json'], env);
    const listed = (JSON.parse(workers.stdout).workers as Array<{ id: string }>).sort((a, b) => a.id.localeCompare(b.id));
    expect(listed).toEqual([
      expect.objectContaining({ id: 'local-sim.simulation-cpu0', machine: 'local-sim', state: 'idle' }),
      expect.objectContaining({ id: 'local-sim.simulation-cpu1', machine: 'local-sim', state: 'idle' }),
    ]);

    stack.kill('SIGTERM');
    expect(await exitCode(stack, 20_000)).toBe(0);

    // stopped workers stay listed, as offline
    const after = await runEmp(['workers', '--json'], env);
    for (const worker of JSON.parse(after.stdout).workers as Array<{ state: string }>) expect(worker.state).toBe('offline');
  });
});

describe('emp start with its embedded Redis', { timeout: 180_000 }, () => {
  let stateDir: string;
  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'emp-state-'));
  });
  afterAll(async () => {
    // should a test have failed midway, stop the redis-server it left (it runs in a session of its own)
    const urlFile = join(stateDir, 'redis.url');
    if (existsSync(urlFile)) {
      const leftover = new Redis(readFileSync(urlFile, 'utf8').trim(), { lazyConnect: true, retryStrategy: () => null });
      leftover.on('error', () => undefined);
      await leftover.connect().then(() => leftover.call('SHUTDOWN', 'NOSAVE')).catch(() => undefined);
      leftover.disconnect();
    }
    await rm(stateDir, { recursive: true, force: true });
  });

  it('keeps its data (AOF) and URL under the state folder, and removes what it started on SIGTERM', async () => {
    const port = await freePort();
    const stack = start(['--state-dir', stateDir, '--redis-port', String(port)], {});
    const banner = await waitForOutput(stack, BANNER, STARTUP_MS);
    const url = `redis://127.0.0.1:${port}`;
    expect(banner).toContain(`${url}  (embedded, AOF data in ${join(stateDir, 'redis')})`);
    expect(readFileSync(join(stateDir, 'redis.url'), 'utf8').trim()).toBe(url);
    expect(existsSync(join(stateDir, 'redis', 'appendonlydir'))).toBe(true);

    // a second start on the same folder would share the append-only file: refused
    const second = await runEmp(['start', '--state-dir', stateDir, '--redis-port', String(await freePort())], {});
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/^error: another `emp start` \(pid \d+\) is running/m);

    const job = await runEmp(['submit', '--service', 'simulation', '--wait', '--json', '--timeout', '20', '--redis', url], {});
    expect(job.code).toBe(0);
    expect(JSON.parse(job.stdout)).toMatchObject({ state: 'succeeded' });

    stack.kill('SIGTERM');
    expect(await exitCode(stack, 20_000)).toBe(0);
    expect(existsSync(join(stateDir, 'redis.url'))).toBe(false);
    expect(existsSync(join(stateDir, 'start.pid'))).toBe(false);
    const gone = await runEmp(['queues', '--redis', url], {});
    expect(gone.stderr).toMatch(/cannot reach Redis/);
  });

  it('after a hard kill, the next start shuts down the Redis left behind and finds the queued jobs again', async () => {
    const port = await freePort();
    const args = ['--state-dir', stateDir, '--redis-port', String(port)];
    const url = `redis://127.0.0.1:${port}`;
    const killed = start(args, {});
    await waitForOutput(killed, BANNER, STARTUP_MS);
    // nobody runs jobs for this tenant: it stays queued
    const queued = await runEmp(['submit', '--service', 'simulation', '--tenant', 'nobody', '--requirements', '{"pool":"idle-pool"}', '--json', '--redis', url], {});
    const { id } = JSON.parse(queued.stdout) as { id: string };
    killed.kill('SIGKILL');
    await exitCode(killed);
    // its redis-server is in a process group of its own: still up, still ours
    expect((await runEmp(['job', id, '--redis', url], {})).code).toBe(0);

    const restarted = start(args, {});
    let stderr = '';
    restarted.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    await waitForOutput(restarted, BANNER, STARTUP_MS);
    expect(stderr).toMatch(/stopping the embedded redis-server a previous run left behind/);
    const job = await runEmp(['job', id, '--json', '--redis', url], {});
    expect(JSON.parse(job.stdout)).toMatchObject({ id, state: 'queued' });

    restarted.kill('SIGTERM');
    expect(await exitCode(restarted, 20_000)).toBe(0);
  });
});
