import { Broker } from '@emp/core';
import { type RedisProcess, startRedis } from '@emp/testkit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FleetActivity, HOUR_MS, MINUTE_MS } from './fleet-activity';

let redis: RedisProcess;
let connection: Redis;
let broker: Broker;

beforeAll(async () => {
  redis = await startRedis();
  connection = new Redis(redis.url);
  broker = await Broker.connect({ redis: connection });
});
afterAll(async () => {
  connection?.disconnect();
  await redis?.stop();
});

/** Appends job events as the Lua library writes them (job_event), at the given times: the stream id is the time. */
async function appendJobEvents(pool: string, events: Array<{ at: number; type: string; service?: string; fields?: Record<string, string> }>): Promise<void> {
  const pipeline = connection.pipeline();
  events.forEach(({ at, type, service = 'simulation', fields = {} }, n) => {
    const flat = Object.entries({ type, job: `${pool}.job${n}`, state: type.slice(4), tenant: 'default', service, ts: String(at), ...fields }).flat();
    pipeline.xadd(broker.keys.events(pool), `${at}-${n}`, ...flat);
  });
  await pipeline.exec();
}

describe('FleetActivity', () => {
  it('counts the jobs finished in the last minute and hour of a busy pool, reading its stream a page at a time and then only what is new', async () => {
    const now = await broker.serverTime();
    const events = [
      // older than an hour: not counted
      ...Array.from({ length: 3 }, () => ({ at: now - HOUR_MS - 5 * MINUTE_MS, type: 'job.succeeded' })),
      // 2,400 in the hour, 40 of them failed, more than a page of the stream
      ...Array.from({ length: 2_400 }, (_, n) => ({ at: now - 50 * MINUTE_MS + n * 1_000, type: n % 60 === 0 ? 'job.failed' : 'job.succeeded' })),
      // the last minute: 7 finished, and starts that waited 100 and 300 ms (a retry's start does not count as a wait)
      ...Array.from({ length: 7 }, (_, n) => ({ at: now - 30_000 + n, type: n === 0 ? 'job.canceled' : 'job.succeeded' })),
      { at: now - 20_000, type: 'job.starting', fields: { worker: 'w1', attempt: '1', submitted_at: String(now - 20_100) } },
      { at: now - 19_000, type: 'job.starting', fields: { worker: 'w1', attempt: '1', submitted_at: String(now - 19_300) } },
      { at: now - 18_000, type: 'job.starting', fields: { worker: 'w1', attempt: '2', submitted_at: String(now - 900_000) } },
    ];
    await appendJobEvents('busy', events);
    const activity = new FleetActivity(broker);
    await activity.update(['busy'], now);
    expect(activity.complete(['busy'])).toBe(true);
    expect(activity.activity('busy', now)).toMatchObject({ finishedLastMinute: 7, finishedLastHour: 2_407, failedLastHour: 40, complete: true, countedSince: now - HOUR_MS });
    expect(activity.activity('busy', now).medianWaitMs).toEqual(new Map([['simulation', 200]]));

    await appendJobEvents('busy', [{ at: now + 1_000, type: 'job.failed', service: 'comfyui' }]);
    await activity.update(['busy'], now + 2_000);
    expect(activity.activity('busy', now + 2_000)).toMatchObject({ finishedLastMinute: 8, failedLastHour: 41 });
    expect(activity.recentFailures()[0]).toMatchObject({ pool: 'busy', service: 'comfyui', ts: now + 1_000 });
    expect(activity.recentFailures()).toHaveLength(5);
    // an hour on, only the newest is within the hour
    await activity.update(['busy'], now + HOUR_MS + 500);
    expect(activity.activity('busy', now + HOUR_MS + 500)).toMatchObject({ finishedLastMinute: 0, finishedLastHour: 1 });
  });

  it('says from when it counts when the stream was trimmed within the hour', async () => {
    const now = await broker.serverTime();
    await appendJobEvents('trimmed', Array.from({ length: 10 }, (_, n) => ({ at: now - 40 * MINUTE_MS + n * MINUTE_MS, type: 'job.succeeded' })));
    await connection.xtrim(broker.keys.events('trimmed'), 'MAXLEN', 4);
    const activity = new FleetActivity(broker);
    await activity.update(['trimmed'], now);
    expect(activity.activity('trimmed', now)).toMatchObject({ finishedLastHour: 4, countedSince: now - 34 * MINUTE_MS });
  });
});
