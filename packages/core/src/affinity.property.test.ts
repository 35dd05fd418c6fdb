import { usePrivateRedis } from '@emp/testkit/private-redis';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { Broker, type ClaimResult, type Lease } from './broker';
import type { WorkerCapabilities } from './capabilities';
import { ensureFunctionLibrary } from './library';
import { undeclaredStreamEntries } from './testing/stream-contract';

// Random workloads with random model reports, on a virtual clock, with model
// affinity on (docs/broker.md, "Model affinity"). After every claim:
//
// - a claimed job is the head of its class (priority, then age), one the worker
//   can run, and no class head the worker could take now has a higher priority; a
//   job taken colder than another head of its priority there for the taking was overdue;
// - a job is left for a worker holding its models only while it is younger than
//   the bound, the claiming worker lacks its models (not even on disk) and another
//   online, non-draining worker able to run it holds them loaded or on disk; the
//   reply's retry_at is then no later than the end of the wait;
// - so no job stays queued while an idle worker able to run it claims, once the
//   bound has passed;
// and at the end every job has exactly one outcome (one job.succeeded or job.failed).

const POOL = 'standard';
const WAIT_MS = 1_000;
const START = 1_000_000;
const MODELS = ['a', 'b', 'c'] as const;

const { redis } = usePrivateRedis();
let now = START;

beforeAll(async () => {
  await ensureFunctionLibrary(redis);
});

const WORKERS: Array<{ id: string; capabilities: WorkerCapabilities; serves: readonly string[] }> = [
  { id: 'w1', capabilities: { services: ['simulation'], models: { simulation: '*' } }, serves: MODELS },
  { id: 'w2', capabilities: { services: ['simulation'], models: { simulation: '*' } }, serves: MODELS },
  { id: 'w3', capabilities: { services: ['simulation'], models: { simulation: ['a', 'b'] } }, serves: ['a', 'b'] },
];
const JOB_MODELS: string[][] = [[], ['a'], ['b'], ['a', 'b'], ['c']];
const TIER = { loaded: 3, on_disk: 2, downloading: 1 } as const;

type Op =
  | { op: 'submit'; models: number; priority: number }
  | { op: 'report'; worker: number; tiers: Array<0 | 1 | 2 | 3> }
  | { op: 'claim'; worker: number }
  | { op: 'complete' | 'fail'; worker: number; k: number; claimNext: boolean }
  | { op: 'state'; worker: number; state: 'draining' | 'idle' | 'offline' }
  | { op: 'advance'; ms: number };

const worker = fc.nat({ max: WORKERS.length - 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('submit' as const), models: fc.nat({ max: JOB_MODELS.length - 1 }), priority: fc.integer({ min: 0, max: 1 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('report' as const), worker, tiers: fc.array(fc.constantFrom<0 | 1 | 2 | 3>(0, 1, 2, 3), { minLength: 3, maxLength: 3 }) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('claim' as const), worker }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constantFrom('complete' as const, 'fail' as const), worker, k: fc.nat({ max: 3 }), claimNext: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('state' as const), worker, state: fc.constantFrom('draining' as const, 'idle' as const, 'offline' as const) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.constantFrom(1, 300, 999, 1_000, 2_000) }) },
);

interface ModelJob {
  id: string;
  models: string[];
  priority: number;
  submittedAt: number;
  seq: number;
  state: 'queued' | 'held' | 'done';
}

class Model {
  jobs: ModelJob[] = [];
  held = new Map<string, Lease[]>(WORKERS.map((w) => [w.id, []]));
  tiers = new Map<string, Map<string, number>>(WORKERS.map((w) => [w.id, new Map()]));
  state = new Map<string, 'online' | 'draining' | 'offline'>(WORKERS.map((w) => [w.id, 'online']));

  canRun(workerId: string, job: ModelJob): boolean {
    const serves = WORKERS.find((w) => w.id === workerId)!.serves;
    return job.models.every((m) => serves.includes(m));
  }

  tier(workerId: string, job: ModelJob): number {
    const tiers = this.tiers.get(workerId)!;
    return Math.min(3, ...job.models.map((m) => tiers.get(m) ?? 0));
  }

  /** Whether `workerId` leaves `job` for a worker holding its models (see the header). */
  deferred(workerId: string, job: ModelJob): boolean {
    if (job.models.length === 0 || now - job.submittedAt >= WAIT_MS || this.tier(workerId, job) >= 2) return false;
    return WORKERS.some((w) => w.id !== workerId && this.state.get(w.id) === 'online' && this.canRun(w.id, job) && this.tier(w.id, job) >= 2);
  }

  /** The rank a claim gives the job for this worker: tier, 3 without models or reports, 4 once overdue. */
  rank(workerId: string, job: ModelJob): number {
    if (job.models.length === 0) return 3;
    if (now - job.submittedAt >= WAIT_MS) return 4;
    return this.tiers.get(workerId)!.size === 0 ? 3 : this.tier(workerId, job);
  }

  /** The head of each class (the jobs of one model set): its highest priority, then oldest, queued job. */
  heads(): ModelJob[] {
    const heads = new Map<string, ModelJob>();
    for (const j of this.jobs) {
      if (j.state !== 'queued') continue;
      const key = j.models.join(',');
      const head = heads.get(key);
      if (!head || j.priority > head.priority || (j.priority === head.priority && j.seq < head.seq)) heads.set(key, j);
    }
    return [...heads.values()];
  }

  /** The jobs a claim by `workerId` may take now: class heads it can run and need not leave to another. */
  takeable(workerId: string): ModelJob[] {
    return this.heads().filter((j) => this.canRun(workerId, j) && !this.deferred(workerId, j));
  }
}

class Scenario {
  readonly model = new Model();
  private constructor(readonly broker: Broker) {}

  static async start(): Promise<Scenario> {
    await redis.flushall();
    now = START;
    const broker = await Broker.connect({
      redis,
      clock: () => now,
      skipLibraryLoad: true,
      config: { avoidMs: 0, affinityWaitMs: WAIT_MS, leaseMs: 1_000_000_000, offlineAfterMs: 1_000_000_000 },
    });
    for (const w of WORKERS) await broker.registerWorker({ id: w.id, pool: POOL, capabilities: w.capabilities });
    return new Scenario(broker);
  }

  /** Checks a claim reply (made at `now`, the model as it was before it) and records the take. */
  private expectClaim(workerId: string, reply: ClaimResult): void {
    const { model } = this;
    if (model.state.get(workerId) !== 'online') {
      expect(reply.job, `${workerId} is ${model.state.get(workerId)} and claims nothing`).toBeNull();
      return;
    }
    const takeable = model.takeable(workerId);
    if (!reply.job) {
      expect(takeable.map((j) => j.id), `claim by ${workerId} found nothing, though these were there for it`).toEqual([]);
      const waiting = model.heads().filter((j) => model.canRun(workerId, j));
      if (waiting.length > 0) {
        expect(reply.retryAt, 'a deferred job names when to claim again').toBeDefined();
        expect(reply.retryAt!).toBeLessThanOrEqual(Math.min(...waiting.map((j) => j.submittedAt + WAIT_MS)));
      }
      return;
    }
    const job = model.jobs.find((j) => j.id === reply.job!.id);
    expect(job, 'a claim returned a job the test never submitted').toBeDefined();
    expect(job!.state, 'a claim returned a job that was not queued').toBe('queued');
    expect(takeable.map((j) => j.id), `${workerId} may take ${job!.id} now`).toContain(job!.id);
    const top = Math.max(...takeable.map((j) => j.priority));
    expect(job!.priority, 'priority comes before affinity').toBe(top);
    const rank = model.rank(workerId, job!);
    if (rank < 3) {
      const better = takeable.filter((j) => j.priority === top && model.rank(workerId, j) > rank);
      expect(better.map((j) => j.id), `${workerId} took ${job!.id} (rank ${rank}) over warmer jobs`).toEqual([]);
    }
    job!.state = 'held';
    model.held.get(workerId)!.push(reply.job.lease);
  }

  async apply(op: Op): Promise<void> {
    const { broker, model } = this;
    switch (op.op) {
      case 'submit': {
        const models = JOB_MODELS[op.models]!;
        const { id } = await broker.submit({ service: 'simulation', priority: op.priority, requirements: models.length ? { models } : {}, max_attempts: 1 });
        model.jobs.push({ id, models, priority: op.priority, submittedAt: now, seq: model.jobs.length, state: 'queued' });
        return;
      }
      case 'report': {
        const workerId = WORKERS[op.worker]!.id;
        const report = { loaded: [] as string[], on_disk: [] as string[], downloading: [] as string[] };
        const tiers = new Map<string, number>();
        MODELS.forEach((m, i) => {
          const tier = op.tiers[i]!;
          if (tier === 0) return;
          tiers.set(m, tier);
          (tier === TIER.loaded ? report.loaded : tier === TIER.on_disk ? report.on_disk : report.downloading).push(m);
        });
        await broker.reportModels(POOL, workerId, report);
        model.tiers.set(workerId, tiers);
        return;
      }
      case 'claim': {
        const workerId = WORKERS[op.worker]!.id;
        this.expectClaim(workerId, await broker.claim(POOL, workerId));
        return;
      }
      case 'complete':
      case 'fail': {
        const workerId = WORKERS[op.worker]!.id;
        const leases = model.held.get(workerId)!;
        if (leases.length === 0) return;
        const [lease] = leases.splice(op.k % leases.length, 1);
        model.jobs.find((j) => j.id === lease!.jobId)!.state = 'done';
        const next =
          op.op === 'complete'
            ? await broker.complete(lease!, { ok: true }, { claimNext: op.claimNext })
            : (await broker.fail(lease!, { kind: 'non_retryable', message: 'no' }, { claimNext: op.claimNext })).next;
        if (op.claimNext) this.expectClaim(workerId, next!);
        return;
      }
      case 'state': {
        const workerId = WORKERS[op.worker]!.id;
        await broker.setWorkerState(POOL, workerId, op.state);
        model.state.set(workerId, op.state === 'idle' ? 'online' : op.state);
        // a worker going offline is forgotten as a holder; it reports again when back
        if (op.state === 'offline') model.tiers.set(workerId, new Map());
        return;
      }
      case 'advance':
        now += op.ms;
        return;
    }
  }

  /** Past the bound, every worker back and claiming: every job is taken, and each ends exactly once. */
  async drain(): Promise<void> {
    const { broker, model } = this;
    now += WAIT_MS;
    for (const w of WORKERS) {
      await broker.setWorkerState(POOL, w.id, 'idle');
      model.state.set(w.id, 'online');
    }
    for (let round = 0; model.jobs.some((j) => j.state !== 'done'); round++) {
      expect(round, 'the queue drains').toBeLessThan(model.jobs.length + 2);
      for (const w of WORKERS) {
        const leases = model.held.get(w.id)!;
        for (const lease of leases.splice(0)) {
          await broker.complete(lease, null, {});
          model.jobs.find((j) => j.id === lease.jobId)!.state = 'done';
        }
        for (;;) {
          const reply = await broker.claim(POOL, w.id);
          this.expectClaim(w.id, reply);
          if (!reply.job) break;
        }
      }
    }
    const outcomes = new Map<string, number>();
    for (const e of await broker.readEvents(POOL, '0', { count: 100_000 })) {
      if (e.type === 'job.succeeded' || e.type === 'job.failed') outcomes.set(e.job, (outcomes.get(e.job) ?? 0) + 1);
    }
    for (const job of model.jobs) expect(outcomes.get(job.id), `outcomes of ${job.id}`).toBe(1);
    expect(await undeclaredStreamEntries(redis)).toEqual([]);
  }
}

describe('model affinity under random workloads', () => {
  it('keeps every claim within the rules, leaves no job waiting past the bound, and ends each job once', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 60 }), async (ops) => {
        const scenario = await Scenario.start();
        for (const op of ops) await scenario.apply(op);
        await scenario.drain();
      }),
      { numRuns: 60 },
    );
  }, 240_000);
});
