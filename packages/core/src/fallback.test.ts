import { usePrivateRedis } from '@emp/testkit/private-redis';
import { describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { LeaseLostError, ValidationError } from './errors';

const { redis } = usePrivateRedis();

const T0 = Date.UTC(2100, 0, 1);
const FAST = { services: ['simulation', 'ollama'] };

/** A broker on a clock the test moves, a `standard` worker and a `fast` worker registered in `standard` as a borrower. */
async function setup() {
  let now = T0;
  const b = await Broker.connect({ redis, clock: () => now });
  const advance = (ms: number) => {
    now += ms;
  };
  await b.registerWorker({ id: 'std-1', pool: 'standard', capabilities: { services: ['simulation'] } });
  await b.registerWorker({ id: 'fast-1', pool: 'fast', capabilities: FAST });
  await b.registerWorker({ id: 'fast-1', pool: 'standard', home_pool: 'fast', capabilities: FAST });
  return { b, advance, now: () => now };
}

const POLICY = { homePool: 'fast', afterMs: 10_000, maxExpectedS: 60 };

async function setEstimate(b: Broker, id: string, seconds: number) {
  // what routing writes on a job it estimated (the estimate's source: history or a hint)
  await redis.hset(b.keys.job('standard', id), 'route_estimate_s', String(seconds));
}

describe('cross-pool fallback', () => {
  it('takes a job only once it has waited the stated time, and says when to look again before', async () => {
    const { b, advance } = await setup();
    // the standard worker is busy, so the next job waits
    await b.submit({ service: 'simulation', requirements: { pool: 'standard' } });
    const busy = await b.claim('standard', 'std-1');
    expect(busy.job).not.toBeNull();
    const waiting = await b.submit({ service: 'simulation', requirements: { pool: 'standard' } });
    await setEstimate(b, waiting.id, 8);

    advance(4_000);
    const early = await b.claimFallback('standard', 'fast-1', POLICY);
    expect(early.job).toBeNull();
    expect(early.job === null && early.retryAt).toBe(T0 + 10_000);

    advance(6_000);
    const taken = await b.claimFallback('standard', 'fast-1', POLICY);
    expect(taken.job?.id).toBe(waiting.id);
    expect(taken.job?.lease.pool).toBe('standard');

    const starting = (await b.readEvents('standard', '0', { count: 1_000 })).filter((e) => e.type === 'job.starting' && e.job === waiting.id);
    expect(starting).toHaveLength(1);
    expect(starting[0]).toMatchObject({ worker: 'fast-1', home_pool: 'fast' });
    expect((starting[0] as { fallback?: string }).fallback).toMatch(/^waited 10 s in standard \(fallback after 10 s\); fast had nothing for fast-1; expected 8 s \(at most 60 s\)$/);

    // fenced like any claim: a stale token is refused, the current one completes
    await expect(b.complete({ ...taken.job!.lease, token: '99' }, null)).rejects.toBeInstanceOf(LeaseLostError);
    await b.complete(taken.job!.lease, { ok: true });
    expect((await b.getJob(waiting.id))?.state).toBe('succeeded');
  });

  it('leaves jobs longer than the policy allows, and jobs without an estimate unless one is assumed for them', async () => {
    const { b, advance } = await setup();
    await b.submit({ service: 'simulation', requirements: { pool: 'standard' } });
    await b.claim('standard', 'std-1');
    // (the fallback looks at the head of each requirement class, as a claim does: these are two classes)
    const long = await b.submit({ service: 'ollama', requirements: { pool: 'standard' } });
    await setEstimate(b, long.id, 400);
    const unknown = await b.submit({ service: 'simulation', requirements: { pool: 'standard' }, priority: -1 });
    advance(60_000);

    const none = await b.claimFallback('standard', 'fast-1', POLICY);
    expect(none.job).toBeNull();
    expect(none.job === null && none.retryAt).toBeUndefined();
    // an operator's policy may assume a duration for jobs nobody estimated
    const assumed = await b.claimFallback('standard', 'fast-1', { ...POLICY, unknownExpectedS: 30 });
    expect(assumed.job?.id).toBe(unknown.id);
    // with no bound, any job that waited long enough
    await b.complete(assumed.job!.lease, null);
    const unbounded = await b.claimFallback('standard', 'fast-1', { homePool: 'fast', afterMs: 10_000 });
    expect(unbounded.job?.id).toBe(long.id);
  });

  it('never records a borrower idle in the pool it borrows from: that pool wakes only its own workers', async () => {
    const { b, advance } = await setup();
    expect((await b.claim('standard', 'std-1')).job).toBeNull(); // std-1 waits in standard's idle set
    advance(20_000);
    expect((await b.claimFallback('standard', 'fast-1', POLICY)).job).toBeNull();
    await b.submit({ service: 'simulation', requirements: { pool: 'standard' } });
    expect(await redis.lrange(b.keys.signal('standard', 'std-1'), 0, -1)).toHaveLength(1);
    expect(await redis.lrange(b.keys.signal('standard', 'fast-1'), 0, -1)).toEqual([]);
  });

  it('matches requirements as any claim does: a borrower that cannot run the job leaves it', async () => {
    const { b, advance } = await setup();
    await b.submit({ service: 'simulation', requirements: { pool: 'standard', hardware: { gpu_memory_gb: 48 } } });
    advance(60_000);
    expect((await b.claimFallback('standard', 'fast-1', { homePool: 'fast', afterMs: 0 })).job).toBeNull();
  });

  it('requeues a borrowed job whose borrower falls silent, like any lost lease', async () => {
    const { b, advance } = await setup();
    await b.submit({ service: 'simulation', requirements: { pool: 'standard' } });
    await b.claim('standard', 'std-1');
    const job = await b.submit({ service: 'simulation', requirements: { pool: 'standard' } });
    advance(10_000);
    const taken = await b.claimFallback('standard', 'fast-1', { homePool: 'fast', afterMs: 10_000 });
    expect(taken.job?.id).toBe(job.id);
    await b.heartbeat('standard', 'std-1', []);
    for (let i = 0; i < 40; i++) {
      advance(1_000);
      await b.heartbeat('standard', 'std-1', []);
      await b.tick('standard');
    }
    const after = await b.getJob(job.id);
    expect(after?.state).toBe('queued');
  });

  it('refuses a borrower registration that names its own pool as home', async () => {
    const { b } = await setup();
    await expect(b.registerWorker({ id: 'x', pool: 'fast', home_pool: 'fast', capabilities: FAST })).rejects.toBeInstanceOf(ValidationError);
  });

  it('does not count a borrower as a worker of the pool it borrows from when routing', async () => {
    let now = T0;
    const b = await Broker.connect({ redis, clock: () => now });
    await b.registerWorker({ id: 'std-1', pool: 'standard', capabilities: FAST });
    await b.registerWorker({ id: 'std-1', pool: 'fast', home_pool: 'standard', capabilities: FAST });
    now += 10_000; // past the router's cache
    const job = await b.submit({ service: 'simulation', expected_duration_s: 5 });
    expect(job.id.startsWith('standard.')).toBe(true);
    expect((await b.getJob(job.id))?.routing?.reason).toMatch(/fast has no/);
  });
});
