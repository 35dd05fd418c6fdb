import { Redis } from 'ioredis';
import { Broker, type SubmitJobInput } from '@emp/core';

export interface ClaimLatencyResult {
  queued: number;
  classes: number;
  /** claim round trips (ms, sorted) of a worker that can run only the class served last */
  narrow: number[];
  /** claim round trips (ms, sorted) of a worker that can run every class */
  broad: number[];
}

const CLASSES = 50;

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
    const time = async (worker: string): Promise<number[]> => {
      const out: number[] = [];
      for (let i = 0; i < samples; i++) {
        const t0 = performance.now();
        const claim = await broker.claim('standard', worker);
        out.push(performance.now() - t0);
        if (!claim.job) throw new Error(`claim latency: worker ${worker} found no job at sample ${i}`);
        const lane = (claim.job.payload as { lane: number }).lane;
        await broker.submit(jobOfLane(lane, claim.job.priority));
      }
      return out.sort((a, b) => a - b);
    };
    const narrow = await time('narrow');
    const broad = await time('broad');
    return { queued, classes: CLASSES + 1, narrow, broad };
  } finally {
    redis.disconnect();
  }
}
