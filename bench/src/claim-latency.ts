import { Redis } from 'ioredis';
import { Broker, type ClaimedJob, type SubmitJobInput } from '@emp/core';

export interface ClaimLatencyResult {
  queued: number;
  classes: number;
  /** claim round trips (ms, sorted) of a worker that can run only the class served last */
  narrow: number[];
  /** claim round trips (ms, sorted) of a worker that can run every class */
  broad: number[];
}

const CLASSES = 50;

/** `samples` claim round trips of `worker` (ms, sorted); each claimed job is replaced, untimed, by `putBack`'s. */
async function timeClaims(broker: Broker, worker: string, samples: number, putBack: (job: ClaimedJob) => SubmitJobInput): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < samples; i++) {
    const t0 = performance.now();
    const claim = await broker.claim('standard', worker);
    out.push(performance.now() - t0);
    if (!claim.job) throw new Error(`claim latency: worker ${worker} found no job at sample ${i}`);
    await broker.submit(putBack(claim.job));
  }
  return out.sort((a, b) => a - b);
}

function jobOfLane(lane: number, priority = 0): SubmitJobInput {
  return { service: 'simulation', payload: { lane }, priority, requirements: { constraints: { lane: `lane-${lane}` } } };
}

/**
 * Claim latency against `queued` jobs spread over 50 requirement classes. The
 * narrow worker matches only the class whose head is served last, so each of
 * its claims walks all 50 class heads: the worst case of the class index.
 */
export async function measureClaimLatency(redisUrl: string, queued: number, samples: number): Promise<ClaimLatencyResult> {
  const redis = new Redis(redisUrl);
  try {
    const broker = await Broker.connect({ redis, config: { eventsMaxLen: 10_000 } });
    const chunk = 5_000;
    const inFlight: Array<Promise<unknown>> = [];
    for (let start = 0; start < queued; start += chunk) {
      const size = Math.min(chunk, queued - start);
      inFlight.push(broker.submitMany(Array.from({ length: size }, (_, k) => jobOfLane((start + k) % CLASSES))));
      if (inFlight.length >= 4) await inFlight.shift();
    }
    await Promise.all(inFlight);
    // the narrow worker's jobs get the lowest priority, so their class head is the last one reached
    const last = CLASSES;
    await broker.submit(jobOfLane(last, -1));
    await broker.registerWorker({
      id: 'narrow',
      pool: 'standard',
      capabilities: { services: ['simulation'], labels: { lane: `lane-${last}` } },
    });
    await broker.registerWorker({
      id: 'broad',
      pool: 'standard',
      capabilities: { services: ['simulation'], labels: { lane: Array.from({ length: CLASSES + 1 }, (_, i) => `lane-${i}`) } },
    });
    // each claimed job is put back (untimed) with the same requirements, so the depth stays constant
    const putBack = (job: ClaimedJob) => jobOfLane((job.payload as { lane: number }).lane, job.priority);
    const narrow = await timeClaims(broker, 'narrow', samples, putBack);
    const broad = await timeClaims(broker, 'broad', samples, putBack);
    return { queued, classes: CLASSES + 1, narrow, broad };
  } finally {
    redis.disconnect();
  }
}

export interface ManyClassesResult {
  distinct: number;
  /** what is distinct: workflow ids (one class since 2026-12-06), or requirement classes proper */
  kind: 'workflows' | 'classes';
  narrow: number[];
  broad: number[];
  /** the longest single emp_claim function call Redis ran while the samples were taken (ms, SLOWLOG) */
  longestCallMs: number;
}

/**
 * Claim latency with `distinct` workflow ids (each a requirement class of its
 * own before classes stopped naming them) or `distinct` real requirement
 * classes, none of which the narrow worker can run: its one job is the last
 * class head. A claim call looks at a bounded number of class heads, so the
 * longest call stays short however many there are.
 */
export async function measureManyClassClaims(
  redisUrl: string,
  distinct: number,
  kind: ManyClassesResult['kind'],
  samples: number,
): Promise<ManyClassesResult> {
  const redis = new Redis(redisUrl);
  try {
    // room for every blocker class and the needle's under the limit of queued classes
    const broker = await Broker.connect({ redis, config: { eventsMaxLen: 10_000, maxQueuedClasses: Math.max(distinct + 1, 10_000) } });
    let serial = 0;
    const blocker = (): SubmitJobInput => {
      const i = serial++;
      return kind === 'workflows'
        ? { service: 'simulation', workflow_id: `wf-${i}`, tenant: `t-${i % 10_000}`, requirements: { constraints: { gpu: 'a100' } } }
        : { service: 'simulation', requirements: { constraints: { gpu: 'a100', tier: i % distinct } } };
    };
    const needle: SubmitJobInput = { service: 'simulation', priority: -1, requirements: { constraints: { gpu: 'l4' } } };
    for (let start = 0; start < distinct; start += 5_000) {
      await broker.submitMany(Array.from({ length: Math.min(5_000, distinct - start) }, blocker));
    }
    await broker.submit(needle);
    await broker.registerWorker({ id: 'narrow', pool: 'standard', capabilities: { services: ['simulation'], labels: { gpu: 'l4' } } });
    await broker.registerWorker({ id: 'broad', pool: 'standard', capabilities: { services: ['simulation'], labels: { gpu: ['a100', 'l4'], tier: distinct } } });
    await redis.config('SET', 'slowlog-log-slower-than', '0');
    await redis.config('SET', 'slowlog-max-len', String(64 * samples));
    await redis.slowlog('RESET');
    // put back a job of the same kind, so the queue stays as it was
    const narrow = await timeClaims(broker, 'narrow', samples, () => needle);
    const broad = await timeClaims(broker, 'broad', samples, blocker);
    const entries = (await redis.slowlog('GET', -1)) as Array<[number, number, number, string[]]>;
    const claimCalls = entries.filter(([, , , args]) => args[0]?.toUpperCase() === 'FCALL' && args[1] === 'emp_claim');
    const longestCallMs = Math.max(0, ...claimCalls.map(([, , micros]) => micros)) / 1_000;
    await redis.config('SET', 'slowlog-log-slower-than', '10000');
    await redis.config('SET', 'slowlog-max-len', '128');
    return { distinct, kind, narrow, broad, longestCallMs };
  } finally {
    redis.disconnect();
  }
}
