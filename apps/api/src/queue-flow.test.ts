import { type QueueSample, type StreamEvent, mergeWaitDigests, parseStreamEntry } from '@emp/core';
import { describe, expect, it } from 'vitest';
import { FlowCounter, coarseSample, flowSummary, withFlow } from './queue-flow';

const SLOT = 1_000;
let seq = 0;
const event = (pool: string, type: string, ts: number, fields: Record<string, string> = {}): StreamEvent =>
  parseStreamEntry(pool, `${ts}-${seq++}`, { type, ts: String(ts), job: `j${seq}`, state: type.slice(4), tenant: 't', service: 'sim', ...fields });
const starting = (pool: string, ts: number, waitMs: number, service = 'sim') =>
  event(pool, 'job.starting', ts, { worker: 'w', attempt: '1', submitted_at: String(ts - waitMs), service });

/** A counter that has taken its first two (partial) slots, so that the next take is complete. */
function watching(from = 10_000): FlowCounter {
  const counter = new FlowCounter(SLOT);
  expect(counter.take(from)).toBeUndefined();
  expect(counter.take(from + SLOT)).toBeUndefined();
  return counter;
}

describe('counting what went through the queues per slot', () => {
  it('knows nothing of the slots it did not watch whole: the two first takes after start', () => {
    const counter = new FlowCounter(SLOT);
    counter.note(event('p', 'job.succeeded', 10_500));
    expect(counter.take(11_000)).toBeUndefined();
    counter.note(event('p', 'job.succeeded', 11_500));
    expect(counter.take(12_000)).toBeUndefined();
    counter.note(event('p', 'job.succeeded', 12_500));
    expect(counter.take(13_000)?.get('p')?.finished).toEqual({ succeeded: 1 });
  });

  it('counts ended jobs per terminal state and waits per pool and service, for the slots before the one taken', () => {
    const counter = watching();
    counter.note(event('p', 'job.succeeded', 11_100));
    counter.note(event('p', 'job.succeeded', 11_200, { service: 'comfy' }));
    counter.note(event('p', 'job.failed', 11_300, { reason: 'fatal' }));
    counter.note(event('q', 'job.canceled', 11_400));
    counter.note(event('p', 'job.progress', 11_400, { progress: '{"percent":5}' }));
    for (const wait of [100, 200, 300, 400, 10_000]) counter.note(starting('p', 11_500, wait));
    counter.note(event('p', 'job.succeeded', 12_100)); // the next slot's
    const flows = counter.take(12_000)!;
    const p = flows.get('p')!;
    expect(p.finished).toEqual({ succeeded: 2, failed: 1 });
    expect(p.services.get('sim')).toMatchObject({ finished: { succeeded: 1, failed: 1 }, wait: { count: 5, p50_ms: 300, p95_ms: 10_000, max_ms: 10_000 } });
    expect(p.services.get('comfy')).toEqual({ finished: { succeeded: 1 } });
    expect(p.wait).toMatchObject({ count: 5, p50_ms: 300 });
    expect(flows.get('q')!.finished).toEqual({ canceled: 1 });
    expect(counter.take(13_000)!.get('p')!.finished).toEqual({ succeeded: 1 });
  });

  it('puts an event that comes in after its slot was taken into the oldest open slot', () => {
    const counter = watching();
    expect(counter.take(12_000)!.size).toBe(0);
    counter.note(event('p', 'job.succeeded', 11_900)); // late
    expect(counter.take(13_000)!.get('p')!.finished).toEqual({ succeeded: 1 });
  });

  it('keeps every wait in the count and histogram, and a bounded sample for the percentiles', () => {
    const counter = watching();
    for (let i = 0; i < 5_000; i++) counter.note(starting('p', 11_500, i % 2 === 0 ? 50 : 5_000));
    const wait = counter.take(12_000)!.get('p')!.wait!;
    expect(wait.count).toBe(5_000);
    expect(wait.buckets[2]).toBe(2_500); // ≤ 50 ms
    expect(wait.buckets[8]).toBe(2_500); // ≤ 5 s
    expect(wait.p95_ms).toBe(5_000);
  });
});

describe('samples with their flow', () => {
  const sample: QueueSample = { ts: 12_000, pool: 'p', depth: 3, oldest_age_ms: 900, services: [{ service: 'sim', depth: 3, oldest_age_ms: 900 }], classes: [{ requirement_class: 'c1', depth: 3, oldest_age_ms: 900 }] };

  it('writes zeros when the interval was watched and nothing ended, and adds a service that only finished jobs', () => {
    expect(withFlow(sample, undefined)).toEqual({ ...sample, finished: {} });
    const flowed = withFlow(sample, { finished: { succeeded: 2 }, services: new Map([['other', { finished: { succeeded: 2 } }]]) });
    expect(flowed.services).toEqual([sample.services[0], { service: 'other', depth: 0, finished: { succeeded: 2 } }]);
  });

  it('sums a day slot: highest depth and age, ended jobs summed, waits merged, unknown only when no sample knew', () => {
    const wait = (p50: number, bucket: number) => ({ count: 2, p50_ms: p50, p95_ms: p50, max_ms: p50, buckets: [...Array(bucket).fill(0), 2] });
    const samples: QueueSample[] = [
      { ...sample, ts: 10_000, depth: 1 },
      { ...sample, ts: 11_000, depth: 5, oldest_age_ms: 4_000, finished: { succeeded: 2 }, wait: wait(40, 2), services: [{ service: 'sim', depth: 5, finished: { succeeded: 2 }, wait: wait(40, 2) }] },
      { ...sample, ts: 12_000, depth: 2, finished: { succeeded: 1, failed: 1 }, wait: wait(4_000, 8), services: [] },
    ];
    const day = coarseSample('p', 10_000, samples)!;
    expect(day).toMatchObject({ ts: 10_000, pool: 'p', depth: 5, oldest_age_ms: 4_000, finished: { succeeded: 3, failed: 1 } });
    expect(day.wait).toMatchObject({ count: 4, max_ms: 4_000, buckets: [0, 0, 2, 0, 0, 0, 0, 0, 2] });
    expect(day.services).toEqual([{ service: 'sim', depth: 5, oldest_age_ms: 900, finished: { succeeded: 2 }, wait: wait(40, 2) }]);
    expect(day.classes).toEqual([{ requirement_class: 'c1', depth: 3, oldest_age_ms: 900 }]);
    expect(coarseSample('p', 10_000, [sample])!.finished).toBeUndefined();
    expect(coarseSample('p', 10_000, [])).toBeUndefined();
  });

  it('sums throughput over the slots that know it and merges waits over the range', () => {
    const samples: QueueSample[] = [
      { ...sample, ts: 0 }, // unknown: left out of the covered time
      { ...sample, ts: 30_000, finished: { succeeded: 10 } },
      { ...sample, ts: 60_000, finished: { succeeded: 5, failed: 5 }, wait: { count: 1, p50_ms: 70, p95_ms: 70, max_ms: 70, buckets: [0, 0, 0, 1] } },
    ];
    expect(flowSummary(samples, 30_000)).toEqual({ finished: { succeeded: 15, failed: 5 }, covered_ms: 60_000, jobs_per_min: 20, wait: samples[2]!.wait });
    expect(flowSummary([sample], 30_000)).toEqual({ finished: {}, covered_ms: 0, jobs_per_min: 0 });
  });

  it('reads merged percentiles off the histogram, within the bucket and never above the longest wait', () => {
    const merged = mergeWaitDigests([
      { count: 50, p50_ms: 15, p95_ms: 19, max_ms: 19, buckets: [0, 50] },
      { count: 50, p50_ms: 150, p95_ms: 190, max_ms: 190, buckets: [0, 0, 0, 0, 50] },
    ])!;
    expect(merged.count).toBe(100);
    expect(merged.p50_ms).toBe(20); // the 50th of 100: the top of the (10, 20] bucket
    expect(merged.p95_ms).toBeGreaterThan(100);
    expect(merged.p95_ms).toBeLessThanOrEqual(190);
    expect(merged.buckets).toEqual([0, 50, 0, 0, 50]);
  });
});
