import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { BUILD_DIR, Broker } from '@emp/core';
import { type RedisProcess, startRedis } from '@emp/testkit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exitCode, repoRoot, runEmp, spawnEmp, waitForOutput } from './testing/emp-process';

let redis: RedisProcess;
let connection: Redis;
let env: Record<string, string>;
const failed: string[] = [];

beforeAll(async () => {
  redis = await startRedis();
  connection = new Redis(redis.url);
  env = { REDIS_URL: redis.url };
  // a pool with a machine, two workers, four jobs: one succeeded, one failed, two queued
  const broker = await Broker.connect({ redis: connection });
  await broker.registerMachine('standard', 'gpu-box-1', 'ready', { workers: '2' });
  for (const id of ['sim-1', 'sim-2']) await broker.registerWorker({ id, pool: 'standard', machine_id: 'gpu-box-1', capabilities: { services: ['simulation'] } });
  for (let n = 0; n < 4; n++) await broker.submit({ service: 'simulation', payload: { n } });
  const done = (await broker.claim('standard', 'sim-1')).job!;
  await broker.start(done.lease);
  await broker.complete(done.lease, { ok: true });
  const broken = (await broker.claim('standard', 'sim-2')).job!;
  await broker.fail(broken.lease, { kind: 'non_retryable', message: 'the model file is corrupt' });
  failed.push(broken.id);
});

afterAll(async () => {
  connection?.disconnect();
  await redis?.stop();
});

describe('emp top', () => {
  it('--once prints one frame: per pool its throughput, workers, machines and queues per service, then the recent failures', async () => {
    const result = await runEmp(['top', '--once'], env);
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    const frame = result.stdout;
    expect(frame).toMatch(/^emp top {2}\d\d:\d\d:\d\d$/m);
    expect(frame).toMatch(/^POOL standard$/m);
    expect(frame).toMatch(/^ {2}throughput {2}2\/min over the last minute, <0\.1\/min over the last hour \(2 finished, 1 failed\)$/m);
    expect(frame).toMatch(/^ {2}workers {5}2: 2 idle, 0 busy, 0 offline$/m);
    expect(frame).toMatch(/^ {2}machines {4}1: 1 ready$/m);
    expect(frame).toMatch(/^ {2}SERVICE\s+QUEUED\s+RUNNING\s+WAITING\s+OLDEST\s+WAIT p50 5m\s+ROUTABLE$/m);
    // two of the four still queued, their head waiting for some time; the two that ran waited too
    expect(frame).toMatch(/^ {2}simulation\s+2\s+0\s+0\s+\d+(\.\d)?m?s\s+\d+(\.\d)?m?s\s+yes$/m);
    expect(frame).toMatch(/^RECENT FAILURES$/m);
    expect(frame).toMatch(new RegExp(`^ {2}\\d\\d:\\d\\d:\\d\\d\\s+standard\\s+${failed[0]!.replace('.', '\\.')}\\s+simulation\\s+sim-2\\s+non_retryable: the model file is corrupt$`, 'm'));
    // a frame for a script or a log holds no terminal escape codes
    expect(frame).not.toContain('\x1b');
  });

  it('--pool narrows the frame to one pool; a bad --interval is bad usage (exit 2)', async () => {
    const other = await runEmp(['top', '--once', '--pool', 'elsewhere'], env);
    expect(other.code).toBe(0);
    expect(other.stdout).toMatch(/^POOL elsewhere$/m);
    expect(other.stdout).not.toMatch(/^POOL standard$/m);
    expect(other.stdout).toMatch(/^ {2}no queued or running jobs$/m);

    expect(await runEmp(['top', '--interval', 'soon'], env)).toMatchObject({ code: 2, stderr: "error: invalid --interval: expected a positive number of seconds, got 'soon'\n" });
  });

  it('without a terminal prints a plain frame per interval until Ctrl-C (SIGINT), then exits 0', async () => {
    const child = spawnEmp(['top', '--interval', '0.2'], env);
    const output = await waitForOutput(child, /(^emp top .*\n[^]*){3}/m);
    child.kill('SIGINT');
    expect(await exitCode(child)).toBe(0);
    expect(output).toMatch(/^emp top {2}\d\d:\d\d:\d\d {2}every 200ms$/m);
    expect(output).not.toContain('\x1b');
  });

  it('on a terminal draws on the alternate screen and gives the terminal back when q is pressed', async () => {
    // script(1) runs emp on a pseudo-terminal, its input and output relayed through the pipes
    const command = `${process.execPath} ${join(BUILD_DIR, 'emp.js')} top --interval 0.2`;
    const child = spawn('script', ['-qfec', command, '/dev/null'], { cwd: repoRoot, env: { ...process.env, LOG_LEVEL: 'warn', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    const output = await waitForOutput(child, /POOL standard[^]*RECENT FAILURES/);
    expect(output).toContain('\x1b[?1049h'); // the alternate screen
    expect(output).toContain('(q quits)');
    let rest = '';
    child.stdout.on('data', (chunk: Buffer) => (rest += chunk.toString()));
    child.stdin.write('q');
    expect(await exitCode(child, 10_000)).toBe(0);
    // the cursor shown again and the shell's screen back
    expect(rest).toContain('\x1b[?25h\x1b[?1049l');
  });
});
