import { usePrivateRedis } from '@emp/testkit/private-redis';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { Broker, type ClaimResult, type Lease, type ServiceJobCounts } from './broker';
import type { WorkerCapabilities } from './capabilities';
import { LeaseLostError, NotRetryableError } from './errors';
import { isJobEvent } from './events';
import { ensureFunctionLibrary } from './library';
import { FAILURE_KINDS, type FailureKind, type JobState, type SubmitJobInput } from './job';
import { type JobRequirements, requirementClass } from './requirements';
import { undeclaredStreamEntries } from './testing/stream-contract';

// Random interleavings of every job transition, by several workers with
// different capabilities, on a virtual clock, checked against a model after
// every step and against the raw Redis indexes:
//
// - every job is in exactly one state and in exactly the indexes that state
//   implies (a queued job in its one class queue at its place, a held job in its
//   worker's set, a retrying job on the timer wheel at its retry time);
// - no job is lost; at most one `job.succeeded` per job, and a succeeded job's
//   result is that of the one completion that was accepted;
// - late calls with an old lease (after a reap, a cancel, a retry, another
//   worker's claim) throw LeaseLostError and change nothing at all;
// - a claim returns exactly the best queued job the worker can run (priority,
//   then submission order), never one it cannot run, and one whenever one exists;
// - a worker's lease runs out `leaseMs` after it last proved it was alive, and
//   then every job it held goes back (or fails when out of infrastructure retries),
//   except that a lease that ran out while nobody ticked (a jump longer than
//   `clockGapMs` between ticks: an outage) is reaped only after a grace;
// - once woken workers have claimed, no idle worker waits while a job it can run
//   is queued (no lost wake-up);
// - the live job counts per service and state (metrics) are exactly the model's.

const POOL = 'standard';
const LEASE_MS = 1_000;
const CLOCK_GAP_MS = 3_000;
const LEASE_GRACE_MS = 400;
const START = 1_000_000;
const PRIORITY_SPAN = 2 ** 42;

const { redis } = usePrivateRedis({ args: ['--enable-debug-command', 'local'] });
let now = START;

beforeAll(async () => {
  await ensureFunctionLibrary(redis);
});

// ------------------------------------------------------------------ the fleet

const WORKERS: Array<{ id: string; capabilities: WorkerCapabilities }> = [
  { id: 'gpu', capabilities: { services: ['simulation'], hardware: { gpu_memory_gb: 80 }, labels: { gpu: 'a100' } } },
  { id: 'cpu', capabilities: { services: ['simulation'] } },
  { id: 'llm', capabilities: { services: ['ollama'], models: { ollama: ['llama3'] } } },
  {
    id: 'any',
    capabilities: { services: ['simulation', 'ollama'], hardware: { gpu_memory_gb: 24 }, models: { ollama: '*' }, labels: { gpu: 'h100' } },
  },
];

/** The requirement set jobs draw from, with who may run each (worked out by hand: the oracle). */
const REQUIREMENTS: Array<{ service: string; requirements: JobRequirements; runnableBy: string[] }> = [
  { service: 'simulation', requirements: {}, runnableBy: ['gpu', 'cpu', 'any'] },
  { service: 'simulation', requirements: { constraints: { gpu: 'a100' } }, runnableBy: ['gpu'] },
  { service: 'simulation', requirements: { hardware: { gpu_memory_gb: 40 } }, runnableBy: ['gpu'] },
  { service: 'ollama', requirements: { models: ['llama3'] }, runnableBy: ['llm', 'any'] },
  { service: 'ollama', requirements: { models: ['mistral'] }, runnableBy: ['any'] },
  { service: 'simulation', requirements: { exclude: { gpu: 'a100' } }, runnableBy: ['cpu', 'any'] },
  { service: 'simulation', requirements: { constraints: { gpu: 'tpu' } }, runnableBy: [] },
  { service: 'ollama', requirements: {}, runnableBy: ['llm', 'any'] },
];
const CLASS_IDS = REQUIREMENTS.map((r) => requirementClass({ service: r.service, tenant: 'default', requirements: r.requirements }).id);
const REQ_OF_CLASS = new Map(CLASS_IDS.map((id, i) => [id, i]));
const canRun = (worker: string, req: number) => REQUIREMENTS[req]!.runnableBy.includes(worker);

const BACKOFFS = [
  { type: 'fixed', delay_ms: 0, max_delay_ms: 2_000, jitter: 0 },
  { type: 'fixed', delay_ms: 300, max_delay_ms: 2_000, jitter: 0 },
  { type: 'exponential', delay_ms: 700, max_delay_ms: 2_000, jitter: 0 },
] as const;

function backoffDelay(index: number, failures: number): number {
  const b = BACKOFFS[index]!;
  const delay = b.type === 'exponential' ? b.delay_ms * 2 ** (failures - 1) : b.delay_ms;
  return Math.floor(Math.min(delay, b.max_delay_ms));
}

// ------------------------------------------------------------------ commands

type Call = 'start' | 'progress' | 'complete' | 'fail';
type Op =
  | { op: 'submit'; req: number; priority: number; maxAttempts: number; maxInfra: number; backoff: number }
  | { op: 'claim'; worker: number; woken: number }
  | { op: 'claimMany'; worker: number; woken: number; n: number }
  | { op: 'start' | 'progress' | 'forget'; worker: number; k: number }
  | { op: 'complete'; worker: number; k: number; claimNext: boolean }
  | { op: 'fail'; worker: number; k: number; kind: FailureKind; claimNext: boolean }
  | { op: 'heartbeat'; worker: number }
  | { op: 'cancel' | 'retry'; job: number }
  | { op: 'advance'; ms: number }
  | { op: 'zombie'; lease: number; call: Call; kind: FailureKind };

const worker = fc.nat({ max: WORKERS.length - 1 });
const k = fc.nat({ max: 3 });
const kind = fc.constantFrom(...FAILURE_KINDS);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('submit' as const), req: fc.nat({ max: REQUIREMENTS.length - 1 }), priority: fc.integer({ min: -2, max: 2 }), maxAttempts: fc.integer({ min: 1, max: 3 }), maxInfra: fc.integer({ min: 1, max: 3 }), backoff: fc.nat({ max: BACKOFFS.length - 1 }) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('claim' as const), worker, woken: fc.integer({ min: -1, max: CLASS_IDS.length - 1 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('claimMany' as const), worker, woken: fc.integer({ min: -1, max: CLASS_IDS.length - 1 }), n: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('start' as const), worker, k }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('progress' as const), worker, k }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('complete' as const), worker, k, claimNext: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('fail' as const), worker, k, kind, claimNext: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('heartbeat' as const), worker }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('forget' as const), worker, k }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('cancel' as const), job: fc.nat({ max: 40 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('retry' as const), job: fc.nat({ max: 40 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.constantFrom(0, 1, 299, 300, 399, 400, 500, 999, 1_000, 1_001, 2_500, 3_001) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('zombie' as const), lease: fc.nat({ max: 40 }), call: fc.constantFrom<Call>('start', 'progress', 'complete', 'fail'), kind }) },
);

// ------------------------------------------------------------------ the model

const ACTIVE = new Set<JobState>(['starting', 'running']);
const TERMINAL = new Set<JobState>(['succeeded', 'failed', 'canceled', 'expired']);

interface ModelJob {
  id: string;
  req: number;
  priority: number;
  seq: number;
  maxAttempts: number;
  maxInfra: number;
  backoff: number;
  state: JobState;
  /** the fencing token: the job's attempt number, which only ever grows (a manual retry keeps counting) */
  token?: string;
  claims: number;
  worker?: string;
  claimedAt?: number;
  failures: number;
  infra: number;
  retryAt?: number;
  result?: unknown;
}

class Model {
  readonly jobs: ModelJob[] = [];
  readonly byId = new Map<string, ModelJob>();
  /** leases each worker believes it holds */
  readonly held = new Map<string, Lease[]>(WORKERS.map((w) => [w.id, []]));
  /** every lease ever handed out, for zombie calls */
  readonly everyLease: Lease[] = [];
  /** the `leases` index: when each worker's lease runs out */
  readonly leaseUntil = new Map<string, number>();
  readonly lastHeartbeat = new Map<string, number>();
  /** the shard's clock: the last tick, and the grace a tick long after the previous one gave */
  readonly clock: { tickAt?: number; graceUntil?: number; unwatchedFrom?: number } = {};
  seq = 0;
  completions = 0;

  score(job: ModelJob): number {
    return (1000 - job.priority) * PRIORITY_SPAN + job.seq;
  }
  activeOf(worker: string): ModelJob[] {
    return this.jobs.filter((j) => ACTIVE.has(j.state) && j.worker === worker);
  }
  current(lease: Lease): ModelJob | undefined {
    const job = this.byId.get(lease.jobId);
    return job && job.token === lease.token && ACTIVE.has(job.state) ? job : undefined;
  }
  best(worker: string): ModelJob | undefined {
    return this.jobs
      .filter((j) => j.state === 'queued' && canRun(worker, j.req))
      .sort((a, b) => this.score(a) - this.score(b))[0];
  }
  /** A worker's lease is renewed by its claims while it holds nothing, its heartbeats while it holds something, and progress. */
  renew(worker: string) {
    this.leaseUntil.set(worker, now + LEASE_MS);
  }
  /** A tick's view of the clock: leases that ran out by the instant it returns are reaped. */
  tick(): number {
    const clock = this.clock;
    if (clock.graceUntil !== undefined && now >= clock.graceUntil) clock.graceUntil = undefined;
    if (clock.graceUntil === undefined && clock.tickAt !== undefined && now - clock.tickAt > CLOCK_GAP_MS) {
      clock.graceUntil = now + LEASE_GRACE_MS;
      clock.unwatchedFrom = clock.tickAt;
    }
    clock.tickAt = now;
    return clock.graceUntil === undefined ? now : Math.min(now, clock.unwatchedFrom!);
  }
  take(worker: string, job: ModelJob, wasBusy: boolean): Lease {
    job.state = 'starting';
    job.token = String(++job.claims);
    job.worker = worker;
    job.claimedAt = now;
    if (!wasBusy) this.renew(worker);
    const lease: Lease = { pool: POOL, jobId: job.id, token: job.token, workerId: worker };
    this.held.get(worker)!.push(lease);
    this.everyLease.push(lease);
    return lease;
  }
  requeue(job: ModelJob) {
    job.state = 'queued';
    job.worker = undefined;
    job.retryAt = undefined;
  }
  fail(job: ModelJob, kind: FailureKind): 'queued' | 'retrying' | 'failed' {
    job.worker = undefined;
    if (kind === 'worker_lost' || kind === 'infrastructure') {
      job.infra += 1;
      if (job.infra >= job.maxInfra) return (job.state = 'failed');
      this.requeue(job);
      return 'queued';
    }
    if (kind === 'retryable' || kind === 'timeout') {
      job.failures += 1;
      if (job.failures >= job.maxAttempts) return (job.state = 'failed');
      job.state = 'retrying';
      job.retryAt = now + backoffDelay(job.backoff, job.failures);
      return 'retrying';
    }
    return (job.state = 'failed');
  }
  forgetLease(worker: string, lease: Lease) {
    const list = this.held.get(worker)!;
    const index = list.indexOf(lease);
    if (index >= 0) list.splice(index, 1);
  }
}

// ------------------------------------------------------------------ harness

async function digest(): Promise<unknown> {
  return redis.call('DEBUG', 'DIGEST');
}

async function expectRefusedUnchanged(action: () => Promise<unknown>, ErrorClass: new (...args: never[]) => Error) {
  const before = await digest();
  const error = await action().then(
    (value) => new Error(`expected ${ErrorClass.name}, got ${JSON.stringify(value)}`),
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ErrorClass);
  expect(await digest(), 'a refused call changed the dataset').toBe(before);
}

class Scenario {
  readonly model = new Model();
  private constructor(readonly broker: Broker) {}

  static async start(): Promise<Scenario> {
    await redis.flushall(); // the function library survives FLUSHALL
    now = START;
    const broker = await Broker.connect({
      redis,
      clock: () => now,
      skipLibraryLoad: true,
      config: { leaseMs: LEASE_MS, avoidMs: 0, offlineAfterMs: 1_000_000_000_000, clockGapMs: CLOCK_GAP_MS, leaseGraceMs: LEASE_GRACE_MS },
    });
    for (const w of WORKERS) await broker.registerWorker({ id: w.id, pool: POOL, capabilities: w.capabilities });
    return new Scenario(broker);
  }

  /** Checks a claim reply against the model's prediction and records the take. */
  private expectClaim(workerId: string, reply: ClaimResult, wasBusy: boolean) {
    const expected = this.model.best(workerId);
    expect(reply.job?.id ?? null, `claim by ${workerId}`).toBe(expected?.id ?? null);
    if (!reply.job || !expected) return;
    expect(canRun(workerId, expected.req), 'a claim returned a job the worker cannot run').toBe(true);
    expect(reply.job.service).toBe(REQUIREMENTS[expected.req]!.service);
    expect(reply.job.priority).toBe(expected.priority);
    const lease = this.model.take(workerId, expected, wasBusy);
    expect(reply.job.lease).toEqual(lease);
  }

  private pick(workerId: string, index: number): Lease | undefined {
    const list = this.model.held.get(workerId)!;
    return list.length === 0 ? undefined : list[index % list.length];
  }

  async apply(op: Op): Promise<void> {
    const { broker, model } = this;
    switch (op.op) {
      case 'submit': {
        const r = REQUIREMENTS[op.req]!;
        const input: SubmitJobInput = {
          service: r.service,
          requirements: r.requirements,
          priority: op.priority,
          max_attempts: op.maxAttempts,
          max_infra_attempts: op.maxInfra,
          backoff: { ...BACKOFFS[op.backoff]! },
          payload: { n: model.jobs.length },
        };
        const result = await broker.submit(input);
        expect(result.routable).toBe(r.runnableBy.length > 0);
        const job: ModelJob = {
          id: result.id, req: op.req, priority: op.priority, seq: ++model.seq, maxAttempts: op.maxAttempts,
          maxInfra: op.maxInfra, backoff: op.backoff, state: 'queued', failures: 0, infra: 0, claims: 0,
        };
        model.jobs.push(job);
        model.byId.set(job.id, job);
        return;
      }
      case 'claim': {
        const workerId = WORKERS[op.worker]!.id;
        const wasBusy = model.activeOf(workerId).length > 0;
        const reply = await broker.claim(POOL, workerId, op.woken >= 0 ? CLASS_IDS[op.woken] : '');
        this.expectClaim(workerId, reply, wasBusy);
        return;
      }
      case 'claimMany': {
        const workerId = WORKERS[op.worker]!.id;
        const replies = await broker.claimMany(POOL, workerId, op.n, op.woken >= 0 ? CLASS_IDS[op.woken] : '');
        // each as a claim of its own, in order; the call ends at the first that finds none, or after n jobs
        replies.forEach((reply, i) => {
          this.expectClaim(workerId, reply, model.activeOf(workerId).length > 0);
          if (!reply.job) expect(i, 'a claim that found none ends the call').toBe(replies.length - 1);
        });
        if (replies.at(-1)?.job) expect(replies).toHaveLength(op.n);
        return;
      }
      case 'start':
      case 'progress':
      case 'complete':
      case 'fail': {
        const workerId = WORKERS[op.worker]!.id;
        const lease = this.pick(workerId, op.k);
        if (!lease) return;
        await this.call(lease, op.op, op.op === 'fail' ? op.kind : 'retryable', 'claimNext' in op && op.claimNext);
        return;
      }
      case 'zombie': {
        if (model.everyLease.length === 0) return;
        const lease = model.everyLease[op.lease % model.everyLease.length]!;
        await this.call(lease, op.call, op.kind, false);
        return;
      }
      case 'forget': {
        // the worker never learned of this job (say, the claim reply was lost)
        const workerId = WORKERS[op.worker]!.id;
        const lease = this.pick(workerId, op.k);
        if (lease) model.forgetLease(workerId, lease);
        return;
      }
      case 'heartbeat': {
        const workerId = WORKERS[op.worker]!.id;
        const named = [...model.held.get(workerId)!];
        // the model of a heartbeat: renew the lease of a worker that holds something, then
        // hand back what it held since before its previous heartbeat but no longer names
        if (model.activeOf(workerId).length > 0) model.renew(workerId);
        const previous = model.lastHeartbeat.get(workerId);
        model.lastHeartbeat.set(workerId, now);
        if (previous !== undefined) {
          for (const job of model.activeOf(workerId)) {
            if (!named.some((l) => l.jobId === job.id) && (job.claimedAt ?? 0) < previous) model.fail(job, 'worker_lost');
          }
        }
        const expectedDrops = named
          .filter((l) => !model.current(l))
          .map((l) => {
            const job = model.byId.get(l.jobId)!;
            const verdict = job.token === l.token && (job.state === 'canceled' || job.state === 'expired') ? job.state : 'lost';
            return { jobId: l.jobId, verdict };
          });
        const drops = await broker.heartbeat(POOL, workerId, named);
        expect(drops).toEqual(expectedDrops);
        for (const drop of drops) {
          const lease = named.find((l) => l.jobId === drop.jobId);
          if (lease) model.forgetLease(workerId, lease);
        }
        return;
      }
      case 'cancel': {
        if (model.jobs.length === 0) return;
        const job = model.jobs[op.job % model.jobs.length]!;
        const was = job.state;
        const reply = await broker.cancel(job.id, 'property test');
        if (TERMINAL.has(was)) {
          expect(reply).toEqual({ state: was, changed: false });
        } else {
          expect(reply).toEqual({ state: 'canceled', changed: true });
          job.state = 'canceled';
          job.retryAt = undefined;
        }
        return;
      }
      case 'retry': {
        if (model.jobs.length === 0) return;
        const job = model.jobs[op.job % model.jobs.length]!;
        if (job.state === 'failed' || job.state === 'canceled' || job.state === 'expired') {
          expect(await broker.retry(job.id)).toBe('queued');
          job.failures = 0;
          job.infra = 0;
          model.requeue(job);
        } else {
          await expectRefusedUnchanged(() => broker.retry(job.id), NotRetryableError);
        }
        return;
      }
      case 'advance': {
        now += op.ms;
        // the model of a tick: due retries go back to the queue, then every worker whose lease ran out
        // (before the clock went unwatched, while a grace runs) loses its jobs
        for (const job of model.jobs) if (job.state === 'retrying' && job.retryAt! <= now) model.requeue(job);
        const reapTo = model.tick();
        for (const [workerId, until] of [...model.leaseUntil]) {
          if (until > reapTo) continue;
          model.leaseUntil.delete(workerId);
          for (const job of model.activeOf(workerId)) model.fail(job, 'worker_lost');
        }
        await broker.tick(POOL);
        return;
      }
    }
  }

  /** A call with a lease: the model says whether it is the current attempt's; if not, it must be refused and change nothing. */
  private async call(lease: Lease, call: Call, kind: FailureKind, claimNext: boolean): Promise<void> {
    const { broker, model } = this;
    const job = model.current(lease);
    const run = (): Promise<unknown> => {
      switch (call) {
        case 'start':
          return broker.start(lease);
        case 'progress':
          return broker.progress(lease, { stage: 'running', value: 1, max: 2 });
        case 'complete':
          return broker.complete(lease, { by: lease.workerId, completion: ++model.completions }, { claimNext });
        case 'fail':
          return broker.fail(lease, { kind, message: 'property test' }, { claimNext });
      }
    };
    if (!job) {
      await expectRefusedUnchanged(run, LeaseLostError);
      model.forgetLease(lease.workerId, lease);
      return;
    }
    const workerId = lease.workerId;
    const wasBusy = model.activeOf(workerId).length > 0;
    switch (call) {
      case 'start':
        await broker.start(lease);
        job.state = 'running';
        return;
      case 'progress':
        await broker.progress(lease, { stage: 'running', value: 1, max: 2 });
        model.renew(workerId);
        return;
      case 'complete': {
        const result = { by: workerId, completion: ++model.completions };
        const reply = await broker.complete(lease, result, { claimNext });
        job.state = 'succeeded';
        job.result = result;
        job.worker = workerId;
        model.forgetLease(workerId, lease);
        if (claimNext) this.expectClaim(workerId, reply!, wasBusy);
        return;
      }
      case 'fail': {
        const reply = await broker.fail(lease, { kind, message: 'property test' }, { claimNext });
        expect(reply.outcome).toBe(model.fail(job, kind));
        model.forgetLease(workerId, lease);
        if (claimNext) this.expectClaim(workerId, reply.next!, wasBusy);
        return;
      }
    }
  }

  /** Every job's state and every index, read raw from Redis, agree with the model. */
  async checkIndexes(): Promise<void> {
    const { broker, model } = this;
    const p = broker.keys.prefix(POOL);
    const pipeline = redis.pipeline();
    for (const job of model.jobs) pipeline.hmget(`${p}job:${job.id}`, 'state', 'attempts', 'worker', 'class', 'score', 'failures', 'infra_failures');
    pipeline.keys(`${p}q:*`);
    pipeline.zrange(`${p}classes`, 0, -1, 'WITHSCORES');
    pipeline.zrange(`${p}timers`, 0, -1, 'WITHSCORES');
    pipeline.zrange(`${p}leases`, 0, -1, 'WITHSCORES');
    for (const w of WORKERS) {
      pipeline.smembers(`${p}wjobs:${w.id}`);
      pipeline.hget(`${p}worker:${w.id}`, 'state');
      pipeline.lrange(`${p}signal:${w.id}`, 0, -1);
    }
    for (const cls of CLASS_IDS) pipeline.zrange(`${p}q:${cls}`, 0, -1, 'WITHSCORES');
    const replies = ((await pipeline.exec()) ?? []).map(([error, value]) => {
      if (error) throw error;
      return value;
    });
    let i = 0;
    const next = <T>() => replies[i++] as T;

    for (const job of model.jobs) {
      const [state, token, workerId, cls, score, failures, infra] = next<Array<string | null>>();
      expect(state, `state of job ${job.id}`).toBe(job.state);
      expect(cls).toBe(CLASS_IDS[job.req]);
      expect(Number(score)).toBe(model.score(job));
      expect(Number(failures ?? 0), `failures of ${job.id}`).toBe(job.failures);
      expect(Number(infra ?? 0), `infrastructure failures of ${job.id}`).toBe(job.infra);
      if (ACTIVE.has(job.state)) {
        expect(token).toBe(job.token);
        expect(workerId).toBe(job.worker);
      }
    }
    // queues: only known classes, each holding exactly its queued jobs at their places
    const queueKeys = next<string[]>();
    for (const key of queueKeys) expect(CLASS_IDS.map((c) => `${p}q:${c}`)).toContain(key);
    const classes = pairs(next<string[]>());
    const timers = pairs(next<string[]>());
    const leases = pairs(next<string[]>());
    const perWorker = WORKERS.map(() => ({ jobs: next<string[]>(), state: next<string | null>(), signals: next<string[]>() }));
    const expectedHeads: Record<string, number> = {};
    for (const [c, cls] of CLASS_IDS.entries()) {
      const queued = model.jobs.filter((j) => j.req === c && j.state === 'queued');
      const expected = Object.fromEntries(queued.map((j) => [j.id, model.score(j)]));
      expect(pairs(next<string[]>()), `queue of class ${c}`).toEqual(expected);
      if (queued.length > 0) expectedHeads[cls] = Math.min(...queued.map((j) => model.score(j)));
    }
    expect(classes, 'classes scored by their head').toEqual(expectedHeads);
    await expectNoLanes(p);
    // timers: only retrying jobs (no deadlines or delays here), at their retry time
    expect(timers).toEqual(Object.fromEntries(model.jobs.filter((j) => j.state === 'retrying').map((j) => [j.id, j.retryAt!])));
    expect(leases, 'worker leases').toEqual(Object.fromEntries(model.leaseUntil));
    for (const [index, w] of WORKERS.entries()) {
      const { jobs, state, signals } = perWorker[index]!;
      const active = model.activeOf(w.id).map((j) => j.id);
      expect(jobs.sort(), `jobs held by ${w.id}`).toEqual(active.sort());
      expect(state, `state of worker ${w.id}`).toBe(active.length > 0 ? 'busy' : 'idle');
      for (const signal of signals) {
        if (!signal.startsWith('wake:') || signal === 'wake:') continue;
        const req = REQ_OF_CLASS.get(signal.slice('wake:'.length));
        expect(req !== undefined && canRun(w.id, req), `${w.id} woken for a class it cannot run: ${signal}`).toBe(true);
      }
    }
    const live = model.jobs.map((j) => ({ service: REQUIREMENTS[j.req]!.service, state: j.state, delayed: false }));
    expect(byService(await broker.jobCounts(POOL)), 'job counts per service and state').toEqual(expectedCounts(live));
  }

  /** Woken workers claim (and finish) until nobody has a wake-up pending, as a real worker loop would. */
  async drainWakeUps(): Promise<void> {
    const p = this.broker.keys.prefix(POOL);
    for (let round = 0; round < 50; round++) {
      let woke = false;
      for (const w of WORKERS) {
        const signals = await redis.lpop(`${p}signal:${w.id}`, 100);
        const wakes = (signals ?? []).filter((s) => s.startsWith('wake:'));
        if (wakes.length === 0) continue;
        woke = true;
        let wokenFor = wakes[0]!.slice('wake:'.length);
        for (let claims = 0; claims < 100; claims++) {
          const wasBusy = this.model.activeOf(w.id).length > 0;
          const reply = await this.broker.claim(POOL, w.id, wokenFor);
          wokenFor = '';
          this.expectClaim(w.id, reply, wasBusy);
          if (!reply.job) break;
          await this.call(reply.job.lease, 'complete', 'retryable', false);
        }
      }
      if (!woke) return;
    }
    throw new Error('wake-ups did not settle in 50 rounds');
  }

  /** No idle worker waits while a job it can run is queued; a worker's hash says whether it waits. */
  async checkNoLostWakeUp(): Promise<void> {
    const p = this.broker.keys.prefix(POOL);
    const idle = Object.keys(await redis.hgetall(`${p}idle`));
    for (const w of WORKERS) {
      const waiting = (await redis.hget(`${p}worker:${w.id}`, 'waiting')) === '1';
      expect(waiting, `worker ${w.id}: 'waiting' in its hash agrees with the idle index`).toBe(idle.includes(w.id));
    }
    for (const workerId of idle) {
      const runnable = this.model.best(workerId);
      expect(runnable?.id ?? null, `idle worker ${workerId} waits while a job it can run is queued`).toBeNull();
    }
  }

  /** The event stream and the client's view of every job. */
  async checkHistory(): Promise<void> {
    const { broker, model } = this;
    expect(await undeclaredStreamEntries(redis), 'stream entries outside the event union').toEqual([]);
    const events = await broker.readEvents(POOL, '0', { count: 100_000 });
    const succeeded = new Map<string, number>();
    const lastState = new Map<string, string>();
    for (const event of events.filter(isJobEvent)) {
      if (event.type === 'job.succeeded') succeeded.set(event.job, (succeeded.get(event.job) ?? 0) + 1);
      lastState.set(event.job, event.state);
    }
    for (const job of model.jobs) {
      expect(succeeded.get(job.id) ?? 0, `job.succeeded events of ${job.id}`).toBe(job.state === 'succeeded' ? 1 : 0);
      expect(lastState.get(job.id), `last event of ${job.id}`).toBe(job.state);
      const seen = await broker.getJob(job.id);
      expect(seen, `job ${job.id} was lost`).not.toBeNull();
      expect(seen!.state).toBe(job.state);
      expect(seen!.priority).toBe(job.priority);
      if (job.state === 'succeeded') expect(seen!.result).toEqual(job.result);
    }
  }
}

/** What `Broker.jobCounts` must answer for these jobs: a row per service with a live job, by service name. */
function expectedCounts(jobs: Array<{ service: string; state: string; delayed: boolean }>): ServiceJobCounts[] {
  const rows = new Map<string, ServiceJobCounts>();
  for (const job of jobs) {
    if (TERMINAL.has(job.state as JobState)) continue;
    let row = rows.get(job.service);
    if (!row) rows.set(job.service, (row = { service: job.service, queued: 0, delayed: 0, starting: 0, running: 0, retrying: 0 }));
    row[job.state as 'queued' | 'starting' | 'running' | 'retrying'] += 1;
    if (job.delayed) row.delayed += 1;
  }
  return [...rows.values()].sort((a, b) => a.service.localeCompare(b.service));
}

const byService = (counts: ServiceJobCounts[]) => [...counts].sort((a, b) => a.service.localeCompare(b.service));

/**
 * No worker of this fleet is restricted to tenants or a workflow, so the shard
 * keeps no lanes at all (they cost every job commands; see laned_key), and no
 * job is marked as in them.
 */
async function expectNoLanes(p: string): Promise<void> {
  const [lanes, flag] = await Promise.all([redis.keys(`${p}*`), redis.exists(`${p}laned`)]);
  expect(lanes.filter((key) => /:(tq|ct|wq):/.test(key)), 'no lanes').toEqual([]);
  expect(flag, 'lanes off').toBe(0);
}

function pairs(flat: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = Number(flat[i + 1]);
  return out;
}

// ------------------------------------------------------------------ with deadlines and delays
//
// The same transitions plus delays, queue and start deadlines and execution
// timeouts. No model of states here: every step is checked against the raw
// Redis indexes, which must always be exactly what the job's state implies.

type OpenOp =
  | { op: 'submit'; req: number; priority: number; delay: number; queueTtl: number; startTimeout: number; execTimeout: number; maxAttempts: number; backoff: number }
  | Exclude<Op, { op: 'submit' }>;

const optionalMs = (...values: number[]) => fc.constantFrom(0, 0, ...values);
const openOpArb: fc.Arbitrary<OpenOp> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('submit' as const), req: fc.nat({ max: REQUIREMENTS.length - 1 }), priority: fc.integer({ min: -2, max: 2 }), delay: optionalMs(400, 1_500), queueTtl: optionalMs(800, 3_000), startTimeout: optionalMs(1_200, 4_000), execTimeout: optionalMs(600, 2_500), maxAttempts: fc.integer({ min: 1, max: 3 }), backoff: fc.nat({ max: BACKOFFS.length - 1 }) }) },
  { weight: 24, arbitrary: opArb.filter((op) => op.op !== 'submit') as fc.Arbitrary<OpenOp> },
);

/** When the timer wheel must next look at a job in this state with these fields (the rule `schedule` states). */
function expectedDue(fields: Record<string, string>): number | undefined {
  const pick = (...names: string[]) => names.map((n) => fields[n]).filter((v): v is string => v !== undefined).map(Number);
  const due = (() => {
    switch (fields.state) {
      case 'queued':
        return pick('run_at', 'queue_deadline', 'start_deadline');
      case 'retrying':
        return pick('retry_at', 'queue_deadline', 'start_deadline');
      case 'starting':
        return pick('start_deadline');
      case 'running':
        return pick('exec_deadline');
      default:
        return [];
    }
  })();
  return due.length > 0 ? Math.min(...due) : undefined;
}

class OpenScenario {
  readonly ids: string[] = [];
  readonly reqOf = new Map<string, number>();
  readonly held = new Map<string, Lease[]>(WORKERS.map((w) => [w.id, []]));
  readonly everyLease: Lease[] = [];
  readonly accepted = new Map<string, unknown>();
  completions = 0;
  private constructor(readonly broker: Broker) {}

  static async start(): Promise<OpenScenario> {
    const scenario = await Scenario.start();
    return new OpenScenario(scenario.broker);
  }

  private get p() {
    return this.broker.keys.prefix(POOL);
  }

  /** The job a claim by `workerId` must return, from the raw class queues: the best head among classes it can run. */
  private async bestFor(workerId: string): Promise<string | null> {
    const runnable = CLASS_IDS.filter((_, req) => canRun(workerId, req));
    const pipeline = redis.pipeline();
    for (const cls of runnable) pipeline.zrange(`${this.p}q:${cls}`, 0, 0, 'WITHSCORES');
    let best: { id: string; score: number } | null = null;
    for (const [, head] of (await pipeline.exec()) ?? []) {
      const [id, score] = head as string[];
      if (id !== undefined && (best === null || Number(score) < best.score)) best = { id, score: Number(score) };
    }
    return best?.id ?? null;
  }

  private async isCurrent(lease: Lease): Promise<boolean> {
    const [state, token] = await redis.hmget(`${this.p}job:${lease.jobId}`, 'state', 'attempts');
    return token === lease.token && (state === 'starting' || state === 'running');
  }

  private async claimed(workerId: string, reply: ClaimResult, expected: string | null) {
    expect(reply.job?.id ?? null, `claim by ${workerId}`).toBe(expected);
    if (!reply.job) return;
    expect(canRun(workerId, this.reqOf.get(reply.job.id)!), 'a claim returned a job the worker cannot run').toBe(true);
    this.held.get(workerId)!.push(reply.job.lease);
    this.everyLease.push(reply.job.lease);
  }

  private forget(lease: Lease) {
    const list = this.held.get(lease.workerId)!;
    const index = list.indexOf(lease);
    if (index >= 0) list.splice(index, 1);
  }

  async apply(op: OpenOp): Promise<void> {
    const { broker } = this;
    switch (op.op) {
      case 'submit': {
        const r = REQUIREMENTS[op.req]!;
        const deadlines = {
          ...(op.queueTtl ? { queue_ttl_ms: op.queueTtl } : {}),
          ...(op.startTimeout ? { start_timeout_ms: op.startTimeout } : {}),
          ...(op.execTimeout ? { execution_timeout_ms: op.execTimeout } : {}),
        };
        const result = await broker.submit({
          service: r.service,
          requirements: r.requirements,
          priority: op.priority,
          max_attempts: op.maxAttempts,
          backoff: { ...BACKOFFS[op.backoff]! },
          ...(op.delay ? { delay_ms: op.delay } : {}),
          ...(Object.keys(deadlines).length ? { deadlines } : {}),
        });
        this.ids.push(result.id);
        this.reqOf.set(result.id, op.req);
        return;
      }
      case 'claim': {
        const workerId = WORKERS[op.worker]!.id;
        const expected = await this.bestFor(workerId);
        await this.claimed(workerId, await broker.claim(POOL, workerId, op.woken >= 0 ? CLASS_IDS[op.woken] : ''), expected);
        return;
      }
      case 'start':
      case 'progress':
      case 'complete':
      case 'fail': {
        const list = this.held.get(WORKERS[op.worker]!.id)!;
        if (list.length === 0) return;
        await this.call(list[op.k % list.length]!, op.op, op.op === 'fail' ? op.kind : 'retryable', 'claimNext' in op && op.claimNext);
        return;
      }
      case 'zombie': {
        if (this.everyLease.length === 0) return;
        await this.call(this.everyLease[op.lease % this.everyLease.length]!, op.call, op.kind, false);
        return;
      }
      case 'forget': {
        const list = this.held.get(WORKERS[op.worker]!.id)!;
        if (list.length > 0) list.splice(op.k % list.length, 1);
        return;
      }
      case 'heartbeat': {
        const workerId = WORKERS[op.worker]!.id;
        const named = [...this.held.get(workerId)!];
        for (const drop of await broker.heartbeat(POOL, workerId, named)) {
          const lease = named.find((l) => l.jobId === drop.jobId)!;
          expect(await this.isCurrent(lease), `heartbeat dropped ${drop.jobId} (${drop.verdict}) that the worker still holds`).toBe(false);
          this.forget(lease);
        }
        return;
      }
      case 'cancel': {
        if (this.ids.length === 0) return;
        const id = this.ids[op.job % this.ids.length]!;
        const was = (await broker.getJob(id))!.state;
        const reply = await broker.cancel(id);
        expect(reply).toEqual(TERMINAL.has(was) ? { state: was, changed: false } : { state: 'canceled', changed: true });
        return;
      }
      case 'retry': {
        if (this.ids.length === 0) return;
        const id = this.ids[op.job % this.ids.length]!;
        const was = (await broker.getJob(id))!.state;
        if (was === 'failed' || was === 'canceled' || was === 'expired') expect(await broker.retry(id)).toBe('queued');
        else await expectRefusedUnchanged(() => broker.retry(id), NotRetryableError);
        return;
      }
      case 'advance': {
        now += op.ms;
        await broker.tick(POOL);
        return;
      }
    }
  }

  private async call(lease: Lease, call: Call, kind: FailureKind, claimNext: boolean): Promise<void> {
    const { broker } = this;
    const result = { by: lease.workerId, completion: ++this.completions };
    const run = (): Promise<unknown> => {
      switch (call) {
        case 'start':
          return broker.start(lease);
        case 'progress':
          return broker.progress(lease, { stage: 'running' });
        case 'complete':
          return broker.complete(lease, result, { claimNext });
        case 'fail':
          return broker.fail(lease, { kind, message: 'property test' }, { claimNext });
      }
    };
    if (!(await this.isCurrent(lease))) {
      await expectRefusedUnchanged(run, LeaseLostError);
      this.forget(lease);
      return;
    }
    if (claimNext && (call === 'complete' || call === 'fail')) {
      // the claim in the same call sees the queue after this job is finished or put back
      const reply = await run();
      const next = call === 'complete' ? (reply as ClaimResult) : (reply as { next: ClaimResult }).next;
      if (call === 'complete') this.accepted.set(lease.jobId, result);
      this.forget(lease);
      expect(next.job === null || canRun(lease.workerId, this.reqOf.get(next.job.id)!)).toBe(true);
      if (next.job) {
        this.held.get(lease.workerId)!.push(next.job.lease);
        this.everyLease.push(next.job.lease);
      } else {
        expect(await this.bestFor(lease.workerId), 'claimNext found nothing while a job it can run is queued').toBeNull();
      }
      return;
    }
    await run();
    if (call === 'complete') this.accepted.set(lease.jobId, result);
    if (call === 'complete' || call === 'fail') this.forget(lease);
  }

  /** Every job is in exactly the indexes its state implies. */
  async checkIndexes(): Promise<void> {
    const p = this.p;
    const pipeline = redis.pipeline();
    for (const id of this.ids) pipeline.hgetall(`${p}job:${id}`);
    for (const cls of CLASS_IDS) pipeline.zrange(`${p}q:${cls}`, 0, -1, 'WITHSCORES');
    pipeline.keys(`${p}q:*`);
    pipeline.zrange(`${p}classes`, 0, -1, 'WITHSCORES');
    pipeline.zrange(`${p}timers`, 0, -1, 'WITHSCORES');
    pipeline.zrange(`${p}leases`, 0, -1, 'WITHSCORES');
    for (const w of WORKERS) {
      pipeline.smembers(`${p}wjobs:${w.id}`);
      pipeline.hget(`${p}worker:${w.id}`, 'state');
    }
    const replies = ((await pipeline.exec()) ?? []).map(([error, value]) => {
      if (error) throw error;
      return value;
    });
    let i = 0;
    const next = <T>() => replies[i++] as T;
    const jobs = this.ids.map((id) => ({ id, fields: next<Record<string, string>>() }));
    const queues = CLASS_IDS.map(() => pairs(next<string[]>()));
    const queueKeys = next<string[]>();
    const classes = pairs(next<string[]>());
    const timers = pairs(next<string[]>());
    const leases = pairs(next<string[]>());
    const workers = WORKERS.map((w) => ({ id: w.id, jobs: next<string[]>(), state: next<string | null>() }));

    for (const key of queueKeys) expect(CLASS_IDS.map((c) => `${p}q:${c}`)).toContain(key);
    const heads: Record<string, number> = {};
    for (const [c, queue] of queues.entries()) {
      const scores = Object.values(queue);
      if (scores.length > 0) heads[CLASS_IDS[c]!] = Math.min(...scores);
    }
    expect(classes, 'classes scored by their head').toEqual(heads);
    await expectNoLanes(p);

    for (const { id, fields } of jobs) {
      const what = `job ${id} (${JSON.stringify(fields)})`;
      expect(fields.state, `${what} was lost`).toBeDefined();
      const state = fields.state as JobState;
      const req = this.reqOf.get(id)!;
      const inQueues = queues.flatMap((q, c) => (id in q ? [c] : []));
      if (state === 'queued' && fields.run_at === undefined) {
        expect(inQueues, `${what} is queued: in exactly its class queue`).toEqual([req]);
        expect(queues[req]![id]).toBe(Number(fields.score));
      } else {
        expect(inQueues, `${what} is in a class queue`).toEqual([]);
      }
      expect(timers[id], `${what}: timer`).toBe(expectedDue(fields));
      const holders = workers.filter((w) => w.jobs.includes(id)).map((w) => w.id);
      if (ACTIVE.has(state)) {
        expect(holders, `${what} is held by its worker only`).toEqual([fields.worker]);
        expect(leases[fields.worker!], `${what}: its worker has a lease`).toBeDefined();
        expect(fields.attempts, `${what}: its attempt number is its fencing token`).toBeDefined();
      } else {
        expect(holders, `${what} is held by a worker`).toEqual([]);
      }
    }
    for (const w of workers) {
      expect(w.state, `state of worker ${w.id}`).toBe(w.jobs.length > 0 ? 'busy' : 'idle');
    }
    const live = jobs.map(({ fields }) => ({ service: fields.service!, state: fields.state!, delayed: fields.state === 'queued' && fields.run_at !== undefined }));
    expect(byService(await this.broker.jobCounts(POOL)), 'job counts per service and state').toEqual(expectedCounts(live));
  }

  async checkHistory(): Promise<void> {
    expect(await undeclaredStreamEntries(redis), 'stream entries outside the event union').toEqual([]);
    const events = await this.broker.readEvents(POOL, '0', { count: 100_000 });
    for (const id of this.ids) {
      const job = (await this.broker.getJob(id))!;
      const succeededEvents = events.filter((e) => e.type === 'job.succeeded' && e.job === id).length;
      expect(succeededEvents, `job.succeeded events of ${id}`).toBe(job.state === 'succeeded' ? 1 : 0);
      if (job.state === 'succeeded') expect(job.result).toEqual(this.accepted.get(id));
      else expect(this.accepted.has(id), `a completion of ${id} was accepted but it is ${job.state}`).toBe(false);
      const last = events.filter(isJobEvent).filter((e) => e.job === id).at(-1);
      expect(last?.state, `last event of ${id}`).toBe(job.state);
    }
  }
}

describe('invariants under random interleavings', () => {
  it('hold after every step, and no wake-up is lost once woken workers have claimed', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 60, size: 'max' }), async (ops) => {
        const scenario = await Scenario.start();
        for (const op of ops) {
          await scenario.apply(op);
          await scenario.checkIndexes();
        }
        await scenario.drainWakeUps();
        await scenario.checkIndexes();
        await scenario.checkNoLostWakeUp();
        await scenario.checkHistory();
      }),
      { numRuns: Number(process.env.EMP_PROPERTY_RUNS ?? 200), interruptAfterTimeLimit: 25_000, markInterruptAsFailure: false },
    );
  }, 120_000);

  it('with delays, deadlines and timeouts, every job is always in exactly the indexes its state implies', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(openOpArb, { minLength: 1, maxLength: 60, size: 'max' }), async (ops) => {
        const scenario = await OpenScenario.start();
        for (const op of ops) {
          await scenario.apply(op);
          await scenario.checkIndexes();
        }
        await scenario.checkHistory();
      }),
      { numRuns: Number(process.env.EMP_PROPERTY_RUNS ?? 200), interruptAfterTimeLimit: 25_000, markInterruptAsFailure: false },
    );
  }, 120_000);

  it('a job claimed before its queue deadline keeps no queue-deadline timer once claimed or finished', async () => {
    const scenario = await Scenario.start();
    const { broker } = scenario;
    const timers = () => redis.zrange(broker.keys.prefix(POOL) + 'timers', 0, -1);
    const submitted = await broker.submit({ service: 'simulation', deadlines: { queue_ttl_ms: 60_000 } });
    expect(await timers()).toEqual([submitted.id]);
    const claim = await broker.claim(POOL, 'cpu');
    expect(claim.job?.id).toBe(submitted.id);
    expect(await timers(), 'a starting job without a start deadline has nothing due').toEqual([]);
    await broker.complete(claim.job!.lease, null);
    expect(await timers(), 'a succeeded job has nothing due').toEqual([]);
    expect((await broker.queueStats(POOL)).timers).toBe(0);
  });
});

describe('the worker registry', () => {
  // Invariant 6: a registered worker stays listed, in exactly one of the online
  // and offline indexes, matching its state; it is removed only after it has
  // been silent for the registry retention.
  const OFFLINE_AFTER = 30_000;
  const RETENTION = 100_000;
  type RegistryOp = { op: 'state'; state: 'draining' | 'idle' | 'offline' } | { op: 'heartbeat' } | { op: 'claim' } | { op: 'advance'; ms: number };
  const registryOpArb: fc.Arbitrary<RegistryOp> = fc.oneof(
    fc.record({ op: fc.constant('state' as const), state: fc.constantFrom('draining' as const, 'idle' as const, 'offline' as const) }),
    fc.record({ op: fc.constant('heartbeat' as const) }),
    fc.record({ op: fc.constant('claim' as const) }),
    fc.record({ op: fc.constant('advance' as const), ms: fc.constantFrom(1_000, 20_000, 40_000) }),
  );

  async function registry() {
    await redis.flushall();
    now = START;
    const broker = await Broker.connect({
      redis,
      clock: () => now,
      skipLibraryLoad: true,
      config: { offlineAfterMs: OFFLINE_AFTER, registryRetentionMs: RETENTION },
    });
    await broker.registerWorker({ id: 'w', pool: POOL, capabilities: { services: ['simulation'] } });
    const p = broker.keys.prefix(POOL);
    const read = async () => {
      const [online, offline, state] = await Promise.all([
        redis.zscore(`${p}workers`, 'w'),
        redis.zscore(`${p}workers:offline`, 'w'),
        redis.hget(`${p}worker:w`, 'state'),
      ]);
      return { online: online !== null, offline: offline !== null, state };
    };
    return { broker, read };
  }

  it('a worker is listed exactly once, offline exactly when its state says so, and kept while it heartbeats', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(registryOpArb, { minLength: 1, maxLength: 30, size: 'max' }), async (ops) => {
        const { broker, read } = await registry();
        let lastSign = now; // the last time the worker itself said something
        for (const op of ops) {
          if (op.op === 'advance') {
            now += op.ms;
            await broker.tick(POOL);
          } else {
            const exists = (await read()).state !== null;
            if (!exists) {
              // removed: only allowed after being silent for the retention (and offline first)
              expect(now - lastSign, 'a worker vanished while it was still talking').toBeGreaterThanOrEqual(RETENTION);
              return;
            }
            if (op.op === 'state') await broker.setWorkerState(POOL, 'w', op.state);
            else if (op.op === 'heartbeat') await broker.heartbeat(POOL, 'w', []);
            else await broker.claim(POOL, 'w');
            if (op.op !== 'claim') lastSign = now;
          }
          const seen = await read();
          if (seen.state === null) {
            expect(now - lastSign, 'a worker vanished while it was still talking').toBeGreaterThanOrEqual(RETENTION);
            return;
          }
          expect([seen.online, seen.offline], `listed online/offline with state ${seen.state}`).toEqual(
            seen.state === 'offline' ? [false, true] : [true, false],
          );
        }
        expect(await undeclaredStreamEntries(redis), 'stream entries outside the event union').toEqual([]);
      }),
      { numRuns: 150, interruptAfterTimeLimit: 15_000, markInterruptAsFailure: false },
    );
  }, 60_000);

  it('a worker back from offline by setWorkerState is online again and not removed while it heartbeats', async () => {
    const { broker, read } = await registry();
    await broker.setWorkerState(POOL, 'w', 'offline');
    now += 1_000;
    expect(await broker.setWorkerState(POOL, 'w', 'idle')).toBe('idle');
    expect(await read()).toEqual({ online: true, offline: false, state: 'idle' });
    expect((await broker.queueStats(POOL)).onlineWorkers).toBe(1);
    for (let beat = 0; beat < 30; beat++) {
      now += 10_000;
      await broker.heartbeat(POOL, 'w', []);
      await broker.tick(POOL);
    }
    expect((await read()).state).toBe('idle');
  });
});
