import { Redis } from 'ioredis';
import { Broker } from '@emp/core';

/**
 * The longest single call of each Redis function that walks requirement
 * classes (queue stats, job counts, registering a new capability profile,
 * resuming a service, the tick with its sweeps, a narrow claim), with `classes`
 * classes queued, none of which the registering workers can run: every
 * function walks them a bounded page per call, so the longest call must not
 * grow with the number of classes. Measured with SLOWLOG (every call logged).
 */
export async function measureFunctionCosts(redisUrl: string, classes: number, rounds: number): Promise<Map<string, number>> {
  const redis = new Redis(redisUrl);
  try {
    const broker = await Broker.connect({ redis, config: { eventsMaxLen: 10_000, maxQueuedClasses: Math.max(classes, 10_000) } });
    for (let start = 0; start < classes; start += 2_000) {
      await broker.submitMany(
        Array.from({ length: Math.min(2_000, classes - start) }, (_, k) => ({
          service: 'simulation',
          requirements: { constraints: { gpu: 'tpu', tier: start + k } },
        })),
      );
    }
    await redis.config('SET', 'slowlog-log-slower-than', '0');
    await redis.config('SET', 'slowlog-max-len', '1000000');
    await redis.slowlog('RESET');
    for (let i = 0; i < rounds; i++) {
      await broker.queueStats('standard');
      await broker.jobCounts('standard');
      await broker.registerWorker({ id: `w${i}`, pool: 'standard', capabilities: { services: ['simulation'], labels: { round: i } } });
      await broker.claim('standard', `w${i}`);
      await broker.setServicePaused('standard', 'simulation', true, { by: 'bench' });
      await broker.setServicePaused('standard', 'simulation', false, { by: 'bench' });
      await broker.tick('standard');
    }
    const entries = (await redis.slowlog('GET', -1)) as Array<[number, number, number, string[]]>;
    const longest = new Map<string, number>();
    for (const [, , micros, args] of entries) {
      if (!args[0]?.toUpperCase().startsWith('FCALL')) continue;
      longest.set(args[1]!, Math.max(longest.get(args[1]!) ?? 0, micros / 1_000));
    }
    await redis.config('SET', 'slowlog-log-slower-than', '10000');
    await redis.config('SET', 'slowlog-max-len', '128');
    return longest;
  } finally {
    redis.disconnect();
  }
}
