import { usePrivateRedis } from '@emp/testkit/private-redis';
import { beforeEach, describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { brokerConfig, brokerConfigFromEnv, fallbackRules } from './config';
import { ValidationError } from './errors';
import { KeyLayout } from './keys';
import { durationClass, durationStats } from './routing';

// Routing by expected duration (docs/pools.md), on the default pools: fast (< 30 s),
// standard (30 s - 3 min), heavy (>= 3 min, 48 GB GPUs). The broker runs on a
// virtual clock, so execution times are whatever the test says and the
// estimator's 5 s cache runs out when the test moves the clock.

const { redis } = usePrivateRedis();
const keys = new KeyLayout();
let now = 1_750_000_000_000;
let broker: Broker;

beforeEach(async () => {
  now = 1_750_000_000_000;
  broker = await Broker.connect({ redis, clock: () => now });
});

async function registerWorkers(pools: string[]): Promise<void> {
  for (const pool of pools) {
    await broker.registerWorker({ id: `w-${pool}`, pool, capabilities: { services: ['simulation'], models: { simulation: '*' }, hardware: { gpu_memory_gb: 80 } }, concurrency: 100 });
  }
}

/** Submits, claims and starts `count` jobs of the class (service simulation, model `model`) in `pool`. */
async function startJobs(pool: string, model: string, count: number) {
  const leases = [];
  for (let i = 0; i < count; i++) {
    await broker.submit({ service: 'simulation', requirements: { pool, models: [model] } });
    const claimed = await broker.claim(pool, `w-${pool}`);
    if (!claimed.job) throw new Error(`nothing to claim in ${pool}`);
    await broker.start(claimed.job.lease);
    leases.push(claimed.job.lease);
  }
  return leases;
}

/** Runs `count` jobs of the class one after the other, each taking `ms` by the virtual clock. */
async function runJobs(pool: string, model: string, count: number, ms: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const [lease] = await startJobs(pool, model, 1);
    now += ms;
    await broker.complete(lease!, { ok: true });
  }
}

async function routed(input: Parameters<Broker['submit']>[0]) {
  const { id } = await broker.submit(input);
  const job = (await broker.getJob(id))!;
  return { pool: job.pool, routing: job.routing!, job };
}

describe('routing by expected duration', () => {
  it('puts a job with a hint in the pool of its cutoff (cutoffs are exclusive)', async () => {
    const cases: Array<[number, string]> = [[0.5, 'fast'], [29.9, 'fast'], [30, 'standard'], [179, 'standard'], [180, 'heavy'], [3_600, 'heavy']];
    for (const [seconds, pool] of cases) {
      const { routing, job } = await routed({ service: 'simulation', expected_duration_s: seconds });
      expect(routing, `${seconds} s`).toEqual({ pool, source: 'hint', estimate_s: seconds >= 10 ? Math.round(seconds) : seconds, reason: expect.stringContaining(`routed to ${pool}: expected_duration_s = `) });
      expect(job.id.startsWith(`${pool}.`)).toBe(true);
      expect(job.expected_duration_s).toBe(seconds);
    }
  });

  it('lets a named pool win over a hint, and keeps a pool outside the configuration working', async () => {
    expect((await routed({ service: 'simulation', expected_duration_s: 5, requirements: { pool: 'heavy' } })).routing).toEqual({
      pool: 'heavy',
      source: 'named',
      reason: 'routed to heavy: named in its requirements',
    });
    expect((await routed({ service: 'simulation', requirements: { pool: 'gpu-lab' } })).routing).toMatchObject({ pool: 'gpu-lab', source: 'named' });
  });

  it('sends a job with neither hint nor history to the default pool', async () => {
    const { routing } = await routed({ service: 'simulation', requirements: { models: ['sdxl'] } });
    expect(routing).toMatchObject({ pool: 'standard', source: 'default' });
    expect(routing.estimate_s).toBeUndefined();
    expect(routing.reason).toMatch(/^routed to standard, the default pool: no expected_duration_s/);
  });

  it('learns a class from its completions and follows it as it gets slower', async () => {
    await registerWorkers(['fast', 'standard', 'heavy']);
    await runJobs('standard', 'sdxl', 19, 2_000);
    // 19 executions are not enough: the default pool still
    expect((await routed({ service: 'simulation', requirements: { models: ['sdxl'] } })).routing.source).toBe('default');

    now += 5_001;
    await runJobs('standard', 'sdxl', 3, 2_000);
    const fast = await routed({ service: 'simulation', requirements: { models: ['sdxl'] } });
    expect(fast.routing).toEqual({ pool: 'fast', source: 'history', estimate_s: 2, samples: 22, reason: 'routed to fast: p90 of 22 similar jobs = 2 s' });

    // the executions were recorded in the shard they ran in, with what the class is
    const dclass = durationClass('simulation', ['sdxl']);
    expect(await redis.llen(keys.durations('standard', dclass))).toBe(22);
    expect(await redis.lrange(keys.serviceDurations('standard', 'simulation'), 0, 0)).toEqual(['2000']);
    expect(JSON.parse((await redis.hget(keys.durationClasses('standard'), dclass))!)).toEqual({ service: 'simulation', models: ['sdxl'] });

    // slower executions move the class, once the cached estimate (5 s of the broker's clock) runs out
    const slow = await startJobs('fast', 'sdxl', 10);
    now += 60_000;
    expect((await routed({ service: 'simulation', requirements: { models: ['sdxl'] } })).pool).toBe('fast');
    for (const lease of slow) await broker.complete(lease, { ok: true });
    expect((await routed({ service: 'simulation', requirements: { models: ['sdxl'] } })).pool, 'the estimate read 0 s ago').toBe('fast');
    now += 5_001;
    expect((await routed({ service: 'simulation', requirements: { models: ['sdxl'] } })).routing).toEqual({
      pool: 'standard',
      source: 'history',
      estimate_s: 60,
      samples: 32,
      reason: 'routed to standard: p90 of 32 similar jobs = 60 s',
    });
    // the pool report lists the class under the pool its p90 routes it to
    await broker.submit({ service: 'simulation', requirements: { pool: 'heavy' } });
    const report = await broker.poolReport();
    expect(report.min_samples).toBe(20);
    expect(report.pools.map((p) => [p.name, p.min_duration_s, p.max_duration_s, p.default, p.durations.length])).toEqual([
      ['fast', 0, 30, false, 0],
      ['standard', 30, 180, true, 1],
      ['heavy', 180, undefined, false, 0],
    ]);
    expect(report.pools[1]!.durations[0]).toEqual({ dclass, service: 'simulation', models: ['sdxl'], p50_s: 2, p90_s: 60, samples: 32 });
    expect(report.pools[2]).toMatchObject({ depth: 1, oldest_age_ms: 0, workers: { online: 1, idle: 0, busy: 1 }, profile: { min_gpu_memory_gb: 48 } });

    // a class without history of its own goes by its service's
    expect((await routed({ service: 'simulation', requirements: { models: ['flux'] } })).routing).toMatchObject({
      source: 'history',
      samples: 32,
      reason: 'routed to standard: p90 of 32 jobs of its service = 60 s',
    });
  });

  it('keeps the duration class on the requirement class, not on each job, and still reads one a job carries', async () => {
    await registerWorkers(['standard']);
    const dclass = durationClass('simulation', ['sdxl']);
    const { job } = await routed({ service: 'simulation', requirements: { models: ['sdxl'] } });
    const stored = await redis.hgetall(keys.job('standard', job.id));
    expect(stored.dclass, 'not a field of the job hash').toBeUndefined();
    const classKey = `emp:{standard}:class:${stored.class}`;
    expect(await redis.hget(classKey, 'dclass')).toBe(dclass);
    expect(job.routing, 'the job still shows how it was routed').toMatchObject({ pool: 'standard', source: 'default' });

    // a job stored before classes kept it (its own `dclass`, a class without one) records under its own
    await redis.hdel(classKey, 'dclass');
    await redis.hset(keys.job('standard', job.id), 'dclass', dclass);
    const claimed = await broker.claim('standard', 'w-standard');
    expect(claimed.job?.id).toBe(job.id);
    await broker.start(claimed.job!.lease);
    now += 4_000;
    await broker.complete(claimed.job!.lease, null);
    expect(await redis.lrange(keys.durations('standard', dclass), 0, -1)).toEqual(['4000']);

    // the class's next job puts it back on the class, and that job's success is recorded from there
    await runJobs('standard', 'sdxl', 1, 2_000);
    expect(await redis.hget(classKey, 'dclass')).toBe(dclass);
    expect(await redis.lrange(keys.durations('standard', dclass), 0, -1)).toEqual(['2000', '4000']);
  });

  it('keeps the newest 256 executions of a class (trimmed once 32 more have come)', async () => {
    await registerWorkers(['fast', 'standard']);
    const dclass = durationClass('simulation', ['tiny']);
    await runJobs('fast', 'tiny', 288, 1_000);
    expect(await redis.llen(keys.durations('fast', dclass))).toBe(288);
    await runJobs('fast', 'tiny', 1, 3_000);
    expect(await redis.llen(keys.durations('fast', dclass))).toBe(256);
    expect(await redis.lindex(keys.durations('fast', dclass), 0)).toBe('3000');
    expect(await redis.llen(keys.serviceDurations('fast', 'simulation'))).toBe(256);
    now += 5_001;
    expect((await routed({ service: 'simulation', requirements: { models: ['tiny'] } })).routing.samples).toBe(256);
  });

  it('trusts a class after routingMinSamples executions', async () => {
    broker = await Broker.connect({ redis, clock: () => now, config: { routingMinSamples: 3 } });
    await registerWorkers(['fast', 'standard']);
    await runJobs('standard', 'quick', 3, 500);
    expect((await routed({ service: 'simulation', requirements: { models: ['quick'] } })).routing.reason).toBe('routed to fast: p90 of 3 similar jobs = 0.5 s');
    expect((await broker.poolReport()).min_samples).toBe(3);
  });

  it('reads a known class without its service, and its service again should the class have lost its history', async () => {
    broker = await Broker.connect({ redis, clock: () => now, config: { routingMinSamples: 3 } });
    await registerWorkers(['fast', 'standard']);
    await runJobs('standard', 'known', 3, 500);
    await runJobs('standard', 'other', 3, 40_000);
    const lrange = async () => Number(/cmdstat_lrange:calls=(\d+)/.exec(await redis.info('commandstats'))?.[1] ?? 0);
    const before = await lrange();
    expect((await routed({ service: 'simulation', requirements: { models: ['known'] } })).routing.reason).toBe('routed to fast: p90 of 3 similar jobs = 0.5 s');
    expect(await lrange(), 'first read: the class and its service in each of the 3 pools').toBe(before + 6);
    now += 5_001;
    expect((await routed({ service: 'simulation', requirements: { models: ['known'] } })).routing.reason).toBe('routed to fast: p90 of 3 similar jobs = 0.5 s');
    expect(await lrange(), 'a class known to have enough: only its lists').toBe(before + 9);
    // its history gone (the only way a class's lists shrink): the service's decides, as for a class never seen
    await redis.del(keys.durations('standard', durationClass('simulation', ['known'])));
    now += 5_001;
    expect((await routed({ service: 'simulation', requirements: { models: ['known'] } })).routing.reason).toBe('routed to standard: p90 of 6 jobs of its service = 40 s');
    now += 5_001;
    expect((await routed({ service: 'simulation', requirements: { models: ['known'] } })).routing.reason).toBe('routed to standard: p90 of 6 jobs of its service = 40 s');
  });

  it('skips a pool without an online worker for the nearest one with one, and says so', async () => {
    await registerWorkers(['standard']);
    expect((await routed({ service: 'simulation', expected_duration_s: 4 })).routing).toEqual({
      pool: 'standard',
      source: 'hint',
      estimate_s: 4,
      reason: 'routed to standard: expected_duration_s = 4 s; fast has no online worker',
    });
    // the nearest served pool, not the default: heavy's neighbour standard
    expect((await routed({ service: 'simulation', expected_duration_s: 900 })).routing.reason).toBe('routed to standard: expected_duration_s = 900 s; heavy has no online worker');
  });

  it('routes each job of a submitMany and groups them by pool', async () => {
    const results = await broker.submitMany([
      { service: 'simulation', expected_duration_s: 1 },
      { service: 'simulation', expected_duration_s: 100 },
      { service: 'simulation', expected_duration_s: 1_000 },
      { service: 'simulation', requirements: { pool: 'gpu-lab' } },
      { service: 'simulation', expected_duration_s: -1 },
    ]);
    expect(results.slice(0, 4).map((r) => ('pool' in r ? r.pool : r.message))).toEqual(['fast', 'standard', 'heavy', 'gpu-lab']);
    expect((results[4] as Error).message).toBe('invalid job: expected_duration_s: expected_duration_s must be more than 0 seconds');
    const heavy = (await broker.getJob((results[2] as { id: string }).id))!;
    expect(heavy.routing).toMatchObject({ pool: 'heavy', source: 'hint', estimate_s: 1_000 });
  });

  it('routes the jobs of a submitMany as single submits, whether their estimates are read for it or already cached', async () => {
    await registerWorkers(['standard', 'heavy']);
    await runJobs('standard', 'sdxl', 20, 2_000);
    now += 5_001;
    const inputs = (key: string) => [
      { service: 'simulation', requirements: { models: ['sdxl'] } },
      { service: 'simulation', requirements: { models: ['flux'] } },
      { service: 'simulation', requirements: { models: ['sdxl'] }, priority: 5 },
      { service: 'simulation', expected_duration_s: 4 },
      { service: 'simulation', expected_duration_s: 900 },
      { service: 'simulation', requirements: { pool: 'gpu-lab' } },
      { service: 'simulation', idempotency_key: key },
    ];
    const routings = async (results: Awaited<ReturnType<Broker['submitMany']>>) =>
      Promise.all(results.map(async (result) => {
        if (!('id' in result)) throw result;
        return (await broker.getJob(result.id))!.routing;
      }));
    // the first reads the estimates and the online workers (its jobs wait for the reads), the second finds them cached
    const read = await routings(await broker.submitMany(inputs('first')));
    const cached = await routings(await broker.submitMany(inputs('second')));
    const single = [];
    for (const input of inputs('third')) single.push((await routed(input)).routing);
    expect(single.map((routing) => routing.reason)).toEqual([
      'routed to standard: p90 of 20 similar jobs = 2 s; fast has no online worker',
      'routed to standard: p90 of 20 jobs of its service = 2 s; fast has no online worker',
      'routed to standard: p90 of 20 similar jobs = 2 s; fast has no online worker',
      'routed to standard: expected_duration_s = 4 s; fast has no online worker',
      'routed to heavy: expected_duration_s = 900 s',
      'routed to gpu-lab: named in its requirements',
      'routed to standard: p90 of 20 jobs of its service = 2 s; fast has no online worker',
    ]);
    expect(read).toEqual(single);
    expect(cached).toEqual(single);
  });

  it('refuses a worker whose hardware does not meet its configured pool\'s profile', async () => {
    const register = (gpu_memory_gb: number | undefined, pool: string) =>
      broker.registerWorker({ id: 'w-small', pool, capabilities: { services: ['simulation'], hardware: gpu_memory_gb === undefined ? {} : { gpu_memory_gb } } });
    await expect(register(24, 'heavy')).rejects.toThrow(
      new ValidationError('worker registration', [
        { path: 'capabilities.hardware.gpu_memory_gb', message: 'pool heavy needs workers with at least 48 GB of GPU memory; worker w-small has 24 GB' },
      ]),
    );
    await expect(register(undefined, 'heavy')).rejects.toThrow(/worker w-small states no GPU memory/);
    await expect(register(24, 'fast')).resolves.toMatchObject({ profile: expect.any(String) });
    await expect(register(24, 'gpu-lab')).resolves.toMatchObject({ profile: expect.any(String) });
    const gpuOnly = await Broker.connect({ redis, config: { pools: [{ name: 'standard', target_wait_s: 5, profile: { gpu: true } }] } });
    await expect(gpuOnly.registerWorker({ id: 'cpu-1', pool: 'standard', capabilities: { services: ['simulation'] } })).rejects.toThrow(
      /pool standard needs workers with a GPU; worker cpu-1 states no GPU memory/,
    );
  });
});

describe('pool configuration', () => {
  it('defaults to fast, standard and heavy', () => {
    expect(brokerConfig().pools).toEqual([
      { name: 'fast', max_duration_s: 30, target_wait_s: 2, profile: {}, fallback: [{ from: 'standard', after_s: 10, max_expected_s: 60, unknown_expected_s: 60 }] },
      {
        name: 'standard',
        max_duration_s: 180,
        target_wait_s: 10,
        profile: {},
        fallback: [
          { from: 'fast', after_s: 2 },
          { from: 'heavy', after_s: 10, max_expected_s: 600 },
        ],
      },
      { name: 'heavy', target_wait_s: 10, profile: { min_gpu_memory_gb: 48 }, fallback: [{ from: 'standard', after_s: 10 }] },
    ]);
    expect(fallbackRules(brokerConfig(), 'fast')).toEqual([{ pool: 'standard', afterMs: 10_000, maxExpectedS: 60, unknownExpectedS: 60 }]);
    expect(fallbackRules(brokerConfig(), 'elsewhere')).toEqual([]);
  });

  it('refuses a fallback rule on the pool itself or on a pool not configured', () => {
    const pools = (fallback: unknown[]) => () =>
      brokerConfig({ pools: [{ name: 'standard', max_duration_s: 60, target_wait_s: 1, fallback }, { name: 'heavy', target_wait_s: 1 }] } as never);
    expect(pools([{ from: 'standard', after_s: 1 }])).toThrow("pools.0.fallback.0.from: pool 'standard' cannot fall back on itself");
    expect(pools([{ from: 'gpu', after_s: 1 }])).toThrow("pools.0.fallback.0.from: 'gpu' is not a configured pool (standard, heavy)");
    expect(pools([{ from: 'heavy', after_s: -1 }])).toThrow('pools.0.fallback.0.after_s');
  });

  it('names what is wrong with a pool list', () => {
    const pools = (list: unknown[], extra: Record<string, unknown> = {}) => () => brokerConfig({ pools: list, ...extra } as never);
    expect(pools([{ name: 'a', max_duration_s: 60, target_wait_s: 1 }, { name: 'b', max_duration_s: 30, target_wait_s: 1 }, { name: 'standard', target_wait_s: 1 }])).toThrow(
      "invalid broker config: pools.1.max_duration_s: cutoffs must increase: pool 'b' has 30 s after 'a' with 60 s",
    );
    expect(pools([{ name: 'standard', max_duration_s: 30, target_wait_s: 1 }, { name: 'standard', target_wait_s: 1 }])).toThrow(
      "invalid broker config: pools.1.name: pool 'standard' is configured twice",
    );
    expect(pools([{ name: 'standard', target_wait_s: 1 }, { name: 'b', target_wait_s: 1 }])).toThrow(
      "invalid broker config: pools.0.max_duration_s: pool 'standard' needs a cutoff: only the last pool has none",
    );
    expect(pools([{ name: 'standard', max_duration_s: 30, target_wait_s: 1 }])).toThrow(
      "invalid broker config: pools.0.max_duration_s: the last pool ('standard') takes every longer job, so it has no cutoff",
    );
    expect(pools([{ name: 'quick', max_duration_s: 10, target_wait_s: 1 }, { name: 'slow', target_wait_s: 1 }])).toThrow(
      "invalid broker config: defaultPool: 'standard' is not a configured pool (quick, slow): name one of them",
    );
    expect(pools([{ name: 'standard', target_wait_s: 0 }])).toThrow(/pools\.0\.target_wait_s: Too small/);
    expect(pools([{ name: 'standard', target_wait_s: 1, profile: { vram: 3 } }])).toThrow(/pools\.0\.profile: Unrecognized key: "vram"/);
    expect(pools([{ name: 'quick', max_duration_s: 10, target_wait_s: 1 }, { name: 'slow', target_wait_s: 1 }], { defaultPool: 'slow' })).not.toThrow();
  });

  it('reads EMP_POOLS and EMP_DEFAULT_POOL, and names the variable when it is not JSON', () => {
    const config = brokerConfigFromEnv({ EMP_POOLS: '[{"name":"quick","max_duration_s":10,"target_wait_s":1},{"name":"slow","target_wait_s":5}]', EMP_DEFAULT_POOL: 'slow' });
    expect(brokerConfig(config).pools.map((p) => p.name)).toEqual(['quick', 'slow']);
    expect(brokerConfigFromEnv({})).toEqual({});
    expect(() => brokerConfigFromEnv({ EMP_POOLS: '[{' })).toThrow(/^invalid broker config: EMP_POOLS: not JSON/);
    expect(() => brokerConfigFromEnv({ EMP_POOLS: '[{"name":"quick","target_wait_s":1}]' })).toThrow(
      "invalid broker config (EMP_POOLS / EMP_DEFAULT_POOL): defaultPool: 'standard' is not a configured pool (quick): name one of them",
    );
  });
});

describe('durationStats', () => {
  it('takes p50 and p90 by nearest rank, in seconds', () => {
    expect(durationStats([])).toBeNull();
    expect(durationStats([3_000])).toEqual({ p50_s: 3, p90_s: 3, samples: 1 });
    const ten = [10, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((s) => s * 1_000);
    expect(durationStats(ten)).toEqual({ p50_s: 5, p90_s: 9, samples: 10 });
  });
});
