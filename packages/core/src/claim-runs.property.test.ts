import { usePrivateRedis } from '@emp/testkit/private-redis';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { Broker, type ClaimResult, type Lease } from './broker';
import type { WorkerCapabilities } from './capabilities';
import type { JobRequirements } from './requirements';
import { ensureFunctionLibrary } from './library';

// A call that claims several times (emp_claim_many; emp_complete claiming after each of
// its completions) takes the jobs at the head of one class in a run, and changes the
// worker's set of jobs once (deferred.start_run / next_in_run / settle_run and
// deferred.change_set / apply_set, includes/50-claim.lua). Whatever it
// does, it must leave Redis exactly as the same claims and completions made one call each:
// the same jobs to the same workers with the same tokens, the same replies, the same events
// and, key for key, the same stored data. Each random workload runs twice on the same
// server, once with the calls made together and once one by one, and the two are compared.

const POOL = 'standard';
const START = 1_000_000;
const { redis } = usePrivateRedis();
let now = START;

beforeAll(async () => {
  await ensureFunctionLibrary(redis);
});

const WORKERS: Array<{ id: string; capabilities: WorkerCapabilities }> = [
  { id: 'gpu', capabilities: { services: ['simulation'], labels: { gpu: 'a100' } } },
  { id: 'cpu', capabilities: { services: ['simulation'] } },
  { id: 'any', capabilities: { services: ['simulation', 'ollama'], models: { ollama: '*' }, labels: { gpu: 'h100' } } },
  // restricted to one tenant: the shard keeps lanes, and this worker claims from them
  { id: 'lane', capabilities: { services: ['simulation', 'ollama'], tenants: { allowed: ['t1'] } } },
];

const REQUIREMENTS: Array<{ service: string; requirements: JobRequirements }> = [
  { service: 'simulation', requirements: {} },
  { service: 'simulation', requirements: { constraints: { gpu: 'a100' } } },
  { service: 'simulation', requirements: { exclude: { gpu: 'a100' } } },
  { service: 'ollama', requirements: { models: ['llama3'] } },
  { service: 'ollama', requirements: {} },
];
const TENANTS = ['t1', 't2'];
const SERVICES = ['simulation', 'ollama'];

type Op =
  | { op: 'submit'; req: number; priority: number; tenant: number; count: number; deadline: boolean }
  | { op: 'workflow'; tenant: number; priority: number }
  | { op: 'claimMany'; worker: number; n: number }
  | { op: 'complete'; worker: number; k: number; claimNext: boolean }
  | { op: 'fail'; worker: number; k: number; claimNext: boolean }
  | { op: 'pause'; service: number; paused: boolean }
  | { op: 'advance'; ms: number };

const worker = fc.integer({ min: 0, max: WORKERS.length - 1 });
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('submit' as const), req: fc.integer({ min: 0, max: REQUIREMENTS.length - 1 }), priority: fc.integer({ min: 0, max: 2 }), tenant: fc.integer({ min: 0, max: 1 }), count: fc.integer({ min: 1, max: 4 }), deadline: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('workflow' as const), tenant: fc.integer({ min: 0, max: 1 }), priority: fc.integer({ min: 0, max: 2 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('claimMany' as const), worker, n: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('complete' as const), worker, k: fc.integer({ min: 1, max: 8 }), claimNext: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('fail' as const), worker, k: fc.integer({ min: 0, max: 7 }), claimNext: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('pause' as const), service: fc.integer({ min: 0, max: 1 }), paused: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 400 }) }) },
);

/** A claim reply as both runs can compare it (ids are random: compared through the stored data). */
function claimed(reply: ClaimResult | null): unknown {
  if (!reply) return null;
  if (!reply.job) return { none: true, retryAt: reply.retryAt ?? null, state: reply.workerState };
  const { job } = reply;
  return { id: job.id, token: job.lease.token, service: job.service, tenant: job.tenant, priority: job.priority, payload: job.payload };
}

const DAY = 86_400_000;

/** One emp_complete call: the leases' completions, each claiming `workerId`'s next job when `claimNext`. */
async function complete(workerId: string, leases: Lease[], claimNext: boolean): Promise<unknown[][]> {
  const prelude = [String(now), '100000', '1000000', String(DAY), String(7 * DAY), '300'];
  const completions = leases.flatMap((lease) => [lease.jobId, lease.token, JSON.stringify({ by: workerId })]);
  return (await redis.call('FCALL', 'emp_complete', 1, `emp:{${POOL}}:shard`, ...prelude, claimNext ? workerId : '', '0', ...completions)) as unknown[][];
}

/** Runs `ops`, with the calls made together or one by one; returns what each op answered. */
async function run(ops: Op[], together: boolean): Promise<unknown[]> {
  await redis.flushall(); // the function library survives FLUSHALL
  now = START;
  const broker = await Broker.connect({ redis, clock: () => now, skipLibraryLoad: true, config: { leaseMs: 1_000_000, avoidMs: 300 } });
  for (const w of WORKERS) await broker.registerWorker({ id: w.id, pool: POOL, capabilities: w.capabilities });
  const held = new Map<string, Lease[]>(WORKERS.map((w) => [w.id, []]));
  const hold = (workerId: string, reply: ClaimResult | null) => {
    if (reply?.job) held.get(workerId)!.push(reply.job.lease);
  };
  const answers: unknown[] = [];
  let n = 0;
  for (const o of ops) {
    switch (o.op) {
      case 'submit': {
        const r = REQUIREMENTS[o.req]!;
        for (let i = 0; i < o.count; i++) {
          await broker.submit({
            service: r.service, requirements: r.requirements, priority: o.priority, tenant: TENANTS[o.tenant]!, payload: { n: n++ },
            ...(o.deadline ? { deadlines: { start_timeout_ms: 100_000, queue_ttl_ms: 200_000 } } : {}),
          });
        }
        break;
      }
      case 'workflow':
        await broker.submitWorkflow({
          tenant: TENANTS[o.tenant]!, priority: o.priority,
          steps: { first: { service: 'simulation', payload: { n: n++ } }, second: { service: 'simulation', needs: ['first'], payload: { n: n++ } } },
        });
        break;
      case 'claimMany': {
        const workerId = WORKERS[o.worker]!.id;
        let replies: ClaimResult[];
        if (together) {
          replies = await broker.claimMany(POOL, workerId, o.n);
        } else {
          replies = [];
          for (let i = 0; i < o.n; i++) {
            const reply = await broker.claim(POOL, workerId);
            replies.push(reply);
            if (!reply.job) break;
          }
        }
        for (const reply of replies) hold(workerId, reply);
        answers.push(replies.map(claimed));
        break;
      }
      case 'complete': {
        // straight to emp_complete: the broker would send a worker's first completion of a turn alone
        const workerId = WORKERS[o.worker]!.id;
        const leases = held.get(workerId)!.splice(0, o.k);
        let replies: unknown[][];
        if (together) {
          replies = leases.length === 0 ? [] : await complete(workerId, leases, o.claimNext);
        } else {
          replies = [];
          for (const lease of leases) replies.push(...(await complete(workerId, [lease], o.claimNext)));
        }
        for (const reply of replies) {
          if (reply[1] === 'job') held.get(workerId)!.push({ pool: POOL, jobId: String(reply[2]), token: String(reply[3]), workerId });
        }
        answers.push(replies);
        break;
      }
      case 'fail': {
        const workerId = WORKERS[o.worker]!.id;
        const list = held.get(workerId)!;
        if (list.length === 0) break;
        const [lease] = list.splice(o.k % list.length, 1);
        const reply = await broker.fail(lease!, { kind: 'worker_lost', message: 'claim runs test' }, { claimNext: o.claimNext });
        hold(workerId, reply.next ?? null);
        answers.push([reply.outcome, claimed(reply.next ?? null)]);
        break;
      }
      case 'pause':
        await broker.setServicePaused(POOL, SERVICES[o.service]!, o.paused);
        break;
      case 'advance':
        now += o.ms;
        break;
    }
  }
  return normalized(answers, await dump());
}

function pairs(flat: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
}

/** Every key of the shard and what it holds, stream entries without their ids (the server's time). */
async function dump(): Promise<Array<[string, unknown]>> {
  const keys = (await redis.keys('emp:*')).sort();
  const out: Array<[string, unknown]> = [];
  for (const key of keys) {
    const type = await redis.type(key);
    if (type === 'hash') out.push([key, await redis.hgetall(key)]);
    // members as a hash's fields: ids (random) of equal scores come in their own order
    else if (type === 'zset') out.push([key, Object.fromEntries(pairs(await redis.zrange(key, 0, -1, 'WITHSCORES')))]);
    else if (type === 'set') out.push([key, Object.fromEntries((await redis.smembers(key)).map((m) => [m, true]))]);
    else if (type === 'list') out.push([key, await redis.lrange(key, 0, -1)]);
    else if (type === 'string') out.push([key, await redis.get(key)]);
    else if (type === 'stream') out.push([key, (await redis.xrange(key, '-', '+')).map(([, fields]) => fields)]);
  }
  return out;
}

/**
 * The answers and the dump with every job and workflow id replaced by its place in the
 * order ids first appear in the event stream (the same in both runs when they agree),
 * and the dump's entries sorted by their keys so replaced.
 */
function normalized(answers: unknown[], keys: Array<[string, unknown]>): unknown[] {
  const idPattern = /standard\.[0-9a-z]{12,40}/g;
  const events = keys.find(([key]) => key === 'emp:{standard}:events');
  const names = new Map<string, string>();
  for (const id of JSON.stringify(events?.[1] ?? []).match(idPattern) ?? []) {
    if (!names.has(id)) names.set(id, `#${names.size}`);
  }
  const rename = (text: string) => text.replace(idPattern, (id) => names.get(id) ?? 'unnamed');
  const entries = keys.map(([key, value]): [string, unknown] => {
    const renamed = JSON.parse(rename(JSON.stringify(value))) as unknown;
    return [rename(key), renamed];
  });
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return [JSON.parse(rename(JSON.stringify(answers))) as unknown, entries];
}

describe('claims and completions made together', () => {
  it('a run ends where a completion in the same call queues a workflow\'s next step ahead of it', async () => {
    const ops: Op[] = [
      { op: 'submit', req: 0, priority: 0, tenant: 0, count: 5, deadline: false },
      { op: 'claimMany', worker: 1, n: 2 },
      { op: 'workflow', tenant: 0, priority: 2 },
      { op: 'claimMany', worker: 1, n: 1 },
      // the first completion's claim starts a run in the plain jobs' class, the second's
      // completion queues the workflow's next step, of a higher priority, which its claim must take
      { op: 'complete', worker: 1, k: 3, claimNext: true },
    ];
    const apart = await run(ops, false);
    expect(await run(ops, true)).toEqual(apart);
    // each reply: 'succeeded', then the claim's: 'job', id, token, attempt, service, tenant, payload...
    const nexts = (apart[0] as unknown[]).at(-1) as string[][];
    expect(nexts.map((next) => JSON.parse(next[7]!) as unknown)).toEqual([{ n: 2 }, { n: 3 }, { n: 6 }]);
  });

  it('leave Redis, the replies and the events exactly as the same calls made one by one', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 60 }), async (ops) => {
        const apart = await run(ops, false);
        const together = await run(ops, true);
        expect(together).toEqual(apart);
      }),
      {
        numRuns: 150,
        examples: [
          // a completion's claim finds none and waits; a later completion's workflow step wakes the worker for its
          // next step, which the next claim takes: the worker's record must end as after calls made one by one
          [[
            { op: 'workflow', tenant: 0, priority: 0 },
            { op: 'submit', req: 0, priority: 1, tenant: 0, count: 1, deadline: false },
            { op: 'claimMany', worker: 0, n: 2 },
            { op: 'complete', worker: 0, k: 2, claimNext: true },
          ]],
        ],
      },
    );
  });
});
