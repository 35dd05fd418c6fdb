import { usePrivateRedis } from '@emp/testkit/private-redis';
import { describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { DEMAND_BUCKET_MS, DEMAND_RETENTION_MS } from './broker/demand';
import { ValidationError } from './errors';

const { redis } = usePrivateRedis();

/** A whole day, so that every bucket below starts at a multiple of DEMAND_BUCKET_MS. */
const DAY0 = 1_800_000_000_000 - (1_800_000_000_000 % DEMAND_BUCKET_MS);

describe('per-model demand counters', () => {
  it('count every submitted job per model, per service without models, and in all, per 5-minute bucket of the function clock', async () => {
    let now = DAY0 + 1_000;
    const b = await Broker.connect({ redis, clock: () => now });
    await b.submit({ service: 'comfyui', requirements: { models: ['sdxl'] } });
    await b.submit({ service: 'comfyui', requirements: { models: ['sdxl', 'flux'] } });
    await b.submit({ service: 'ollama' });
    // the same model twice in one class is one job's demand for it
    await b.submit({ service: 'comfyui', requirements: { models: ['flux', 'flux'] } });
    now = DAY0 + DEMAND_BUCKET_MS - 1; // the last ms of the first bucket
    await b.submit({ service: 'comfyui', requirements: { models: ['flux'] }, delay_ms: 60_000 });
    now = DAY0 + 2 * DEMAND_BUCKET_MS + 5; // the third bucket; the second has nothing
    const many = await b.submitMany([
      { service: 'comfyui', requirements: { models: ['sdxl'] } },
      { service: 'ollama' },
      { service: 'ollama', requirements: { models: [] } },
    ]);
    expect(many.every((r) => 'id' in r)).toBe(true);

    expect(await b.modelDemand('standard', { from: DAY0, to: DAY0 + 3 * DEMAND_BUCKET_MS })).toEqual([
      { start: DAY0, counts: { '*': 5, sdxl: 2, flux: 3, 'service:ollama': 1 } },
      { start: DAY0 + 2 * DEMAND_BUCKET_MS, counts: { '*': 3, sdxl: 1, 'service:ollama': 2 } },
    ]);
    // [from, to): a bucket that starts before `from` or at `to` is out
    expect(await b.modelDemand('standard', { from: DAY0 + 1, to: DAY0 + 3 * DEMAND_BUCKET_MS })).toEqual([
      { start: DAY0 + 2 * DEMAND_BUCKET_MS, counts: { '*': 3, sdxl: 1, 'service:ollama': 2 } },
    ]);
    expect(await b.modelDemand('standard', { from: DAY0, to: DAY0 + 2 * DEMAND_BUCKET_MS })).toHaveLength(1);
    expect(await b.modelDemand('standard', { from: DAY0, to: DAY0 })).toEqual([]);
    // other pools have their own
    expect(await b.modelDemand('fast', { from: DAY0, to: DAY0 + 3 * DEMAND_BUCKET_MS })).toEqual([]);
  });

  it('set the 8-day expiry on the first write of a bucket only', async () => {
    const now = DAY0 + 10;
    const b = await Broker.connect({ redis, clock: () => now });
    await b.submit({ service: 'comfyui', requirements: { models: ['sdxl'] } });
    const key = b.keys.demand('standard', DAY0 / DEMAND_BUCKET_MS);
    expect(await redis.pttl(key)).toBeGreaterThan(DEMAND_RETENTION_MS - 60_000);
    expect(await redis.pttl(key)).toBeLessThanOrEqual(DEMAND_RETENTION_MS);
    // a later submit into the same bucket leaves the expiry as it is
    await redis.pexpire(key, 123_456_789);
    await b.submit({ service: 'comfyui', requirements: { models: ['sdxl'] } });
    const ttl = await redis.pttl(key);
    expect(ttl).toBeLessThanOrEqual(123_456_789);
    expect(ttl).toBeGreaterThan(123_456_789 - 60_000);
    // nor does the first job of another class in it
    await b.submit({ service: 'comfyui', requirements: { models: ['flux'] } });
    expect(await redis.pttl(key)).toBeLessThanOrEqual(123_456_789);
    expect(await b.modelDemand('standard', { from: DAY0, to: DAY0 + 1 })).toEqual([{ start: DAY0, counts: { '*': 3, sdxl: 2, flux: 1 } }]);
  });

  it('count each job once per class (in one field however many models it names), and read buckets an older library wrote', async () => {
    const b = await Broker.connect({ redis, clock: () => DAY0 });
    await b.submitMany([
      { service: 'comfyui', requirements: { models: ['sdxl', 'flux', 'lora-a'] } },
      { service: 'comfyui', requirements: { models: ['flux', 'sdxl', 'lora-a'] } },
    ]);
    const key = b.keys.demand('standard', DAY0 / DEMAND_BUCKET_MS);
    expect(await redis.hlen(key)).toBe(2); // the class's count and what it stands for
    // counts as the library before 2026-12-07 wrote them (per model, per service, `*`) add up with the class counts
    await redis.hset(key, '*', '4', 'sdxl', '3', 'service:ollama', '1');
    expect(await b.modelDemand('standard', { from: DAY0, to: DAY0 + 1 })).toEqual([
      { start: DAY0, counts: { '*': 6, sdxl: 5, flux: 2, 'lora-a': 2, 'service:ollama': 1 } },
    ]);
    // a class count whose definition is unreadable still counts in all, and says so
    const [field] = (await redis.hkeys(key)).filter((f) => f.startsWith('d:'));
    await redis.hset(key, field!, 'not json');
    expect(await b.modelDemand('standard', { from: DAY0, to: DAY0 + 1 })).toEqual([
      { start: DAY0, counts: { '*': 6, sdxl: 3, 'service:ollama': 1 }, unreadable: [{ field, value: 'not json' }] },
    ]);
  });

  it('do not count a retry, nor a resubmit with the same idempotency key', async () => {
    let now = DAY0 + 10;
    const b = await Broker.connect({ redis, clock: () => now });
    await b.registerWorker({ id: 'w', pool: 'standard', capabilities: { services: ['comfyui'], models: { comfyui: ['sdxl'] } } });
    const first = await b.submit({ service: 'comfyui', requirements: { models: ['sdxl'] }, idempotency_key: 'k1' });
    const again = await b.submit({ service: 'comfyui', requirements: { models: ['sdxl'] }, idempotency_key: 'k1' });
    expect(again.id).toBe(first.id);
    const claimed = await b.claim('standard', 'w');
    expect((await b.fail(claimed.job!.lease, { kind: 'retryable', message: 'flaky' })).outcome).toBe('retrying');
    now += 10 * 60_000; // past the backoff: the retry is due, in a later bucket
    await b.tick('standard');
    expect((await b.getJob(first.id))?.state).toBe('queued');
    expect(await b.modelDemand('standard', { from: DAY0, to: now + DEMAND_BUCKET_MS })).toEqual([{ start: DAY0, counts: { '*': 1, sdxl: 1 } }]);
  });

  it('report a count that is not one instead of failing the read, and refuse a bad range', async () => {
    const b = await Broker.connect({ redis, clock: () => DAY0 });
    await b.submit({ service: 'comfyui', requirements: { models: ['sdxl'] } });
    await redis.hset(b.keys.demand('standard', DAY0 / DEMAND_BUCKET_MS), 'flux', 'lots', '__proto__', '4');
    expect(await b.modelDemand('standard', { from: DAY0, to: DAY0 + 1 })).toEqual([
      { start: DAY0, counts: { '*': 1, sdxl: 1, ['__proto__']: 4 }, unreadable: [{ field: 'flux', value: 'lots' }] },
    ]);
    await expect(b.modelDemand('standard', { from: DAY0 + 1, to: DAY0 })).rejects.toThrow(ValidationError);
    await expect(b.modelDemand('standard', { from: -1, to: DAY0 })).rejects.toThrow(ValidationError);
    await expect(b.modelDemand('standard', { from: DAY0 - 30 * 86_400_000, to: DAY0 })).rejects.toThrow(/at most \d+/);
  });
});
