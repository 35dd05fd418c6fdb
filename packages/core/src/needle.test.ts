import { usePrivateRedis } from '@emp/testkit/private-redis';
import { beforeEach, describe, expect, it } from 'vitest';
import type { SubmitResult } from './api-protocol';
import { Broker } from './broker';
import type { WorkerCapabilities } from './capabilities';
import { isJobEvent } from './events';
import type { SubmitJobInput } from './job';

// Invariants 3 and 4 of the design: a job at the back of a 100k-deep queue that
// only this worker can run is found, and finding it does not walk the 100k.

const DEPTH = 100_000;
const CHUNK = 5_000;
const POOL = 'standard';

const { redis } = usePrivateRedis();
let broker: Broker;

beforeEach(async () => {
  broker = await Broker.connect({ redis, config: { avoidMs: 0 } });
});

/** Worker A: only service 'simulation' on an A100. */
const WORKER_A: WorkerCapabilities = { services: ['simulation'], labels: { gpu: 'a100' }, hardware: { gpu_memory_gb: 80 } };
/** Worker B: simulation on an L4 (24 GB), serving one model. */
const WORKER_B: WorkerCapabilities = {
  services: ['simulation'],
  labels: { gpu: 'l4' },
  hardware: { gpu_memory_gb: 24 },
  models: { simulation: ['sd15'] },
};
/** The one job B can run: it asks for an L4, at the lowest priority, submitted last. */
const NEEDLE: SubmitJobInput = {
  service: 'simulation',
  priority: -1000,
  requirements: { constraints: { gpu: 'l4' }, models: ['sd15'] },
  payload: { needle: true },
};

async function submitInChunks(count: number, make: (i: number) => SubmitJobInput): Promise<string[]> {
  const ids: string[] = [];
  for (let start = 0; start < count; start += CHUNK) {
    const batch = Array.from({ length: Math.min(CHUNK, count - start) }, (_, k) => make(start + k));
    const results = await broker.submitMany(batch);
    for (const result of results) {
      if (result instanceof Error) throw result;
      ids.push((result as SubmitResult).id);
    }
  }
  return ids;
}

/** Redis commands run (inside functions too) by `action`, from INFO commandstats. */
async function commandsRunBy<T>(action: () => Promise<T>): Promise<{ result: T; commands: number; perCommand: Record<string, number> }> {
  await redis.config('RESETSTAT');
  const result = await action();
  const info = await redis.info('commandstats');
  const perCommand: Record<string, number> = {};
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    const name = match[1]!;
    if (name === 'config' || name === 'info' || name === 'fcall' || name === 'fcall_ro') continue;
    perCommand[name] = Number(match[2]);
  }
  return { result, commands: Object.values(perCommand).reduce((a, b) => a + b, 0), perCommand };
}

async function queuedDepth(): Promise<number> {
  const stats = await broker.queueStats(POOL);
  return stats.classes.reduce((sum, c) => sum + c.depth, 0);
}

async function lastEventId(): Promise<string> {
  const last = (await redis.xrevrange(broker.keys.events(POOL), '+', '-', 'COUNT', 1))[0];
  return last?.[0] ?? '0';
}

/** B claims; the claim must return exactly the needle, touch none of the blockers, and cost O(classes). */
async function expectNeedleFound(needleId: string, blockerIds: string[], maxCommands: number) {
  const before = await lastEventId();
  const started = performance.now();
  const { result: claim, commands, perCommand } = await commandsRunBy(() => broker.claim(POOL, 'b'));
  const elapsedMs = performance.now() - started;

  expect(claim.job?.id).toBe(needleId);
  expect(claim.job?.payload).toEqual({ needle: true });
  expect(claim.job?.requirements.constraints).toEqual({ gpu: 'l4' });
  // the claim looked at class heads, never at the jobs behind them
  expect(commands, `commands run by the claim: ${JSON.stringify(perCommand)}`).toBeLessThanOrEqual(maxCommands);
  expect(elapsedMs).toBeLessThan(1_000);

  // every blocker is still queued, in place
  expect(await queuedDepth()).toBe(blockerIds.length);
  const first = await broker.getJob(blockerIds[0]!);
  const last = await broker.getJob(blockerIds[blockerIds.length - 1]!);
  expect(first?.state).toBe('queued');
  expect(last?.state).toBe('queued');
  expect(first?.attempts).toBe(0);

  // the claim announced exactly one transition: the needle starting on B
  const events = await broker.readEvents(POOL, before, { count: 1_000 });
  const jobEvents = events.filter(isJobEvent);
  expect(jobEvents.map((e) => [e.type, e.job, 'worker' in e && e.worker])).toEqual([['job.starting', needleId, 'b']]);

  // and B has nothing more to run
  expect((await broker.claim(POOL, 'b')).job).toBeNull();
  expect(await queuedDepth()).toBe(blockerIds.length);
  return { commands, elapsedMs };
}

describe('the needle', () => {
  it('finds the one job B can run behind 100,000 higher-priority, earlier jobs of one class it cannot run', async () => {
    await broker.registerWorker({ id: 'a', pool: POOL, capabilities: WORKER_A });
    await broker.registerWorker({ id: 'b', pool: POOL, capabilities: WORKER_B });
    const blockers = await submitInChunks(DEPTH, (i) => ({
      service: 'simulation',
      priority: 1000,
      requirements: { constraints: { gpu: 'a100' } },
      payload: { i },
    }));
    const needle = await broker.submit(NEEDLE);
    expect(needle.routable).toBe(true);

    const stats = await broker.queueStats(POOL);
    expect(stats.classes.map((c) => c.depth).sort((x, y) => x - y)).toEqual([1, DEPTH]);
    expect((await broker.getJob(needle.id))?.position).toBe(0);
    expect((await broker.getJob(blockers[DEPTH - 1]!))?.position).toBe(DEPTH - 1);

    await expectNeedleFound(needle.id, blockers, 60);

    // the blockers are real work: A takes them in order
    const forA = await broker.claim(POOL, 'a');
    expect(forA.job?.id).toBe(blockers[0]);
  });

  it('finds it behind 100,000 jobs spread over 50 requirement classes B cannot run, for 50 different reasons', async () => {
    await broker.registerWorker({ id: 'a', pool: POOL, capabilities: WORKER_A });
    await broker.registerWorker({ id: 'b', pool: POOL, capabilities: WORKER_B });
    // 5 reasons B cannot run a job x 10 variants = 50 classes
    const blockerClass = (c: number): SubmitJobInput => {
      const variant = Math.floor(c / 5);
      switch (c % 5) {
        case 0: // wrong GPU (A's), each variant in another rack
          return { service: 'simulation', requirements: { constraints: { gpu: 'a100', rack: `rack-${variant}` } } };
        case 1: // more GPU memory than B has
          return { service: 'simulation', requirements: { hardware: { gpu_memory_gb: 40 + variant } } };
        case 2: // a model B does not serve
          return { service: 'simulation', requirements: { models: [`model-${variant}`] } };
        case 3: // B's GPU is excluded
          return { service: 'simulation', requirements: { exclude: { gpu: 'l4' }, constraints: { region: `r${variant}` } } };
        default: // a service B does not offer
          return { service: 'comfyui', requirements: { custom_nodes: [`node-${variant}`] } };
      }
    };
    // earlier and higher priority: priorities 1..50 across classes, all above the needle's
    const blockers = await submitInChunks(DEPTH, (i) => {
      const c = i % 50;
      return { ...blockerClass(c), priority: 1 + c, payload: { i } };
    });
    const needle = await broker.submit(NEEDLE);

    const stats = await broker.queueStats(POOL);
    expect(stats.classes).toHaveLength(51);
    expect(stats.classes.filter((c) => c.depth === DEPTH / 50)).toHaveLength(50);

    await expectNeedleFound(needle.id, blockers, 400);
  });

  it('pages through more class heads than one page (300 classes) to find it', async () => {
    await broker.registerWorker({ id: 'b', pool: POOL, capabilities: WORKER_B });
    const classes = 300;
    const blockers = await submitInChunks(30_000, (i) => ({
      service: 'simulation',
      priority: 500,
      requirements: { constraints: { gpu: 'a100', rack: `rack-${i % classes}` } },
    }));
    const needle = await broker.submit(NEEDLE);
    expect((await broker.queueStats(POOL)).classes).toHaveLength(classes + 1);
    await expectNeedleFound(needle.id, blockers, 2_000);
  });

  it('claim cost does not grow with the depth behind the class heads', async () => {
    await broker.registerWorker({ id: 'b', pool: POOL, capabilities: WORKER_B });
    const cost = async (depth: number) => {
      await submitInChunks(depth, () => ({ service: 'simulation', priority: 10, requirements: { constraints: { gpu: 'a100' } } }));
      await broker.submit(NEEDLE);
      const { result, commands } = await commandsRunBy(() => broker.claim(POOL, 'b'));
      expect(result.job).not.toBeNull();
      await redis.flushall();
      await broker.registerWorker({ id: 'b', pool: POOL, capabilities: WORKER_B });
      return commands;
    };
    await cost(10); // warms the function library's verdict cache for these classes
    const shallow = await cost(10);
    const deep = await cost(DEPTH);
    expect(shallow).toBeGreaterThan(5); // script commands are counted
    expect(deep).toBe(shallow);
  });
});
