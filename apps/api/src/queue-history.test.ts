import { QueueHistory } from '@emp/core';
import { call, waitFor } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiServer, buildApiServer } from './server';

const SAMPLE_MS = 200;
let stack: ApiStack;
let other: ApiServer;
let reader: string;

beforeAll(async () => {
  stack = await startApiStack({ worker: { durationMs: 5 }, server: { queueSampleMs: SAMPLE_MS } });
  // a second API instance on the same Redis: both sample, each slot is written once
  other = await buildApiServer({ broker: stack.broker, logger: pino({ level: 'silent' }), rateLimit: false, queueSampleMs: SAMPLE_MS });
  reader = (await stack.server.app.apiKeys.create({ role: 'worker', tenant: 'acme' })).key;
});
afterAll(async () => {
  await other?.close();
  await stack?.stop();
});

const history = async (query = '') => {
  const answer = await call(stack.url, 'GET', `/v1/queues/history${query}`, { key: reader });
  expect(answer.status).toBe(200);
  return QueueHistory.parse(answer.body);
};

describe('queue history', () => {
  it('records the queue report every interval, once per slot across API instances, and answers it per pool', async () => {
    const submitted = Date.now();
    for (let i = 0; i < 3; i++) await stack.broker.submit({ service: 'simulation', requirements: { pool: 'history' } });
    await stack.broker.submit({ service: 'ollama', requirements: { pool: 'other' } });

    const samples = await waitFor('three samples that saw the queued jobs', async () => {
      const { samples } = await history('?pool=history');
      const seen = samples.filter((s) => s.depth === 3);
      return seen.length >= 3 && samples;
    });
    expect(samples.every((s) => s.pool === 'history')).toBe(true);
    const slots = samples.map((s) => Math.floor(s.ts / SAMPLE_MS));
    expect(new Set(slots).size).toBe(slots.length);
    expect(slots).toEqual([...slots].sort((a, b) => a - b));
    const last = samples.at(-1)!;
    expect(last).toMatchObject({ depth: 3, services: [{ service: 'simulation', depth: 3 }], classes: [{ depth: 3 }] });
    expect(last.oldest_age_ms).toBeGreaterThanOrEqual(0);
    expect(last.services[0]!.oldest_age_ms).toBe(last.oldest_age_ms);

    const all = await history();
    expect(all.interval_ms).toBe(SAMPLE_MS);
    expect(new Set(all.samples.map((s) => s.pool))).toEqual(new Set(['history', 'other', 'standard']));
    expect(all.samples.filter((s) => s.pool === 'other').at(-1)).toMatchObject({ depth: 1, services: [{ service: 'ollama', depth: 1 }] });

    const since = last.ts;
    const newer = await history(`?pool=history&since=${since}`);
    expect(newer.samples.length).toBeGreaterThan(0);
    expect(newer.samples.every((s) => s.ts >= since)).toBe(true);
    expect(newer.samples.length).toBeLessThan((await history('?pool=history')).samples.length);
    expect(samples[0]!.ts).toBeGreaterThanOrEqual(submitted - 5_000);
  });

  it('records the jobs that ended and their waits per pool and service, and sums them over the hour and the day', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await stack.broker.submit({ service: 'simulation', payload: { duration_ms: 5 } })).id);
    ids.push((await stack.broker.submit({ service: 'simulation', payload: { duration_ms: 5, fail: 'fatal' } })).id);

    const hour = await waitFor('the history to count the five jobs', async () => {
      const answer = await history('?pool=standard');
      const { finished } = answer.summary!.all;
      return (finished.succeeded ?? 0) >= 4 && (finished.failed ?? 0) >= 1 && answer;
    });
    expect(hour.range).toBe('hour');
    expect(hour.summary!.pools.map((p) => p.pool)).toEqual(['standard']);
    const { all } = hour.summary!;
    expect(all.finished).toEqual({ succeeded: 4, failed: 1 });
    expect(all.covered_ms).toBeGreaterThanOrEqual(SAMPLE_MS);
    expect(all.jobs_per_min).toBeGreaterThan(0);
    expect(all.wait).toMatchObject({ count: 5 });
    const counted = hour.samples.filter((s) => s.finished && Object.keys(s.finished).length > 0);
    expect(counted.flatMap((s) => s.services.filter((e) => e.service === 'simulation' && e.finished)).length).toBeGreaterThan(0);
    // a sample before the sampler watched a whole interval says so: throughput unknown, not zero
    expect(hour.samples.some((s) => s.finished === undefined)).toBe(true);

    const day = await waitFor('a day slot to sum them', async () => {
      const answer = await history('?pool=standard&range=day');
      return (answer.summary!.all.finished.succeeded ?? 0) >= 4 && answer;
    });
    expect(day.range).toBe('day');
    expect(day.interval_ms).toBe(SAMPLE_MS * 10);
    expect(day.samples.every((s) => s.ts % (SAMPLE_MS * 10) === 0)).toBe(true);
    expect(day.summary!.all.finished).toEqual({ succeeded: 4, failed: 1 });
    expect(day.summary!.all.wait?.count).toBe(5);
    expect(await stack.connection.exists(stack.broker.keys.queueHistoryDay('standard'))).toBe(1);
  });

  it('trims samples older than an hour', async () => {
    const key = stack.broker.keys.queueHistory('history');
    expect(key).toBe('emp:{history}:queue-history');
    // a stream takes no id below its newest: write the old entry into a fresh stream the sampler then extends
    await stack.connection.del(key);
    await stack.connection.xadd(key, '1-0', 'sample', '{}');
    await waitFor('the next sample to trim the old entry', async () => (await stack.connection.xrange(key, '-', '1-0')).length === 0);
    expect((await stack.connection.xlen(key))).toBeGreaterThan(0);
  });

  it('needs a fleet key and names a bad parameter', async () => {
    const client = (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' })).key;
    expect((await call(stack.url, 'GET', '/v1/queues/history', { key: client })).status).toBe(403);
    const bad = await call(stack.url, 'GET', '/v1/queues/history?since=yesterday', { key: reader });
    expect(bad.status).toBe(400);
    expect(bad.body.error.issues).toEqual([{ path: 'query.since', message: 'expected ms since the epoch or an ISO 8601 time' }]);
    const range = await call(stack.url, 'GET', '/v1/queues/history?range=week', { key: reader });
    expect(range.status).toBe(400);
    expect(range.body.error.issues[0].path).toBe('query.range');
  });
});
