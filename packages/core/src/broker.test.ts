import { usePrivateRedis } from '@emp/testkit/private-redis';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Broker, type ClaimedJob, type Lease } from './broker';
import type { BrokerConfigInput } from './config';
import { IdempotencyConflictError, LeaseLostError, NotRetryableError, ValidationError } from './errors';
import type { WorkerCapabilities } from './capabilities';
import { SubmitJobInput } from './job';
import { undeclaredStreamEntries } from './testing/stream-contract';

const { redis, url } = usePrivateRedis();
let now = 1_000_000;

beforeEach(() => {
  now = 1_000_000;
});

// every event a test made the library append is one core/events.ts declares, field for field
afterEach(async () => {
  expect(await undeclaredStreamEntries(redis), 'stream entries outside the event union').toEqual([]);
});

async function broker(config: BrokerConfigInput = {}): Promise<Broker> {
  return Broker.connect({ redis, clock: () => now, config: { leaseMs: 10_000, avoidMs: 0, ...config } });
}

async function worker(b: Broker, id: string, capabilities: WorkerCapabilities = { services: ['simulation'] }) {
  await b.registerWorker({ id, pool: 'standard', capabilities });
  return id;
}

async function claimJob(b: Broker, workerId: string): Promise<ClaimedJob> {
  const claim = await b.claim('standard', workerId);
  if (!claim.job) throw new Error(`worker ${workerId} got no job`);
  return claim.job;
}

/**
 * A busy worker holding two of `queued` simulation jobs, and the first one's lease
 * with a later token than its own: a call made with it is a zombie's (LEASE_LOST).
 */
async function twoHeldOneStale(b: Broker, queued: number): Promise<{ first: ClaimedJob; second: ClaimedJob; stale: Lease }> {
  const w = await worker(b, 'busy');
  for (let i = 0; i < queued; i++) await b.submit({ service: 'simulation' });
  const [first, second] = [await claimJob(b, w), await claimJob(b, w)];
  return { first, second, stale: { ...first.lease, token: String(Number(first.lease.token) + 1) } };
}

async function workerStates(b: Broker): Promise<Record<string, string | undefined>> {
  return Object.fromEntries((await b.workers('standard')).map((w) => [w.id, w.state]));
}

async function events(b: Broker) {
  return b.readEvents('standard', '0', { count: 10_000 });
}

describe('matching', () => {
  const cases: Array<[string, Record<string, unknown>, WorkerCapabilities, boolean]> = [
    ['service must be offered', {}, { services: ['ollama'] }, false],
    ['hardware minimums are met', { hardware: { gpu_memory_gb: 24, ram_gb: 32 } }, { services: ['simulation'], hardware: { gpu_memory_gb: 24, ram_gb: 64 } }, true],
    ['hardware below minimum', { hardware: { gpu_memory_gb: 24 } }, { services: ['simulation'], hardware: { gpu_memory_gb: 16 } }, false],
    ['hardware the worker does not report', { hardware: { cpu_cores: 4 } }, { services: ['simulation'] }, false],
    ['required models are served', { models: ['sdxl', 'flux'] }, { services: ['simulation'], models: { simulation: ['flux', 'sdxl', 'x'] } }, true],
    ['a missing model', { models: ['sdxl', 'flux'] }, { services: ['simulation'], models: { simulation: ['sdxl'] } }, false],
    ['models served for another service only', { models: ['sdxl'] }, { services: ['simulation'], models: { comfyui: ['sdxl'] } }, false],
    ['any model with *', { models: ['sdxl'] }, { services: ['simulation'], models: { simulation: '*' } }, true],
    ['custom nodes', { custom_nodes: ['impact-pack'] }, { services: ['simulation'], custom_nodes: ['impact-pack', 'was'] }, true],
    ['missing custom node', { custom_nodes: ['impact-pack'] }, { services: ['simulation'] }, false],
    ['array constraint: worker has all', { constraints: { features: ['fp8', 'nvlink'] } }, { services: ['simulation'], labels: { features: ['nvlink', 'fp8', 'x'] } }, true],
    ['array constraint: one missing', { constraints: { features: ['fp8', 'nvlink'] } }, { services: ['simulation'], labels: { features: ['fp8'] } }, false],
    ['number constraint: at least', { constraints: { cuda: 12 } }, { services: ['simulation'], labels: { cuda: 12.4 } }, true],
    ['number constraint: below', { constraints: { cuda: 12 } }, { services: ['simulation'], labels: { cuda: 11.8 } }, false],
    ['string constraint: equal', { constraints: { region: 'eu' } }, { services: ['simulation'], labels: { region: 'eu' } }, true],
    ['string constraint: other', { constraints: { region: 'eu' } }, { services: ['simulation'], labels: { region: 'us' } }, false],
    ['bool constraint', { constraints: { spot: false } }, { services: ['simulation'], labels: { spot: false } }, true],
    ['nested constraint', { constraints: { gpu: { vendor: 'nvidia', arch: ['hopper'] } } }, { services: ['simulation'], labels: { gpu: { vendor: 'nvidia', arch: ['hopper', 'ampere'], count: 8 } } }, true],
    ['nested constraint mismatch', { constraints: { gpu: { vendor: 'nvidia' } } }, { services: ['simulation'], labels: { gpu: { vendor: 'amd' } } }, false],
    ['negative: worker lacks the label', { exclude: { region: 'cn' } }, { services: ['simulation'] }, true],
    ['negative: worker has it', { exclude: { region: 'cn' } }, { services: ['simulation'], labels: { region: 'cn' } }, false],
    ['negative array: has none of them', { exclude: { features: ['debug', 'slow'] } }, { services: ['simulation'], labels: { features: ['fp8'] } }, true],
    ['negative array: has one of them', { exclude: { features: ['debug', 'slow'] } }, { services: ['simulation'], labels: { features: ['slow'] } }, false],
    ['negative nested', { exclude: { gpu: { vendor: 'amd' } } }, { services: ['simulation'], labels: { gpu: { vendor: 'amd' } } }, false],
    ['strict isolation needs a dedicated worker', { isolation: 'strict' }, { services: ['simulation'], tenants: { allowed: ['acme', 'other'] } }, false],
    ['strict isolation on a dedicated worker', { isolation: 'strict' }, { services: ['simulation'], tenants: { allowed: ['acme'] } }, true],
    ['allowed tenants exclude others', {}, { services: ['simulation'], tenants: { allowed: ['other'] } }, false],
    ['denied tenant', {}, { services: ['simulation'], tenants: { denied: ['acme'] } }, false],
  ];

  it.each(cases)('%s', async (_name, requirements, capabilities, expected) => {
    const b = await broker();
    await worker(b, 'w', capabilities);
    const submitted = await b.submit({ service: 'simulation', tenant: 'acme', requirements });
    const claim = await b.claim('standard', 'w');
    expect(claim.job?.id ?? null).toBe(expected ? submitted.id : null);
  });

  it('a worker reserved for a workflow runs only that workflow', async () => {
    const b = await broker();
    await worker(b, 'reserved', { services: ['simulation'], workflow_id: 'wf-1' });
    const other = await b.submit({ service: 'simulation', workflow_id: 'wf-2' });
    const plain = await b.submit({ service: 'simulation' });
    const mine = await b.submit({ service: 'simulation', workflow_id: 'wf-1' });
    expect((await claimJob(b, 'reserved')).id).toBe(mine.id);
    expect((await b.claim('standard', 'reserved')).job).toBeNull();
    expect((await b.getJob(other.id))?.state).toBe('queued');
    expect((await b.getJob(plain.id))?.state).toBe('queued');
  });
});

describe('ordering', () => {
  it('serves higher priority first, then submission order, across classes', async () => {
    const b = await broker();
    await worker(b, 'w', { services: ['simulation'], labels: { region: 'eu' } });
    const a = await b.submit({ service: 'simulation' });
    const c = await b.submit({ service: 'simulation', requirements: { constraints: { region: 'eu' } } });
    const urgent = await b.submit({ service: 'simulation', priority: 10 });
    const d = await b.submit({ service: 'simulation' });
    const order = [];
    for (let i = 0; i < 4; i++) order.push((await claimJob(b, 'w')).id);
    expect(order).toEqual([urgent.id, a.id, c.id, d.id]);
  });

  it('a retried job keeps its original place ahead of newer work', async () => {
    const b = await broker({ avoidMs: 0 });
    await worker(b, 'w');
    const first = await b.submit({ service: 'simulation', backoff: { delay_ms: 100, jitter: 0 } });
    const job = await claimJob(b, 'w');
    const later = await b.submit({ service: 'simulation' });
    expect((await b.fail(job.lease, { kind: 'retryable', message: 'flaky' })).outcome).toBe('retrying');
    now += 100;
    await b.tick('standard');
    expect((await claimJob(b, 'w')).id).toBe(first.id);
    expect((await claimJob(b, 'w')).id).toBe(later.id);
  });

  it('a job that failed on a worker goes to another worker first', async () => {
    const b = await broker({ avoidMs: 5_000 });
    await worker(b, 'w1');
    await worker(b, 'w2');
    const submitted = await b.submit({ service: 'simulation' });
    const job = await claimJob(b, 'w1');
    await b.fail(job.lease, { kind: 'infrastructure', message: 'spot interruption' });
    const retryOnSame = await b.claim('standard', 'w1');
    expect(retryOnSame.job).toBeNull();
    expect(retryOnSame.job === null && retryOnSame.retryAt).toBe(now + 5_000);
    expect((await claimJob(b, 'w2')).id).toBe(submitted.id);
  });

  it('the avoided worker still takes the job once the avoid window has passed', async () => {
    const b = await broker({ avoidMs: 5_000 });
    await worker(b, 'w1');
    await worker(b, 'w2');
    const submitted = await b.submit({ service: 'simulation' });
    await b.fail((await claimJob(b, 'w1')).lease, { kind: 'infrastructure', message: 'spot interruption' });
    expect((await b.claim('standard', 'w1')).job).toBeNull();
    now += 5_000;
    expect((await claimJob(b, 'w1')).id).toBe(submitted.id);
  });

  it('with no other capable worker online, the worker a job failed on takes it again at once, ahead of lower-priority work', async () => {
    const b = await broker({ avoidMs: 10_000 });
    await worker(b, 'w1');
    // w2 could run it but is offline; w3 is online but cannot run it
    await worker(b, 'w2');
    await b.setWorkerState('standard', 'w2', 'offline');
    await b.registerWorker({ id: 'w3', pool: 'standard', capabilities: { services: ['comfyui'] } });
    const retried = await b.submit({ service: 'simulation', priority: 10 });
    const lower = await b.submitMany(Array.from({ length: 5 }, () => ({ service: 'simulation' })));
    await b.fail((await claimJob(b, 'w1')).lease, { kind: 'retryable', message: 'out of memory' });
    now += 2_000; // past the backoff, well inside the avoid window
    await b.tick('standard');
    expect((await claimJob(b, 'w1')).id).toBe(retried.id);
    expect(lower).toHaveLength(5);
  });
});

describe('submit', () => {
  it('the same idempotency key returns the same job; a different body is a conflict', async () => {
    const b = await broker();
    const first = await b.submit({ service: 'simulation', payload: { a: 1 }, idempotency_key: 'k1' });
    const again = await b.submit({ service: 'simulation', payload: { a: 1 }, idempotency_key: 'k1' });
    expect(again).toEqual({ ...first, duplicate: true });
    await expect(b.submit({ service: 'simulation', payload: { a: 2 }, idempotency_key: 'k1' })).rejects.toBeInstanceOf(
      IdempotencyConflictError,
    );
    const otherTenant = await b.submit({ service: 'simulation', tenant: 't2', payload: { a: 1 }, idempotency_key: 'k1' });
    expect(otherTenant.id).not.toBe(first.id);
    expect((await b.queueStats('standard')).classes.reduce((n, c) => n + c.depth, 0)).toBe(2);
  });

  it('submits in bulk and reads alike on a client whose commands ioredis makes itself (friendly error stacks)', async () => {
    const friendly = new Redis(url(), { showFriendlyErrorStack: true });
    try {
      const b = await Broker.connect({ redis: friendly, clock: () => now });
      const results = await b.submitMany([{ service: 'simulation', payload: { a: 1 }, priority: 2 }, { service: 'nosuch' }, { service: 'simulation', delay_ms: 1_000 }]);
      expect(results.map((r) => ('id' in r ? r.pool : r.code))).toEqual(['standard', 'UNKNOWN_SERVICE', 'standard']);
      const read = await b.getJobsSettled(results.flatMap((r) => ('id' in r ? [r.id] : [])));
      expect(read.map((r) => r.status === 'fulfilled' && r.value?.state)).toEqual(['queued', 'queued']);
      expect(await b.getJob((results[0] as { id: string }).id)).toMatchObject({ priority: 2, payload: { a: 1 } });
    } finally {
      friendly.disconnect();
    }
  });

  it('a bulk submit names each class once per call: a class whose first job in the call was refused is made by its next', async () => {
    const b = await broker();
    await b.submit({ service: 'simulation', payload: { a: 1 }, idempotency_key: 'k9' });
    const results = await b.submitMany([
      { service: 'simulation', requirements: { models: ['m1'] }, payload: { a: 2 }, idempotency_key: 'k9' },
      { service: 'simulation', requirements: { models: ['m1'] } },
      { service: 'simulation', requirements: { models: ['m2', 'm1'] }, delay_ms: 1_000 },
      { service: 'simulation', requirements: { models: ['m1'] }, priority: 3 },
      { service: 'simulation', requirements: { models: ['m1', 'm2'] }, tenant: 'acme' },
    ]);
    expect(results.map((r) => ('id' in r ? 'submitted' : r.code))).toEqual(['IDEMPOTENCY_CONFLICT', 'submitted', 'submitted', 'submitted', 'submitted']);
    const jobs = await Promise.all(results.slice(1).map(async (r) => (await b.getJob((r as { id: string }).id))!));
    expect(jobs.map((job) => [job.requirements.models, job.priority, job.tenant])).toEqual([
      [['m1'], 0, 'default'],
      // a job shows its class's definition: its models as a set
      [['m1', 'm2'], 0, 'default'],
      [['m1'], 3, 'default'],
      [['m1', 'm2'], 0, 'acme'],
    ]);
    const classes = (await b.queueStats('standard')).classes;
    expect(classes.map((c) => [JSON.stringify(c.definition), c.depth]).sort()).toEqual([
      ['{"models":["m1","m2"],"service":"simulation"}', 1],
      ['{"models":["m1"],"service":"simulation"}', 2],
      ['{"service":"simulation"}', 1],
    ]);
    expect(new Set(jobs.map((job) => job.requirement_class)).size).toBe(2);
  });

  it('submitAndRead answers with the job as getJob reads it, the original one for a repeated idempotency key', async () => {
    const b = await broker();
    const parsed = SubmitJobInput.parse({ service: 'simulation', payload: { a: 1 }, priority: 3, idempotency_key: 'k2' });
    const { submitted, job } = await b.submitAndRead(parsed);
    expect(submitted).toMatchObject({ pool: 'standard', duplicate: false, routable: false });
    expect(job).toEqual(await b.getJob(submitted.id));
    expect(job).toMatchObject({ state: 'queued', position: 0, priority: 3, payload: { a: 1 }, idempotency_key: 'k2' });
    const again = await b.submitAndRead(SubmitJobInput.parse({ service: 'simulation', payload: { a: 1 }, priority: 3, idempotency_key: 'k2' }));
    expect(again).toEqual({ submitted: { ...submitted, duplicate: true }, job });
    await expect(b.submitAndRead(SubmitJobInput.parse({ service: 'simulation', idempotency_key: 'k2' }))).rejects.toBeInstanceOf(IdempotencyConflictError);
    await expect(b.submitAndRead(SubmitJobInput.parse({ service: 'nosuch' }))).rejects.toMatchObject({ code: 'UNKNOWN_SERVICE' });
  });

  it('submits and job reads made in the same event-loop turn go out in one write, each answered with its own job or error', async () => {
    const b = await broker();
    await b.submitAndRead(SubmitJobInput.parse({ service: 'simulation', idempotency_key: 'taken' }));
    // what the broker's connection writes to its socket from here on
    const socket = (redis as unknown as { stream: { write: (...args: unknown[]) => boolean } }).stream;
    const write = socket.write;
    let writes = 0;
    socket.write = function (this: unknown, ...args: unknown[]) {
      writes++;
      return write.apply(this, args);
    };
    try {
      const singles = Array.from({ length: 8 }, (_, i) => b.submitAndRead(SubmitJobInput.parse({ service: 'simulation', payload: { i } })));
      // another body under a key already used: this submit alone fails
      const conflicting = b.submitAndRead(SubmitJobInput.parse({ service: 'simulation', payload: { other: true }, idempotency_key: 'taken' }));
      const batch = b.submitMany([{ service: 'simulation', payload: { many: 1 } }, { service: 'simulation', payload: { many: 2 } }]);
      await Promise.allSettled([...singles, conflicting, batch]);
      expect(writes).toBe(1);
      const answers = await Promise.all(singles);
      expect(answers.map((a) => a.job?.payload)).toEqual(Array.from({ length: 8 }, (_, i) => ({ i })));
      for (const answer of answers) expect(answer.job).toEqual(await b.getJob(answer.submitted.id));
      await expect(conflicting).rejects.toBeInstanceOf(IdempotencyConflictError);
      const many = await batch;
      expect(await Promise.all(many.map(async (r) => ('id' in r ? (await b.getJob(r.id))?.payload : r)))).toEqual([{ many: 1 }, { many: 2 }]);

      // reads of one turn too, a job that does not exist among them
      writes = 0;
      const read = await Promise.all([...answers.map((a) => b.getJob(a.submitted.id)), b.getJob('standard.m3kx9a0b1c2d3e4f')]);
      expect(writes).toBe(1);
      expect(read).toEqual([...answers.map((a) => a.job), null]);
    } finally {
      socket.write = write;
    }
  });

  it('keeps the trace context a submit carries and hands it to the claim; a job without one claims without', async () => {
    const b = await broker();
    await worker(b, 'w1');
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const traced = await b.submitAndRead(SubmitJobInput.parse({ service: 'simulation' }), { traceparent });
    await b.submitAndRead(SubmitJobInput.parse({ service: 'simulation' }), { traceparent: 'not-a-traceparent' });
    const first = await claimJob(b, 'w1');
    expect(first).toMatchObject({ id: traced.submitted.id, traceparent });
    expect((await claimJob(b, 'w1')).traceparent).toBeUndefined();
  });

  it('a batch refuses only its conflicting job, which leaves nothing behind, and keeps order and fields', async () => {
    const b = await broker();
    const first = await b.submit({ service: 'simulation', payload: { a: 1 }, idempotency_key: 'k1' });
    const eventsBefore = (await events(b)).length;
    const batch: SubmitJobInput[] = Array.from({ length: 250 }, (_, i) => ({ service: 'simulation', payload: { i }, priority: i % 3 }));
    batch[120] = { service: 'simulation', payload: { a: 2 }, idempotency_key: 'k1' };
    batch[121] = { service: 'simulation', payload: { a: 1 }, idempotency_key: 'k1' };
    const results = await b.submitMany(batch);

    expect(results[120]).toBeInstanceOf(IdempotencyConflictError);
    expect(results[121]).toEqual({ ...first, duplicate: true });
    const accepted = results.filter((r, i) => i !== 120 && i !== 121) as Array<{ id: string; duplicate: boolean }>;
    expect(accepted.every((r) => r.duplicate === false)).toBe(true);
    expect(new Set(accepted.map((r) => r.id)).size).toBe(248);
    expect((await b.queueStats('standard')).classes.reduce((n, c) => n + c.depth, 0)).toBe(249);
    expect((await events(b)).length - eventsBefore).toBe(248);
    const sample = await b.getJob(accepted[200]!.id);
    expect(sample).toMatchObject({ payload: { i: 202 }, priority: 202 % 3, state: 'queued' });
  });

  it('a job no registered worker can run is accepted but shown unroutable, until one registers', async () => {
    const b = await broker();
    await worker(b, 'small', { services: ['simulation'], hardware: { gpu_memory_gb: 8 } });
    const big = await b.submit({ service: 'simulation', requirements: { hardware: { gpu_memory_gb: 80 } } });
    expect(big.routable).toBe(false);
    expect((await b.getJob(big.id))?.routable).toBe(false);
    expect((await b.queueStats('standard')).classes[0]?.routable).toBe(false);
    const registered = await b.registerWorker({ id: 'big', pool: 'standard', capabilities: { services: ['simulation'], hardware: { gpu_memory_gb: 80 } } });
    expect(registered.becameRoutable).toBe(1);
    expect((await b.getJob(big.id))?.routable).toBe(true);
    expect((await events(b)).some((e) => e.type === 'class.routable')).toBe(true);
  });

  it('shows the queue position within the job\'s class', async () => {
    const b = await broker();
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await b.submit({ service: 'simulation' })).id);
    expect((await b.getJob(ids[2]!))?.position).toBe(2);
  });

  it('a delayed job is claimable only once due', async () => {
    const b = await broker();
    await worker(b, 'w');
    const delayed = await b.submit({ service: 'simulation', delay_ms: 1_000 });
    expect((await b.claim('standard', 'w')).job).toBeNull();
    now += 1_000;
    await b.tick('standard');
    expect((await claimJob(b, 'w')).id).toBe(delayed.id);
  });
});

describe('leases and fencing', () => {
  it('an expired lease puts the job back as worker_lost without using up attempts', async () => {
    const b = await broker();
    await worker(b, 'w1');
    await worker(b, 'w2');
    const submitted = await b.submit({ service: 'simulation', max_attempts: 1 });
    const first = await claimJob(b, 'w1');
    await b.start(first.lease);
    now += 10_001;
    expect((await b.tick('standard')).handled).toBeGreaterThan(0);
    const job = await b.getJob(submitted.id);
    expect(job).toMatchObject({ state: 'queued', failures: 0, infra_failures: 1 });
    expect(job?.error?.kind).toBe('worker_lost');
    const second = await claimJob(b, 'w2');
    expect(second.attempt).toBe(2);
    // the zombie's late calls are refused and change nothing
    await expect(b.complete(first.lease, { from: 'zombie' })).rejects.toBeInstanceOf(LeaseLostError);
    await expect(b.progress(first.lease, { stage: 'running' })).rejects.toBeInstanceOf(LeaseLostError);
    await expect(b.fail(first.lease, { kind: 'retryable', message: 'x' })).rejects.toBeInstanceOf(LeaseLostError);
    expect(await b.heartbeat('standard', 'w1', [first.lease])).toEqual([{ jobId: submitted.id, verdict: 'lost' }]);
    await b.complete(second.lease, { from: 'w2' });
    const done = await b.getJob(submitted.id);
    expect(done).toMatchObject({ state: 'succeeded', result: { from: 'w2' } });
    expect((await events(b)).filter((e) => e.type === 'job.succeeded')).toHaveLength(1);
  });

  it('heartbeats keep a lease alive', async () => {
    const b = await broker();
    await worker(b, 'w');
    const submitted = await b.submit({ service: 'simulation' });
    const job = await claimJob(b, 'w');
    for (let i = 0; i < 5; i++) {
      now += 8_000;
      expect(await b.heartbeat('standard', 'w', [job.lease])).toEqual([]);
      await b.tick('standard');
    }
    expect((await b.getJob(submitted.id))?.state).toBe('starting');
  });

  it('a worker process that restarts under the same id hands back what its predecessor held at once', async () => {
    const b = await broker();
    await worker(b, 'gpu0');
    const submitted = await b.submit({ service: 'simulation' });
    const before = await claimJob(b, 'gpu0');
    await b.registerWorker({ id: 'gpu0', pool: 'standard', capabilities: { services: ['simulation'] } }, { freshStart: true });
    expect(await b.getJob(submitted.id)).toMatchObject({ state: 'queued', infra_failures: 1, error: { kind: 'worker_lost' } });
    await expect(b.complete(before.lease, {})).rejects.toBeInstanceOf(LeaseLostError);
  });

  it('progress reports renew the lease, and a job view shows when it runs out', async () => {
    const b = await broker();
    await worker(b, 'w');
    const submitted = await b.submit({ service: 'simulation' });
    const job = await claimJob(b, 'w');
    expect((await b.getJob(submitted.id))?.deadlines.lease_until).toBe(now + 10_000);
    now += 9_000;
    await b.progress(job.lease, { stage: 'downloading_model', value: 1, max: 10 });
    now += 9_000;
    await b.tick('standard');
    expect(await b.getJob(submitted.id)).toMatchObject({ state: 'starting', deadlines: { lease_until: now + 1_000 } });
  });

  it('what ran out while nobody watched the clock gets one renewal interval of grace, then is reaped', async () => {
    const b = await broker({ offlineAfterMs: 20_000, leaseGraceMs: 3_000 });
    await worker(b, 'alive');
    await worker(b, 'dead');
    const kept = await b.submit({ service: 'simulation' });
    const alive = await claimJob(b, 'alive');
    const lost = await b.submit({ service: 'simulation' });
    await claimJob(b, 'dead');
    await b.tick('standard');
    // Redis down (or no scheduler running) for 25 s: both leases (10 s) and both offline deadlines ran out meanwhile
    now += 25_000;
    expect(await b.tick('standard')).toEqual({ handled: 0, nextDueInMs: 3_000 });
    expect((await events(b)).filter((e) => e.type === 'clock.unwatched')).toEqual([
      expect.objectContaining({ from: 1_000_000, gap_ms: 25_000, grace_until: now + 3_000 }),
    ]);
    expect(await redis.hgetall(b.keys.clock('standard'))).toEqual({
      tick_at: String(now),
      unwatched_from: '1000000',
      unwatched_to: String(now),
    });
    now += 1_000;
    expect(await b.heartbeat('standard', 'alive', [alive.lease])).toEqual([]);
    now += 1_999;
    await b.tick('standard');
    expect((await b.getJob(lost.id))?.state).toBe('starting');
    expect(await workerStates(b)).toEqual({ alive: 'busy', dead: 'busy' });
    now += 1; // the grace is over: the worker that did not renew is lost
    expect((await b.tick('standard')).handled).toBe(1);
    expect(await b.getJob(lost.id)).toMatchObject({ state: 'queued', infra_failures: 1, error: { kind: 'worker_lost' } });
    expect(await b.getJob(kept.id)).toMatchObject({ state: 'starting', attempts: 1, worker: 'alive' });
    // offline detection waits half of offlineAfterMs (workers and machines report at least that often)
    expect(await workerStates(b)).toEqual({ alive: 'busy', dead: 'idle' });
    for (let second = 0; second < 6; second++) {
      now += 1_000; // the clock is watched again: ticks come every second
      await b.tick('standard');
    }
    now += 999;
    await b.tick('standard');
    expect(await workerStates(b)).toEqual({ alive: 'busy', dead: 'idle' });
    now += 1;
    await b.tick('standard');
    expect(await workerStates(b)).toEqual({ alive: 'busy', dead: 'offline' });
  });

  it('a lease that ran out before the clock went unwatched is reaped at once', async () => {
    const b = await broker();
    await worker(b, 'w');
    const submitted = await b.submit({ service: 'simulation' });
    await claimJob(b, 'w');
    // the last tick came after the lease ran out (10 s) but left it (a full batch, say); then the clock went unwatched
    await redis.hset(b.keys.clock('standard'), 'tick_at', String(now + 12_000));
    now += 30_000;
    await b.tick('standard');
    expect((await b.getJob(submitted.id))?.state).toBe('queued');
  });

  it('ticks that always come late still reap a dead worker\'s lease, one tick later', async () => {
    const b = await broker({ leaseGraceMs: 4_000 });
    await worker(b, 'w');
    const submitted = await b.submit({ service: 'simulation' });
    await claimJob(b, 'w');
    await b.tick('standard');
    const expiry = now + 10_000;
    for (let i = 0; i < 10 && (await b.getJob(submitted.id))?.state !== 'queued'; i++) {
      now += 5_000; // every tick finds the clock unwatched
      await b.tick('standard');
    }
    expect((await b.getJob(submitted.id))?.state).toBe('queued');
    expect(now).toBe(expiry + 5_000);
  });

  it('a job the worker no longer names in its heartbeats goes back to the queue', async () => {
    const b = await broker();
    await worker(b, 'w');
    const submitted = await b.submit({ service: 'simulation' });
    await b.heartbeat('standard', 'w', []);
    now += 1;
    await claimJob(b, 'w'); // the reply never reaches the worker
    now += 1;
    await b.heartbeat('standard', 'w', []); // may have been sent before the reply: not yet held against it
    expect((await b.getJob(submitted.id))?.state).toBe('starting');
    now += 1;
    await b.heartbeat('standard', 'w', []);
    expect(await b.getJob(submitted.id)).toMatchObject({ state: 'queued', infra_failures: 1, error: { kind: 'worker_lost' } });
  });

  it('too many infrastructure failures fail the job', async () => {
    const b = await broker();
    await worker(b, 'w');
    const submitted = await b.submit({ service: 'simulation', max_infra_attempts: 2 });
    for (let i = 0; i < 2; i++) {
      await b.fail((await claimJob(b, 'w')).lease, { kind: 'infrastructure', message: 'preempted' });
    }
    expect(await b.getJob(submitted.id)).toMatchObject({ state: 'failed', infra_failures: 2 });
  });
});

describe('where a payload is kept', () => {
  const jobKey = (id: string) => `emp:{standard}:job:${id}`;
  const payloadKey = (id: string) => `emp:{standard}:payload:${id}`;
  // JSON of exactly `bytes` bytes, with characters of 1 to 4 bytes, so pieces end inside some
  const payloadOf = (bytes: number) => {
    let text = '';
    for (let i = 0; Buffer.byteLength(JSON.stringify({ t: text })) < bytes; i++) text += ['a', 'é', '€', '🎨'][i % 4];
    while (Buffer.byteLength(JSON.stringify({ t: text })) > bytes) text = text.slice(0, -1);
    while (Buffer.byteLength(JSON.stringify({ t: text })) < bytes) text += 'a';
    return { t: text };
  };

  it('keeps a queued job\'s payload of up to 512 bytes in its hash, and moves it to a key of its own when claimed', async () => {
    const b = await broker({ retentionMs: 60_000 });
    await worker(b, 'w');
    for (const bytes of [10, 64, 65, 200, 512]) {
      const payload = payloadOf(bytes);
      expect(Buffer.byteLength(JSON.stringify(payload))).toBe(bytes);
      const { id } = await b.submit({ service: 'simulation', payload });
      expect(await redis.exists(payloadKey(id)), `${bytes} B: one key while queued`).toBe(0);
      expect(await redis.object('ENCODING', jobKey(id)), `${bytes} B: a listpack`).toBe('listpack');
      expect((await b.getJob(id))!.payload, `${bytes} B read while queued`).toEqual(payload);

      const claimed = await claimJob(b, 'w');
      expect(claimed.id).toBe(id);
      expect(claimed.payload, `${bytes} B as claimed`).toEqual(payload);
      const fields = Object.keys(await redis.hgetall(jobKey(id)));
      expect(fields.filter((f) => f === 'pn' || /^p\d+$/.test(f)), `${bytes} B: no pieces left once claimed`).toEqual([]);
      expect(await redis.exists(payloadKey(id)), `${bytes} B: its own key once claimed`).toBe(bytes > 64 ? 1 : 0);
      expect((await b.getJob(id))!.payload, `${bytes} B read once claimed`).toEqual(payload);

      await b.complete(claimed.lease, null);
      if (bytes > 64) expect(await redis.pttl(payloadKey(id)), `${bytes} B: expires with the job`).toBeGreaterThan(0);
    }
  });

  it('keeps a larger payload, or one beside a value over 64 bytes, in a key of its own from the start', async () => {
    const b = await broker();
    await worker(b, 'w');
    const large = payloadOf(513);
    const withWebhook = payloadOf(200);
    const a = await b.submit({ service: 'simulation', payload: large });
    const c = await b.submit({ service: 'simulation', payload: withWebhook, webhook: { url: `https://hooks.example.com/${'x'.repeat(60)}` } });
    for (const [id, payload] of [[a.id, large], [c.id, withWebhook]] as const) {
      expect(await redis.exists(payloadKey(id))).toBe(1);
      expect(await redis.hexists(jobKey(id), 'payload')).toBe(0);
      expect((await b.getJob(id))!.payload).toEqual(payload);
      expect((await claimJob(b, 'w')).payload).toEqual(payload);
    }
  });

  it('a queued job canceled with its payload in pieces keeps nothing beside its hash', async () => {
    const b = await broker({ failedRetentionMs: 60_000 });
    const payload = payloadOf(300);
    const { id } = await b.submit({ service: 'simulation', payload });
    await b.cancel(id, 'not needed');
    expect(await redis.exists(payloadKey(id))).toBe(0);
    expect(await redis.pttl(jobKey(id))).toBeGreaterThan(0);
    expect((await b.getJob(id))!.payload).toEqual(payload);
  });
});

describe('failures and retries', () => {
  it('retryable failures back off exponentially, then fail when attempts run out', async () => {
    const b = await broker();
    await worker(b, 'w');
    const submitted = await b.submit({
      service: 'simulation',
      max_attempts: 3,
      backoff: { type: 'exponential', delay_ms: 1_000, jitter: 0 },
    });
    const delays = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const job = await claimJob(b, 'w');
      const { outcome } = await b.fail(job.lease, { kind: 'retryable', message: `boom ${attempt}` });
      const view = await b.getJob(submitted.id);
      if (attempt < 3) {
        expect(outcome).toBe('retrying');
        delays.push(view!.timestamps.retry_at! - now);
        expect((await b.claim('standard', 'w')).job).toBeNull();
        now = view!.timestamps.retry_at!;
        await b.tick('standard');
      } else {
        expect(outcome).toBe('failed');
        expect(view).toMatchObject({ state: 'failed', failures: 3, error: { kind: 'retryable', message: 'boom 3' } });
      }
    }
    expect(delays).toEqual([1_000, 2_000]);
  });

  it('a non-retryable failure fails at once, and a manual retry keeps the id', async () => {
    const b = await broker();
    await worker(b, 'w');
    const submitted = await b.submit({ service: 'simulation' });
    const { outcome } = await b.fail((await claimJob(b, 'w')).lease, { kind: 'non_retryable', message: 'bad workflow' });
    expect(outcome).toBe('failed');
    expect(await b.retry(submitted.id)).toBe('queued');
    const job = await claimJob(b, 'w');
    expect(job.id).toBe(submitted.id);
    expect(job.attempt).toBe(2);
    await expect(b.retry(submitted.id)).rejects.toBeInstanceOf(NotRetryableError);
  });

  it('fail with claimNext hands the worker its next job in the same call', async () => {
    const b = await broker({ avoidMs: 60_000 });
    await worker(b, 'w');
    await b.submit({ service: 'simulation' });
    const second = await b.submit({ service: 'simulation' });
    const { outcome, next } = await b.fail((await claimJob(b, 'w')).lease, { kind: 'retryable', message: 'x' }, { claimNext: true });
    expect(outcome).toBe('retrying');
    expect(next?.job?.id).toBe(second.id);
  });
});

describe('cancel', () => {
  it('cancels a queued job at once and is idempotent', async () => {
    const b = await broker();
    await worker(b, 'w');
    const submitted = await b.submit({ service: 'simulation' });
    expect(await b.cancel(submitted.id)).toEqual({ state: 'canceled', changed: true });
    expect(await b.cancel(submitted.id)).toEqual({ state: 'canceled', changed: false });
    expect((await b.claim('standard', 'w')).job).toBeNull();
    expect((await b.queueStats('standard')).classes[0]?.depth).toBe(0);
  });

  it('cancels a running job: the worker is signalled, its token stops working', async () => {
    const b = await broker();
    await worker(b, 'w');
    const submitted = await b.submit({ service: 'simulation' });
    const job = await claimJob(b, 'w');
    await b.start(job.lease);
    await b.cancel(submitted.id, 'user asked');
    const signals = await b.waitForSignals(redis, 'standard', 'w', 100);
    expect(signals).toContainEqual({ type: 'cancel', jobId: submitted.id });
    expect(await b.heartbeat('standard', 'w', [job.lease])).toEqual([{ jobId: submitted.id, verdict: 'canceled' }]);
    await expect(b.complete(job.lease, {})).rejects.toBeInstanceOf(LeaseLostError);
    expect(await b.getJob(submitted.id)).toMatchObject({ state: 'canceled', cancel_reason: 'user asked' });
  });
});

describe('deadlines', () => {
  it('a job left in the queue past its ttl expires', async () => {
    const b = await broker();
    const submitted = await b.submit({ service: 'simulation', deadlines: { queue_ttl_ms: 5_000 } });
    now += 5_000;
    await b.tick('standard');
    expect(await b.getJob(submitted.id)).toMatchObject({ state: 'expired', expire_reason: 'queue_ttl' });
  });

  it('a claimed job not running by its start deadline expires and its worker is told', async () => {
    const b = await broker();
    await worker(b, 'w');
    const submitted = await b.submit({ service: 'simulation', deadlines: { start_timeout_ms: 3_000 } });
    await claimJob(b, 'w');
    now += 3_000;
    await b.tick('standard');
    expect(await b.getJob(submitted.id)).toMatchObject({ state: 'expired', expire_reason: 'start_timeout' });
    expect(await b.waitForSignals(redis, 'standard', 'w', 100)).toContainEqual({ type: 'expired', jobId: submitted.id });
  });

  it('a job running past its execution timeout fails that attempt with kind timeout', async () => {
    const b = await broker();
    await worker(b, 'w');
    const submitted = await b.submit({ service: 'simulation', max_attempts: 1, deadlines: { execution_timeout_ms: 2_000 } });
    const job = await claimJob(b, 'w');
    await b.start(job.lease);
    now += 2_000;
    await b.heartbeat('standard', 'w', [job.lease]);
    await b.tick('standard');
    expect(await b.getJob(submitted.id)).toMatchObject({ state: 'failed', error: { kind: 'timeout' } });
  });
});

describe('retention and registry', () => {
  it('finished jobs expire after their retention', async () => {
    const b = await broker({ retentionMs: 60_000, failedRetentionMs: 120_000 });
    await worker(b, 'w');
    const ok = await b.submit({ service: 'simulation' });
    await b.complete((await claimJob(b, 'w')).lease, 1);
    const bad = await b.submit({ service: 'simulation' });
    await b.fail((await claimJob(b, 'w')).lease, { kind: 'non_retryable', message: 'no' });
    const okTtl = await redis.pttl(`emp:{standard}:job:${ok.id}`);
    const badTtl = await redis.pttl(`emp:{standard}:job:${bad.id}`);
    expect(okTtl).toBeGreaterThan(50_000);
    expect(okTtl).toBeLessThanOrEqual(60_000);
    expect(badTtl).toBeGreaterThan(110_000);
  });

  it('a silent worker turns offline, stays listed, and is removed after its retention', async () => {
    const b = await broker({ offlineAfterMs: 30_000, registryRetentionMs: 3_600_000 });
    await worker(b, 'w');
    now += 30_000;
    await b.tick('standard');
    expect((await b.workers('standard')).map((w) => [w.id, w.state])).toEqual([['w', 'offline']]);
    expect((await b.queueStats('standard')).offlineWorkers).toBe(1);
    await b.heartbeat('standard', 'w', []);
    expect((await b.workers('standard'))[0]?.state).toBe('idle');
    // it was dropped from the idle index while offline, so it is woken to claim again
    expect(await b.waitForSignals(redis, 'standard', 'w', 100)).toEqual([{ type: 'wake', requirementClass: '' }]);
    now += 30_000 + 3_600_000;
    await b.tick('standard');
    now += 15_000; // nobody ticked meanwhile: the worker first gets a grace (half of offlineAfterMs) to speak
    await b.tick('standard');
    await b.tick('standard');
    expect(await b.workers('standard')).toEqual([]);
    expect((await events(b)).map((e) => e.type)).toContain('worker.gone');
  });
});

describe('idle workers', () => {
  it('a submit wakes exactly one capable idle worker', async () => {
    const b = await broker();
    await worker(b, 'cpu', { services: ['ollama'] });
    await worker(b, 'a');
    await worker(b, 'b');
    for (const id of ['cpu', 'a', 'b']) expect((await b.claim('standard', id)).job).toBeNull();
    await b.submit({ service: 'simulation' });
    const woken = [];
    for (const id of ['cpu', 'a', 'b']) {
      if ((await redis.llen(`emp:{standard}:signal:${id}`)) > 0) woken.push(id);
    }
    expect(woken).toHaveLength(1);
    expect(woken[0]).not.toBe('cpu');
  });

  it('a woken worker that takes another job passes the wake-up on', async () => {
    const b = await broker();
    await worker(b, 'both', { services: ['simulation', 'ollama'] });
    await worker(b, 'text', { services: ['ollama'] });
    await worker(b, 'sim', { services: ['simulation'] });
    for (const id of ['both', 'text', 'sim']) expect((await b.claim('standard', id)).job).toBeNull();
    const text = await b.submit({ service: 'ollama' }); // wakes 'both', the first capable idle worker
    const image = await b.submit({ service: 'simulation', priority: 5 }); // 'both' is no longer idle: wakes 'sim'
    expect(await redis.llen('emp:{standard}:signal:text')).toBe(0);
    const [signal] = await b.waitForSignals(redis, 'standard', 'both', 100);
    expect(signal?.type).toBe('wake');
    // 'both' was woken for the text job, but the higher-priority image job is first in line
    const first = await b.claim('standard', 'both', signal?.type === 'wake' ? signal.requirementClass : '');
    expect(first.job?.id).toBe(image.id);
    // so the text job's wake-up goes on to the other capable idle worker
    expect(await b.waitForSignals(redis, 'standard', 'text', 100)).toHaveLength(1);
    expect((await claimJob(b, 'text')).id).toBe(text.id);
    expect((await b.claim('standard', 'sim')).job).toBeNull();
  });

  it('takes what is queued on several signal lists without waiting: each list emptied (up to 100), the others left alone', async () => {
    const b = await broker();
    const ids = ['a', 'b', 'c', 'd', 'e'];
    for (const id of ids) await worker(b, id);
    expect(await b.takeSignals('standard', ids)).toEqual(new Map());
    await redis.rpush('emp:{standard}:signal:b', 'wake:x', 'cancel:j1', 'nonsense');
    await redis.rpush('emp:{standard}:signal:e', ...Array.from({ length: 101 }, (_, i) => `expired:j${i}`));
    await redis.rpush('emp:{standard}:signal:other', 'wake:y'); // not asked for
    const taken = await b.takeSignals('standard', ids);
    expect([...taken.keys()]).toEqual(['b', 'e']);
    expect(taken.get('b')).toEqual([{ type: 'wake', requirementClass: 'x' }, { type: 'cancel', jobId: 'j1' }]);
    expect(taken.get('e')).toHaveLength(100);
    expect(taken.get('e')![99]).toEqual({ type: 'expired', jobId: 'j99' });
    // one pop per list per call, as a blocking wait takes: the 101st stays for the next
    expect(await redis.lrange('emp:{standard}:signal:e', 0, -1)).toEqual(['expired:j100']);
    expect(await redis.llen('emp:{standard}:signal:other')).toBe(1);
    expect(await b.takeSignals('standard', ['e', 'a'])).toEqual(new Map([['e', [{ type: 'expired', jobId: 'j100' }]]]));
    expect(await b.takeSignals('standard', [])).toEqual(new Map());
  });

  it('events can be read from a cursor and resumed without a gap', async () => {
    const b = await broker();
    for (let i = 0; i < 5; i++) await b.submit({ service: 'simulation' });
    const firstPage = await b.readEvents('standard', '0', { count: 2 });
    const rest = await b.readEvents('standard', firstPage.at(-1)!.id, { count: 100 });
    expect([...firstPage, ...rest].filter((e) => e.type === 'job.queued')).toHaveLength(5);
  });
});

describe('claims made together', () => {
  it('takes up to n jobs in one call, in priority order across classes, each with its own fencing token', async () => {
    const b = await broker();
    await worker(b, 'w', { services: ['simulation'], labels: { region: 'eu' } });
    const a = await b.submit({ service: 'simulation' });
    const c = await b.submit({ service: 'simulation', requirements: { constraints: { region: 'eu' } } });
    const urgent = await b.submit({ service: 'simulation', priority: 10 });
    const d = await b.submit({ service: 'simulation' });
    await b.submit({ service: 'comfyui' }); // not this worker's

    const taken = await b.claimMany('standard', 'w', 3);
    expect(taken.map((r) => r.job?.id)).toEqual([urgent.id, a.id, c.id]);
    expect(new Set(taken.map((r) => r.job!.lease.jobId)).size).toBe(3);
    for (const r of taken) expect((await b.getJob(r.job!.id))?.state).toBe('starting');
    expect((await workerStates(b)).w).toBe('busy');

    // fewer jobs than asked for: the jobs, then the claim that found none, which records the worker waiting
    const rest = await b.claimMany('standard', 'w', 5);
    expect(rest.map((r) => r.job?.id ?? 'none')).toEqual([d.id, 'none']);
    // every job is completed with its own lease; a stale one is refused
    for (const r of [...taken, rest[0]!]) expect(await b.complete(r.job!.lease, null)).toBeNull();
    await expect(b.complete(taken[0]!.job!.lease, null)).rejects.toThrow(LeaseLostError);
    expect((await workerStates(b)).w).toBe('idle');
  });

  it('leaves the jobs taken before a claim that raised out of their queue and in the worker\'s set', async () => {
    const b = await broker();
    await worker(b, 'w', { services: ['simulation'], labels: { region: 'eu' } });
    const first = await b.submit({ service: 'simulation' });
    const broken = await b.submit({ service: 'simulation' });
    // another class the worker may claim from, so that the second claim compares the broken job's score
    await b.submit({ service: 'simulation', requirements: { constraints: { region: 'eu' } } });
    const queue = `emp:{standard}:q:${await redis.hget(`emp:{standard}:job:${first.id}`, 'class')}`;
    await redis.del(`emp:{standard}:job:${broken.id}`); // a queued id without its job: the second claim raises

    await expect(b.claimMany('standard', 'w', 3)).rejects.toThrow();
    expect((await b.getJob(first.id))?.state).toBe('starting');
    expect(await redis.zrange(queue, 0, -1)).toEqual([broken.id]);
    expect(await redis.smembers('emp:{standard}:wjobs:w')).toEqual([first.id]);
  });

  it('refuses a count outside 1..64 before calling Redis', async () => {
    const b = await broker();
    await worker(b, 'w');
    for (const count of [0, 65, 1.5]) await expect(b.claimMany('standard', 'w', count)).rejects.toThrow(ValidationError);
  });
});

describe('completions made together', () => {
  async function fcalls(): Promise<number> {
    const stats = await redis.info('commandstats');
    return Number(/cmdstat_fcall:calls=(\d+)/.exec(stats)?.[1] ?? 0);
  }

  it('one worker\'s completions in the same turn share calls, each claiming its own successor', async () => {
    const b = await broker();
    const w = await worker(b, 'busy');
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push((await b.submit({ service: 'simulation', payload: { i } })).id);
    const held: ClaimedJob[] = [];
    for (let i = 0; i < 6; i++) held.push(await claimJob(b, w));

    const before = await fcalls();
    const nexts = await Promise.all(held.map((job) => b.complete(job.lease, { done: job.id }, { claimNext: true })));
    expect(await fcalls() - before).toBeLessThan(held.length);

    expect(nexts.map((next) => next?.job?.id)).toEqual(ids.slice(6, 12));
    for (const job of held) {
      const view = await b.getJob(job.id);
      expect(view?.state).toBe('succeeded');
      expect(view?.result).toEqual({ done: job.id });
    }
    const succeeded = (await events(b)).flatMap((e) => (e.type === 'job.succeeded' ? [e.job] : []));
    expect(succeeded).toEqual(held.map((job) => job.id));
  });

  it('a completion whose lease was lost fails alone; the others in its call go through', async () => {
    const b = await broker();
    const { first, second, stale } = await twoHeldOneStale(b, 3);

    const [lost, ok] = await Promise.allSettled([
      b.complete(stale, 'late'),
      b.complete(second.lease, 'fine'),
    ]);
    expect(lost.status === 'rejected' && lost.reason).toBeInstanceOf(LeaseLostError);
    expect(ok.status).toBe('fulfilled');
    expect((await b.getJob(first.id))?.state).toBe('starting');
    expect((await b.getJob(second.id))?.state).toBe('succeeded');
  });

  it('progress reports made in the same turn share one call; each is applied, in order, and renews its worker\'s lease once', async () => {
    const b = await broker();
    const w = await worker(b, 'busy');
    for (let i = 0; i < 5; i++) await b.submit({ service: 'simulation' });
    const held: ClaimedJob[] = [];
    for (let i = 0; i < 5; i++) held.push(await claimJob(b, w));
    await b.start(held[0]!.lease);

    const before = await fcalls();
    // two reports of the first job: both go, the later one last
    await Promise.all([
      b.progress(held[0]!.lease, { stage: 'running', value: 1, max: 10 }),
      ...held.map((job, i) => b.progress(job.lease, { stage: 'running', value: i + 2, max: 10 })),
    ]);
    expect(await fcalls() - before).toBe(1);

    for (const [i, job] of held.entries()) expect((await b.getJob(job.id))?.progress).toMatchObject({ stage: 'running', value: i + 2 });
    const reports = (await events(b)).flatMap((e) => (e.type === 'job.progress' ? [[e.job, e.progress.value]] : []));
    expect(reports).toEqual([[held[0]!.id, 1], ...held.map((job, i) => [job.id, i + 2])]);
  });

  it('a progress report whose lease was lost fails alone; a lone one fails the call as before', async () => {
    const b = await broker();
    const { first, second, stale } = await twoHeldOneStale(b, 2);

    const [lost, ok] = await Promise.allSettled([
      b.progress(stale, { stage: 'running', value: 1 }),
      b.progress(second.lease, { stage: 'running', value: 2 }),
    ]);
    expect(lost.status === 'rejected' && lost.reason).toBeInstanceOf(LeaseLostError);
    expect(ok.status).toBe('fulfilled');
    expect((await b.getJob(first.id))?.progress).toBeUndefined();
    expect((await b.getJob(second.id))?.progress).toMatchObject({ value: 2 });
    await expect(b.progress(stale, { stage: 'running' })).rejects.toThrow(LeaseLostError);
  });

  it('completions that claim for different workers go in separate calls and each gets its own worker\'s job', async () => {
    const b = await broker();
    const gpu = await worker(b, 'gpu', { services: ['simulation', 'comfyui'] });
    const cpu = await worker(b, 'cpu');
    await b.submit({ service: 'simulation' });
    await b.submit({ service: 'simulation' });
    const [g, c] = [await claimJob(b, gpu), await claimJob(b, cpu)];
    const comfy = await b.submit({ service: 'comfyui' });
    const plain = await b.submit({ service: 'simulation' });

    const [gNext, cNext] = await Promise.all([
      b.complete(g.lease, null, { claimNext: true }),
      b.complete(c.lease, null, { claimNext: true }),
    ]);
    expect(gNext?.job?.id).toBe(comfy.id);
    expect(gNext?.job?.lease.workerId).toBe('gpu');
    expect(cNext?.job?.id).toBe(plain.id);
    expect(cNext?.job?.lease.workerId).toBe('cpu');
  });
});
