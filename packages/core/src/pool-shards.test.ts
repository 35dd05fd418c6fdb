/// <reference path="./cluster-key-slot.d.ts" />
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { beforeEach, describe, expect, it } from 'vitest';
import type { SubmitResult } from './api-protocol';
import { Broker } from './broker';
import type { WorkerCapabilities } from './capabilities';
import { ValidationError } from './errors';
import calculateSlot from 'cluster-key-slot';
import { poolOfJobId } from './job';
import { KeyLayout } from './keys';
import { nextFormerCounts } from './broker/context';
import { MAX_SHARDS_PER_POOL, ShardName, placeOnShard, poolOfShard, shardIndex, shardName, shardsOf } from './pool-shards';

// Shards within a pool (docs/scale-out.md, "Shards within a pool"): a pool's jobs
// spread over N shards, each its own hash tag; placement, views that sum the
// shards, claims that look in every shard, and resharding with jobs in flight.

const POOL = 'standard';
const SIM: WorkerCapabilities = { services: ['simulation'], hardware: { gpu_memory_gb: 24 } };

const { redis } = usePrivateRedis();
let broker: Broker;

beforeEach(async () => {
  broker = await Broker.connect({ redis, config: { avoidMs: 0 } });
});

async function submitMany(count: number, extra: Record<string, unknown> = {}): Promise<SubmitResult[]> {
  const { requirements, ...rest } = extra as { requirements?: Record<string, unknown> };
  const results = await broker.submitMany(Array.from({ length: count }, (_, i) => ({ service: 'simulation', payload: { i }, ...rest, requirements: { pool: POOL, ...requirements } })));
  return results.map((r) => {
    if (r instanceof Error) throw r;
    return r;
  });
}

/** Every job the worker can take, looking in every shard, until none is left. */
async function drain(worker: string): Promise<string[]> {
  const taken: string[] = [];
  for (;;) {
    const found = await broker.claimInShards(POOL, worker, { count: 16 });
    const jobs = found.results.flatMap((r) => (r.job ? [r.job] : []));
    if (jobs.length === 0) return taken;
    for (const job of jobs) {
      await broker.complete(job.lease, { ok: true });
      taken.push(job.id);
    }
  }
}

describe('shard names and placement', () => {
  it('names shard 0 as the pool and shard k as <pool>_<k>, and reads the pool and index back', () => {
    expect(shardsOf('fast', 3)).toEqual(['fast', 'fast_1', 'fast_2']);
    expect(shardName('fast', 0)).toBe('fast');
    expect(poolOfShard('fast_12')).toBe('fast');
    expect(poolOfShard('fast')).toBe('fast');
    expect(shardIndex('fast_12')).toBe(12);
    expect(shardIndex('fast')).toBe(0);
    expect(poolOfJobId('fast_3.m3kx9a0b1c2d3e4f')).toBe('fast_3');
  });

  it('refuses shard names that are no pool shard', () => {
    for (const bad of ['fast_0', 'fast_', 'Fast_1', 'fast_1_2', `fast_${MAX_SHARDS_PER_POOL}`, '_1']) {
      expect(ShardName.safeParse(bad).success, bad).toBe(false);
    }
    expect(ShardName.safeParse(`fast_${MAX_SHARDS_PER_POOL - 1}`).success).toBe(true);
  });

  it("spreads a pool's shards evenly over the slot circle, each shard's keys in one slot", () => {
    const keys = new KeyLayout();
    for (const pool of ['standard', 'renders', 'a', 'heavy-gpu-2']) {
      const base = calculateSlot(keys.anchor(pool));
      const offsets = shardsOf(pool, 16).map((shard) => (calculateSlot(keys.anchor(shard)) - base + 16384) % 16384);
      // the first 2^j shards sit one to each 1/2^j of the circle
      for (const n of [2, 4, 8, 16]) expect(new Set(offsets.slice(0, n).map((o) => Math.floor((o * n) / 16384))).size, `${pool}, ${n} shards`).toBe(n);
      // 12 shards over three equal ranges: 4 each, give or take one
      for (let shift = 0; shift < 16384; shift += 997) {
        const thirds = [0, 0, 0];
        for (const o of offsets.slice(0, 12)) thirds[Math.floor((((o + shift) % 16384) * 3) / 16384)]! += 1;
        expect(Math.max(...thirds)).toBeLessThanOrEqual(5);
      }
      const shard = `${pool}_5`;
      expect(keys.shardTag(shard)).toMatch(new RegExp(`^\\{${shard}-\\d+\\}$`));
      expect(calculateSlot(keys.job(shard, `${shard}.m3kx9a0b1c2d3e4f`))).toBe(calculateSlot(keys.anchor(shard)));
    }
    expect(keys.shardTag('standard')).toBe('{standard}');
  });

  it('places a keyed submit by its key, the same shard every time, and others at random', () => {
    const shardOf = (key: string) => placeOnShard(8, key, Math.random());
    expect(new Set(Array.from({ length: 20 }, () => shardOf('acme:order-1'))).size).toBe(1);
    const keyed = new Set(Array.from({ length: 400 }, (_, i) => shardOf(`acme:order-${i}`)));
    expect(keyed.size).toBe(8);
    expect(placeOnShard(8, undefined, 0)).toBe(0);
    expect(placeOnShard(8, undefined, 0.999999)).toBe(7);
    expect(placeOnShard(1, 'acme:x', 0.7)).toBe(0);
  });
});

describe('a pool with shards', () => {
  it('has one shard until told otherwise, and refuses a count out of range with a clear error', async () => {
    expect(await broker.poolShards(POOL)).toEqual({ pool: POOL, count: 1, serve: 1 });
    expect((await broker.submit({ service: 'simulation', requirements: { pool: POOL } })).id).toMatch(/^standard\.[0-9a-z]+$/);
    for (const bad of [0, 65, 2.5]) await expect(broker.setShardCount(POOL, bad)).rejects.toThrow(ValidationError);
    await expect(broker.setShardCount('Not a pool', 2)).rejects.toThrow(/pool name/);
  });

  it('spreads submits over its shards, each job in the shard its id names, and the views sum them', async () => {
    expect(await broker.setShardCount(POOL, 4)).toEqual({ pool: POOL, count: 4, serve: 4 });
    const submitted = await submitMany(400);
    const perShard = new Map<string, number>();
    for (const result of submitted) {
      expect(result.pool).toBe(POOL);
      perShard.set(poolOfJobId(result.id), (perShard.get(poolOfJobId(result.id)) ?? 0) + 1);
    }
    expect([...perShard.keys()].sort()).toEqual(['standard', 'standard_1', 'standard_2', 'standard_3']);
    // random placement: each of 4 shards gets about 100 of 400
    for (const n of perShard.values()) expect(n).toBeGreaterThan(50);
    for (const [shard, n] of perShard) expect(await redis.xlen(`${broker.keys.prefix(shard)}joblog`)).toBe(n);

    const one = await broker.getJob(submitted.find((r) => r.id.startsWith('standard_2.'))!.id);
    expect(one).toMatchObject({ pool: POOL, state: 'queued' });

    const stats = await broker.queueStats(POOL);
    expect(stats.pool).toBe(POOL);
    expect(stats.classes).toHaveLength(1);
    expect(stats.classes[0]!.depth).toBe(400);
    expect(submitted.map((r) => r.id)).toContain(stats.classes[0]!.headJob);
    expect((await broker.jobCounts(POOL)).find((c) => c.service === 'simulation')?.queued).toBe(400);
    expect(await broker.pools()).toEqual([POOL]);
    expect(await broker.shards()).toEqual(['standard', 'standard_1', 'standard_2', 'standard_3']);

    // a listing merges the shards, newest first, page by page, each job once
    const listed: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await broker.listJobs({ pool: POOL, limit: 70, cursor });
      for (const job of page.jobs) expect(job.pool).toBe(POOL);
      listed.push(...page.jobs.map((j) => j.id));
      cursor = page.next_cursor;
    } while (cursor);
    expect(new Set(listed).size).toBe(400);
    expect(listed.sort()).toEqual(submitted.map((r) => r.id).sort());
  });

  it('dedupes an idempotency key across shards: the key picks the shard', async () => {
    await broker.setShardCount(POOL, 8);
    const first = await broker.submit({ service: 'simulation', requirements: { pool: POOL }, idempotency_key: 'order-42', payload: { n: 1 } });
    for (let i = 0; i < 5; i++) {
      const again = await broker.submit({ service: 'simulation', requirements: { pool: POOL }, idempotency_key: 'order-42', payload: { n: 1 } });
      expect(again).toMatchObject({ id: first.id, duplicate: true });
    }
    await expect(broker.submit({ service: 'simulation', requirements: { pool: POOL }, idempotency_key: 'order-42', payload: { n: 2 } })).rejects.toThrow(/idempotency key was used for/);
    // other keys go to other shards
    const keyed = await Promise.all(Array.from({ length: 64 }, (_, i) => broker.submit({ service: 'simulation', requirements: { pool: POOL }, idempotency_key: `k-${i}` })));
    expect(new Set(keyed.map((r) => poolOfJobId(r.id))).size).toBeGreaterThan(4);
  });

  it('dedupes an idempotency key across a reshard, both ways: a retry finds the first submit where the count then put it', async () => {
    const keyed = (key: string) => ({ service: 'simulation', requirements: { pool: POOL }, idempotency_key: key, payload: { key } });
    const keys = Array.from({ length: 24 }, (_, i) => `retry-${i}`);
    const underOne = await Promise.all(keys.map((key) => broker.submit(keyed(key))));
    expect(new Set(underOne.map((r) => poolOfJobId(r.id)))).toEqual(new Set([POOL]));
    await broker.setShardCount(POOL, 4);
    // under 4 shards most keys hash elsewhere; each retry still answers its first job
    const underFour = await Promise.all(keys.map((key) => broker.submit(keyed(key))));
    expect(underFour.map((r) => [r.id, r.duplicate])).toEqual(underOne.map((r) => [r.id, true]));
    const fresh = await Promise.all(keys.map((key) => broker.submit(keyed(`${key}-new`))));
    expect(new Set(fresh.map((r) => poolOfJobId(r.id))).size).toBeGreaterThan(1);
    // and back to 2: keys first seen under 1 and under 4 both dedupe
    await broker.setShardCount(POOL, 2);
    for (const [key, first] of [...keys.map((k, i) => [k, underOne[i]!] as const), ...keys.map((k, i) => [`${k}-new`, fresh[i]!] as const)]) {
      expect(await broker.submit(keyed(key))).toMatchObject({ id: first.id, duplicate: true });
    }
    // a workflow's key as well
    const steps = { only: { service: 'simulation', payload: {} } };
    await broker.setShardCount(POOL, 1);
    const flow = await broker.submitWorkflow({ pool: POOL, steps, idempotency_key: 'flow-1' });
    await broker.setShardCount(POOL, 8);
    for (let i = 0; i < 4; i++) expect(await broker.submitWorkflow({ pool: POOL, steps, idempotency_key: 'flow-1' })).toMatchObject({ id: flow.id, duplicate: true });
    // what is stored: each former count with the end of its idempotency window
    const former = JSON.parse((await redis.hget(broker.keys.shardCounts(), `${POOL}:former`))!) as Record<string, number>;
    expect(Object.keys(former).sort()).toEqual(['1', '2', '4']);
  });

  it('keeps a former count for the idempotency window only, and never the current one', () => {
    const day = 86_400_000;
    expect(JSON.parse(nextFormerCounts(null, 1, 4, 1_000, day))).toEqual({ 1: 1_000 + day });
    expect(JSON.parse(nextFormerCounts(JSON.stringify({ 1: 5_000, 2: 900 }), 4, 1, 1_000, day))).toEqual({ 4: 1_000 + day });
    expect(JSON.parse(nextFormerCounts('not json', 2, 2, 1_000, day))).toEqual({});
  });

  it('registers a worker in every shard; its claims find the jobs of every shard, each once', async () => {
    await broker.setShardCount(POOL, 4);
    const { shards } = await broker.registerWorker({ id: 'w1', pool: POOL, capabilities: SIM });
    expect(shards).toEqual(['standard', 'standard_1', 'standard_2', 'standard_3']);
    for (const shard of shards) expect(await redis.exists(broker.keys.worker(shard, 'w1'))).toBe(1);
    const submitted = await submitMany(120);
    const taken = await drain('w1');
    expect(taken.sort()).toEqual(submitted.map((r) => r.id).sort());
    expect((await broker.jobCounts(POOL)).reduce((sum, c) => sum + c.queued + c.running, 0)).toBe(0);
    // with nothing left it is idle in every shard: a submit in any of them wakes it
    const found = await broker.claimInShards(POOL, 'w1');
    expect(found).toMatchObject({ results: [], idleIn: shards });
    for (const shard of shards) expect(await redis.hexists(broker.keys.idle(shard), 'w1')).toBe(1);
    const next = await broker.submit({ service: 'simulation', requirements: { pool: POOL } });
    const shard = poolOfJobId(next.id);
    expect(await redis.lrange(broker.keys.signal(shard, 'w1'), 0, -1)).toEqual([expect.stringMatching(/^wake:/)]);
    const woken = await broker.claimInShards(POOL, 'w1', { first: shard });
    expect(woken.shard).toBe(shard);
    expect(woken.results[0]?.job?.id).toBe(next.id);
  });

  it('a claim looks past the shards a reshard added before the worker registered there, and finds their jobs once it has', async () => {
    await broker.setShardCount(POOL, 2);
    await broker.registerWorker({ id: 'w-late', pool: POOL, capabilities: SIM });
    await broker.setShardCount(POOL, 4);
    const submitted = await submitMany(40);
    const inNew = submitted.filter((r) => ['standard_2', 'standard_3'].includes(poolOfJobId(r.id)));
    expect(inNew.length).toBeGreaterThan(0);
    // not registered in standard_2 / _3 yet: no UNKNOWN_WORKER from them, their jobs wait
    const before = await drain('w-late');
    expect(before.sort()).toEqual(submitted.filter((r) => !inNew.includes(r)).map((r) => r.id).sort());
    // unknown in the first shard it looks in is still the error that makes a worker register again
    await expect(broker.claimInShards(POOL, 'w-late', { first: 'standard_2' })).rejects.toThrow(/not registered/);
    await expect(broker.claimInShards(POOL, 'w-nobody')).rejects.toThrow(/not registered/);
    // what the shards: signal makes a worker do
    await broker.registerWorker({ id: 'w-late', pool: POOL, capabilities: SIM });
    expect((await drain('w-late')).sort()).toEqual(inNew.map((r) => r.id).sort());
  });

  it('a full worker leaving an idle set passes the wake-up it got there to a free worker', async () => {
    await broker.setShardCount(POOL, 2);
    await broker.registerWorker({ id: 'busy', pool: POOL, capabilities: SIM });
    await broker.registerWorker({ id: 'free', pool: POOL, capabilities: SIM });
    // both idle in both shards, 'busy' first in each idle set
    for (const worker of ['busy', 'free']) expect((await broker.claimInShards(POOL, worker)).idleIn).toHaveLength(2);
    // a job in shard 1 wakes one of them; say it is 'busy', which has just filled its slot elsewhere
    const job = await broker.submit({ service: 'simulation', requirements: { pool: POOL }, idempotency_key: keyForShard(1, 2) });
    expect(poolOfJobId(job.id)).toBe('standard_1');
    const wokenWorker = (await redis.llen(broker.keys.signal('standard_1', 'busy'))) > 0 ? 'busy' : 'free';
    const other = wokenWorker === 'busy' ? 'free' : 'busy';
    await broker.setWorkerState(POOL, wokenWorker, 'borrowing', { shards: ['standard_1'] });
    expect(await redis.lrange(broker.keys.signal('standard_1', other), 0, -1)).toEqual([expect.stringMatching(/^wake:/)]);
    expect((await broker.claim('standard_1', other)).job?.id).toBe(job.id);
    await expect(broker.setWorkerState(POOL, other, 'borrowing', { shards: ['fast_1'] })).rejects.toThrow(/not a shard of pool standard/);
  });

  it('renews leases in the shard of each job and keeps the worker online in every shard', async () => {
    await broker.setShardCount(POOL, 3);
    await broker.registerWorker({ id: 'w1', pool: POOL, capabilities: SIM, concurrency: 8 });
    await submitMany(30);
    const found = await broker.claimInShards(POOL, 'w1', { count: 8 });
    const jobs = found.results.flatMap((r) => (r.job ? [r.job] : []));
    expect(jobs.length).toBeGreaterThan(0);
    const drops = await broker.heartbeat(POOL, 'w1', jobs.map((j) => ({ jobId: j.id, token: j.lease.token })));
    expect(drops).toEqual([]);
    const lost = await broker.heartbeat(POOL, 'w1', [{ jobId: `${found.shard}.m3kx9a0b1c2d3e4f`, token: '1' }]);
    expect(lost).toEqual([{ jobId: `${found.shard}.m3kx9a0b1c2d3e4f`, verdict: expect.any(String) }]);
    for (const shard of await broker.servedShards(POOL)) expect(await redis.zscore(broker.keys.workers(shard), 'w1')).not.toBeNull();
  });

  it('pauses a service in every shard, and in the shards a reshard adds', async () => {
    await broker.setShardCount(POOL, 2);
    expect(await broker.setServicePaused(POOL, 'simulation', true, { by: 'ops', reason: 'maintenance' })).toBe(true);
    await broker.setShardCount(POOL, 4);
    await broker.registerWorker({ id: 'w1', pool: POOL, capabilities: SIM });
    await submitMany(40);
    expect((await broker.claimInShards(POOL, 'w1')).results).toEqual([]);
    for (const shard of await broker.servedShards(POOL)) expect(await redis.hexists(broker.keys.paused(shard), 'simulation')).toBe(1);
    await broker.setServicePaused(POOL, 'simulation', false);
    expect(await drain('w1')).toHaveLength(40);
  });

  it('sums the demand counted in each shard', async () => {
    await broker.setShardCount(POOL, 4);
    await submitMany(80, { requirements: { models: ['sdxl'] } });
    const now = await broker.serverTime();
    const buckets = await broker.modelDemand(POOL, { from: now - 600_000, to: now + 300_000 });
    expect(buckets.reduce((sum, b) => sum + (b.counts.sdxl ?? 0), 0)).toBe(80);
  });

  it('learns execution times from the jobs of every shard, not only the first', async () => {
    await broker.setShardCount(POOL, 4);
    await broker.registerWorker({ id: 'w1', pool: POOL, capabilities: SIM });
    const submitted = await submitMany(40);
    expect(new Set(submitted.map((r) => poolOfJobId(r.id))).size).toBeGreaterThan(1);
    expect(await drain('w1')).toHaveLength(40);

    const learned = (await broker.poolReport()).pools.flatMap((p) => p.durations);
    expect(learned).toEqual([expect.objectContaining({ service: 'simulation', models: [], samples: 40 })]);
  });

  it('reshards to fewer shards with jobs in flight: the left-over shards stay served until they are empty, nothing is lost', async () => {
    await broker.setShardCount(POOL, 4);
    await broker.registerWorker({ id: 'w1', pool: POOL, capabilities: SIM, concurrency: 4 });
    const before = await submitMany(200);
    // one job of shard 3 is running when the reshard comes, another was canceled
    const running = await broker.claim('standard_3', 'w1');
    expect(running.job).not.toBeNull();
    const old = before.find((r) => r.id.startsWith('standard_3.') && r.id !== running.job!.id)!;
    await broker.cancel(old.id);

    expect(await broker.setShardCount(POOL, 2)).toEqual({ pool: POOL, count: 2, serve: 4 });
    const after = await submitMany(100);
    expect(new Set(after.map((r) => poolOfJobId(r.id)))).toEqual(new Set(['standard', 'standard_1']));
    expect(await broker.servedShards(POOL)).toHaveLength(4);

    await broker.complete(running.job!.lease, { done: true });
    const taken = await drain('w1');
    expect(taken.length + 2).toBe(300);
    expect(new Set([...taken, running.job!.id, old.id])).toEqual(new Set([...before, ...after].map((r) => r.id)));
    expect(await broker.settleShards(POOL)).toEqual({ pool: POOL, count: 2, serve: 2 });
    expect(await broker.servedShards(POOL)).toEqual(['standard', 'standard_1']);

    // an old job put back in a left-over shard makes it served again
    expect(await broker.retry(old.id)).toBe('queued');
    expect((await broker.settleShards(POOL)).serve).toBe(4);
    expect(await drain('w1')).toContain(old.id);
  });
});

describe('the needle, across shards', () => {
  const WORKER_A: WorkerCapabilities = { services: ['simulation'], labels: { gpu: 'a100' }, hardware: { gpu_memory_gb: 80 } };
  const WORKER_B: WorkerCapabilities = { services: ['simulation'], labels: { gpu: 'l4' }, hardware: { gpu_memory_gb: 24 } };

  it('finds the one job B can run, on whichever shard it sits, behind 100,000 others spread over all shards', async () => {
    const SHARDS = 4;
    await broker.setShardCount(POOL, SHARDS);
    await broker.registerWorker({ id: 'a', pool: POOL, capabilities: WORKER_A });
    await broker.registerWorker({ id: 'b', pool: POOL, capabilities: WORKER_B });
    for (let start = 0; start < 100_000; start += 5_000) {
      const results = await broker.submitMany(
        Array.from({ length: 5_000 }, (_, k) => ({ service: 'simulation', priority: 1000, requirements: { pool: POOL, constraints: { gpu: 'a100' } }, payload: { i: start + k } })),
      );
      for (const r of results) if (r instanceof Error) throw r;
    }
    const depths = await Promise.all(shardsOf(POOL, SHARDS).map(async (shard) => redis.xlen(`${broker.keys.prefix(shard)}joblog`)));
    for (const depth of depths) expect(depth).toBeGreaterThan(20_000);
    // the needle on the last shard B will look at
    const needle = await broker.submit({ service: 'simulation', priority: -1000, requirements: { pool: POOL, constraints: { gpu: 'l4' } }, payload: { needle: true }, idempotency_key: keyForShard(SHARDS - 1, SHARDS) });
    expect(poolOfJobId(needle.id)).toBe(`${POOL}_${SHARDS - 1}`);

    await redis.config('RESETSTAT');
    const found = await broker.claimInShards(POOL, 'b');
    const commands = await commandsRun();
    expect(found.shard).toBe(`${POOL}_${SHARDS - 1}`);
    expect(found.results[0]?.job?.id).toBe(needle.id);
    expect(found.idleIn).toEqual(shardsOf(POOL, SHARDS - 1));
    // one claim per shard, each looking at class heads only: a few dozen commands a shard, not the 100,000
    expect(commands).toBeLessThanOrEqual(SHARDS * 60);
    expect((await broker.queueStats(POOL)).classes.find((c) => c.depth > 1)?.depth).toBe(100_000);
    expect((await broker.claimInShards(POOL, 'a')).results[0]?.job?.payload).toMatchObject({ i: expect.any(Number) });
  });

  it('claim cost: the same for 1 to 8 shards when the first shard has a job; the same few commands per shard when all are empty', async () => {
    const cost = async (shards: number, withJob: boolean) => {
      await redis.flushall();
      broker = await Broker.connect({ redis, config: { avoidMs: 0 } });
      await broker.setShardCount(POOL, shards);
      await broker.registerWorker({ id: 'b', pool: POOL, capabilities: SIM });
      // warm: the worker's first claim in each shard reads its profile's verdicts (and leaves it idle in all)
      expect((await broker.claimInShards(POOL, 'b')).idleIn).toHaveLength(shards);
      if (withJob) await broker.submit({ service: 'simulation', requirements: { pool: POOL }, idempotency_key: keyForShard(0, shards) });
      await redis.config('RESETSTAT');
      const found = await broker.claimInShards(POOL, 'b');
      expect(found.results.length > 0).toBe(withJob);
      return commandsRun();
    };
    const withJob = [await cost(1, true), await cost(2, true), await cost(4, true), await cost(8, true)];
    expect(new Set(withJob).size).toBe(1);
    const empty = [await cost(1, false), await cost(2, false), await cost(4, false), await cost(8, false)];
    // a constant (the shard counts' read) and the same few commands per empty shard
    const perShard = empty[1]! - empty[0]!;
    expect(perShard).toBeGreaterThan(0);
    expect(perShard).toBeLessThanOrEqual(10);
    expect(empty[2]).toBe(empty[0]! + 3 * perShard);
    expect(empty[3]).toBe(empty[0]! + 7 * perShard);
  });
});

/** Commands Redis ran (inside functions too) since the last RESETSTAT, from INFO commandstats. */
async function commandsRun(): Promise<number> {
  const info = await redis.info('commandstats');
  let total = 0;
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (['config', 'info', 'fcall', 'fcall_ro'].includes(match[1]!)) continue;
    total += Number(match[2]);
  }
  return total;
}

/** An idempotency key (of the default tenant) that places its job on shard `k` of `count`. */
function keyForShard(k: number, count: number): string {
  for (let i = 0; ; i++) if (placeOnShard(count, `default:key-${i}`, 0) === k) return `key-${i}`;
}
