import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Broker } from '@emp/core';
import { type RedisProcess, startRedis } from '@emp/testkit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, runEmp } from './testing/emp-process';

let redis: RedisProcess;
let env: Record<string, string>;

beforeAll(async () => {
  redis = await startRedis();
  env = { REDIS_URL: redis.url };
});

afterAll(async () => {
  await redis?.stop();
});

const noStackTrace = (stderr: string) => expect(stderr).not.toMatch(/^\s+at /m);

describe('emp (commands against a running Redis)', () => {
  it('submit --json prints the new job, and job shows it', async () => {
    const submitted = await runEmp(['submit', '--service', 'simulation', '--payload', '{"prompt":"a cat"}', '--json'], env);
    expect(submitted.code).toBe(0);
    const { id, pool, routable } = JSON.parse(submitted.stdout) as { id: string; pool: string; routable: boolean };
    expect(id).toMatch(/^standard\./);
    expect(pool).toBe('standard');
    // no worker has registered: the job waits, and the user is told so
    expect(routable).toBe(false);
    expect(submitted.stderr).toMatch(/no worker .* can run this job/);

    const asJson = await runEmp(['job', id, '--json'], env);
    expect(asJson.code).toBe(0);
    expect(JSON.parse(asJson.stdout)).toMatchObject({ id, state: 'queued', service: 'simulation', payload: { prompt: 'a cat' } });

    const forHumans = await runEmp(['job', id], env);
    expect(forHumans.code).toBe(0);
    expect(forHumans.stdout).toMatch(new RegExp(`^id:\\s+${id.replace('.', '\\.')}$`, 'm'));
    expect(forHumans.stdout).toMatch(/^state:\s+queued \(position 0\)$/m);
  });

  it('submit --durable on a Redis without a replica says the job is queued but not replicated, and exits 1', async () => {
    const submitted = await runEmp(['submit', '--service', 'simulation', '--durable'], { ...env, EMP_DURABLE_SUBMIT_TIMEOUT_MS: '50' });
    expect(submitted.code).toBe(1);
    expect(submitted.stderr).toMatch(/job standard\.\w+ is queued on the Redis master, but no replica acknowledged it within 50 ms/);
    noStackTrace(submitted.stderr);
    // EMP_DURABLE_SUBMIT=replica on a Redis without a replica: refused before anything is submitted
    const configured = await runEmp(['submit', '--service', 'simulation'], { ...env, EMP_DURABLE_SUBMIT: 'replica' });
    expect(configured.code).toBe(1);
    expect(configured.stderr).toMatch(/durableSubmit 'replica' \(EMP_DURABLE_SUBMIT\) needs a connected replica on every Redis master/);
  });

  it('submit without --json prints just the id, for $(...) in scripts', async () => {
    const submitted = await runEmp(['submit', '--service', 'simulation', '--priority', '5', '--tenant', 'acme'], env);
    expect(submitted.code).toBe(0);
    expect(submitted.stdout).toMatch(/^standard\.[0-9a-z]+\n$/);
  });

  it('a bad --payload exits 2 with a precise message and no stack trace', async () => {
    const result = await runEmp(['submit', '--service', 'simulation', '--payload', '{"prompt": }'], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^error: invalid --payload: not valid JSON \(.+\)$/m);
    expect(result.stdout).toBe('');
    noStackTrace(result.stderr);
  });

  it('watch --events takes only the event types the union declares, and names the unknown one (exit 2)', async () => {
    const result = await runEmp(['watch', '--events', 'job.succeeded,job.finished'], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^error: invalid --events: unknown event type 'job\.finished': expected one of job\.queued, /m);
    noStackTrace(result.stderr);
  });

  it('bad flag values and unknown services are input errors (exit 2), named by flag', async () => {
    const requirements = await runEmp(['submit', '--service', 'simulation', '--requirements', '{"pool":"Not A Pool"}'], env);
    expect(requirements.code).toBe(2);
    expect(requirements.stderr).toMatch(/error: invalid --requirements: pool: a pool name is/);

    const priority = await runEmp(['submit', '--service', 'simulation', '--priority', 'high'], env);
    expect(priority.code).toBe(2);
    expect(priority.stderr).toMatch(/error: invalid --priority: expected a whole number, got 'high'/);

    const service = await runEmp(['submit', '--service', 'teleport'], env);
    expect(service.code).toBe(2);
    expect(service.stderr).toMatch(/error: unknown service 'teleport'/);

    const unknownOption = await runEmp(['queues', '--colour'], env);
    expect(unknownOption.code).toBe(2);
    for (const r of [requirements, priority, service, unknownOption]) noStackTrace(r.stderr);
  });

  it('a job that does not exist is an error (exit 1); a malformed id is an input error (exit 2)', async () => {
    const missing = await runEmp(['job', 'standard.0000000000000000'], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^error: job standard\.0000000000000000 does not exist/m);
    noStackTrace(missing.stderr);

    const malformed = await runEmp(['job', 'not-a-job-id'], env);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toMatch(/^error: invalid job id: a job id looks like/m);
  });

  it('queues --json lists each requirement class with its depth and head', async () => {
    const submitted = await runEmp(
      ['submit', '--service', 'simulation', '--requirements', '{"pool":"heavy","hardware":{"gpu_memory_gb":80}}', '--json'],
      env,
    );
    const { id } = JSON.parse(submitted.stdout) as { id: string };

    const result = await runEmp(['queues', '--pool', 'heavy', '--json'], env);
    expect(result.code).toBe(0);
    const report = JSON.parse(result.stdout) as {
      pools: Array<{ pool: string; depth: number; classes: Array<{ definition: Record<string, unknown>; depth: number; routable: boolean; headJob: string; headAgeMs: number }> }>;
      totals: { depth: number };
    };
    expect(report.pools).toHaveLength(1);
    expect(report.pools[0]).toMatchObject({ pool: 'heavy', depth: 1 });
    expect(report.pools[0]!.classes).toEqual([
      expect.objectContaining({
        definition: { service: 'simulation', hardware: { gpu_memory_gb: 80 } },
        depth: 1,
        routable: false,
        headJob: id,
        headAgeMs: expect.any(Number),
      }),
    ]);
    expect(report.totals.depth).toBe(1);

    const table = await runEmp(['queues'], env);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^POOL\s+CLASS\s+SERVICE\s+TENANT\s+DEPTH\s+ROUTABLE\s+HEAD AGE/m);
    expect(table.stdout).toMatch(/^heavy\s+\S+\s+simulation\s+any\s+1\s+NO\s/m);
  });

  it('pools lists the configured pools, and job shows how its pool was chosen', async () => {
    const connection = new Redis(redis.url);
    const broker = await Broker.connect({ redis: connection });
    const { id } = await broker.submit({ service: 'simulation', expected_duration_s: 600 });
    connection.disconnect();
    expect(id).toMatch(/^heavy\./);

    const shown = await runEmp(['job', id], env);
    expect(shown.code).toBe(0);
    // no worker anywhere: the pool of the hint's cutoff, with nowhere better to go
    expect(shown.stdout).toMatch(/^routing:\s+hint: routed to heavy: expected_duration_s = 600 s$/m);

    const asJson = await runEmp(['pools', '--json'], env);
    expect(asJson.code).toBe(0);
    const report = JSON.parse(asJson.stdout) as { pools: Array<{ name: string; max_duration_s?: number; depth: number; default: boolean }> };
    expect(report.pools.map((p) => [p.name, p.max_duration_s ?? null, p.default])).toEqual([['fast', 30, false], ['standard', 180, true], ['heavy', null, false]]);
    expect(report.pools[2]!.depth).toBeGreaterThanOrEqual(1);

    const table = await runEmp(['pools'], env);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^POOL\s+EXPECTED\s+TARGET WAIT\s+PROFILE\s+QUEUED\s+OLDEST\s+WORKERS \(IDLE\/BUSY\)$/m);
    expect(table.stdout).toMatch(/^fast\s+< 30\.0s\s+2\.0s\s+any\s/m);
    expect(table.stdout).toMatch(/^standard \(default\)\s+30\.0s - 3m00s\s+10\.0s\s+any\s/m);
    expect(table.stdout).toMatch(/^heavy\s+>= 3m00s\s+10\.0s\s+>= 48 GB GPU\s+[1-9]/m);

    const hinted = await runEmp(['submit', '--service', 'simulation', '--expected-duration', '12', '--json'], env);
    expect(JSON.parse(hinted.stdout)).toMatchObject({ pool: 'fast' });
    const zero = await runEmp(['submit', '--service', 'simulation', '--expected-duration', '0'], env);
    expect(zero.code).toBe(2);
    expect(zero.stderr).toMatch(/expected_duration_s must be more than 0 seconds/);

    const misconfigured = await runEmp(['pools'], { ...env, EMP_POOLS: '[{"name":"quick","target_wait_s":1}]' });
    expect(misconfigured.code).toBe(2);
    expect(misconfigured.stderr).toMatch(/defaultPool: 'standard' is not a configured pool \(quick\): name one of them/);
  });

  it('cancel ends a queued job; retry puts it back; a second cancel changes nothing', async () => {
    const { id } = JSON.parse((await runEmp(['submit', '--service', 'simulation', '--json'], env)).stdout) as { id: string };

    const canceled = await runEmp(['cancel', id, '--reason', 'changed my mind'], env);
    expect(canceled).toMatchObject({ code: 0, stdout: `${id} canceled\n` });
    const again = await runEmp(['cancel', id], env);
    expect(again).toMatchObject({ code: 0, stdout: `${id} is already canceled; unchanged\n` });

    const retried = await runEmp(['retry', id, '--json'], env);
    expect(retried.code).toBe(0);
    expect(JSON.parse(retried.stdout)).toEqual({ id, state: 'queued' });

    const retryQueued = await runEmp(['retry', id], env);
    expect(retryQueued.code).toBe(1);
    expect(retryQueued.stderr).toMatch(/^error: job .* is queued; only failed, canceled or expired jobs can be retried/m);
  });

  it('workers --json is empty before any worker registers', async () => {
    const result = await runEmp(['workers', '--json'], env);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ workers: [] });
  });

  it('a Redis that does not answer is reported in one line, naming where its URL came from', async () => {
    const result = await runEmp(['queues', '--redis', 'redis://127.0.0.1:1'], env);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^error: cannot reach Redis at redis:\/\/127\.0\.0\.1:1 \(from --redis\)/m);
    noStackTrace(result.stderr);
  });
});

describe('emp: version, the one error style, finished jobs', () => {
  it('--version and -V print the version of the root package.json and exit 0', async () => {
    const { version } = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    expect(version).toMatch(/^\d+\.\d+\.\d+/);
    for (const flag of ['--version', '-V']) expect(await runEmp([flag], env)).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
  });

  it('prints every error as one line starting with a lowercase `error: `: exit 1 for a failure, 2 for bad usage', async () => {
    expect(await runEmp(['job', 'standard.0000000000000000'], env)).toEqual({
      code: 1,
      stdout: '',
      stderr: 'error: job standard.0000000000000000 does not exist (or its retention has passed)\n',
    });
    // commander's own errors too: no second line, the suggestion on the same one
    expect(await runEmp(['queues', '--colour'], env)).toEqual({ code: 2, stdout: '', stderr: "error: unknown option '--colour' (see --help)\n" });
    expect(await runEmp(['jobs', '--jsn'], env)).toEqual({ code: 2, stdout: '', stderr: "error: unknown option '--jsn'; did you mean --json? (see --help)\n" });
    expect(await runEmp(['job'], env)).toEqual({ code: 2, stdout: '', stderr: "error: missing required argument 'id' (see --help)\n" });
  });

  it('job --trace prints the timeline and the time spent in each phase, over every attempt', async () => {
    const connection = new Redis(redis.url);
    let now = 1_000_000;
    try {
      // a virtual clock, so that the phases have known lengths; a pool of its own
      const broker = await Broker.connect({ redis: connection, clock: () => now, config: { avoidMs: 0 } });
      await broker.registerWorker({ id: 'tracer', pool: 'traced', capabilities: { services: ['simulation'] } });
      const { id } = await broker.submit({ service: 'simulation', requirements: { pool: 'traced' } });
      now += 250;
      const first = (await broker.claim('traced', 'tracer')).job!;
      now += 50;
      await broker.fail(first.lease, { kind: 'infrastructure', message: 'spot interruption' });
      now += 100;
      const second = (await broker.claim('traced', 'tracer')).job!;
      await broker.progress(second.lease, { stage: 'downloading_model', value: 0, max: 100 });
      now += 2_000;
      await broker.progress(second.lease, { stage: 'loading_model' });
      now += 500;
      await broker.start(second.lease);
      now += 1_500;
      await broker.complete(second.lease, { done: true });
      // the webhook service's delivery log of the job (WebhookOutbox.deliveryLog reads it): a refused attempt, then the delivery
      const attempt = (at: number, n: number, status: number, outcome: string) =>
        JSON.stringify({ at, message: 'msg_1', type: 'job.succeeded', url: 'https://example.com/hook', job: id, attempt: n, status, latency_ms: 40, outcome });
      await connection.rpush(broker.keys.webhookLog(id), attempt(now + 100, 1, 503, 'retry'), attempt(now + 1_100, 2, 200, 'delivered'));

      const traced = await runEmp(['job', id, '--trace'], env);
      expect(traced.code).toBe(0);
      const lines = traced.stdout.trimEnd().split('\n');
      expect(lines[0]).toBe(`${id}  succeeded`);
      expect(lines.slice(1, -1).map((line) => line.replace(/\s+/g, ' '))).toEqual([
        '+0ms job.queued',
        '+250ms job.starting attempt 1 on tracer (machine local)',
        '+300ms job.queued (infrastructure)',
        '+400ms job.starting attempt 2 on tracer (machine local)',
        '+400ms job.progress downloading_model 0/100',
        '+2.4s job.progress loading_model',
        '+2.9s job.running',
        '+4.4s job.succeeded',
        '+4.5s webhook job.succeeded to https://example.com/hook, attempt 1: 503, retry in 40ms',
        '+5.5s webhook job.succeeded to https://example.com/hook, attempt 2: 200, delivered in 40ms',
      ]);
      expect(lines.at(-1)).toBe('queue wait 350ms · starting 50ms · model download 2.0s · model load 500ms · run 1.5s · total 4.4s · webhook delivered 1.1s after the end');
      const asJson = JSON.parse((await runEmp(['job', id, '--trace', '--json'], env)).stdout) as { job: { id: string }; events: unknown[]; deliveries: unknown[] };
      expect(asJson.job.id).toBe(id);
      expect(asJson.events).toHaveLength(8);
      expect(asJson.deliveries).toHaveLength(2);
    } finally {
      connection.disconnect();
    }
  });

  it('shows a finished job as `succeeded in <time>`, never the stage of its last progress report', async () => {
    const connection = new Redis(redis.url);
    try {
      // a pool of its own, so that the worker registered here makes no other test's job routable
      const broker = await Broker.connect({ redis: connection });
      await broker.registerWorker({ id: 'cli-test-worker', pool: 'finished', capabilities: { services: ['simulation'] } });
      const { id } = await broker.submit({ service: 'simulation', tenant: 'finisher', requirements: { pool: 'finished' } });
      const { job } = await broker.claim('finished', 'cli-test-worker');
      expect(job?.id).toBe(id);
      await broker.start(job!.lease);
      await broker.progress(job!.lease, { stage: 'running', value: 10, max: 10 });
      await broker.complete(job!.lease, { done: true });

      const listed = await runEmp(['jobs', '--tenant', 'finisher'], env);
      expect(listed.code).toBe(0);
      expect(listed.stdout).toMatch(new RegExp(`^${id.replace('.', '\\.')}\\s+succeeded\\s.*\\ssucceeded in \\d+(\\.\\d)?m?s$`, 'm'));
      expect(listed.stdout).not.toMatch(/running|10\/10/);

      const shown = await runEmp(['job', id], env);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toMatch(/^state:\s+succeeded in \d+(\.\d)?m?s$/m);
      expect(shown.stdout).not.toMatch(/running/);

      const asJson = await runEmp(['job', id, '--json'], env);
      expect(JSON.parse(asJson.stdout)).toMatchObject({ state: 'succeeded', progress: { stage: 'succeeded', value: 10, max: 10 } });
    } finally {
      connection.disconnect();
    }
  });
});
