import { type FinishedCounts, type QueueFlowSummary, type QueueSample, type StreamEvent, type WaitDigest, mergeWaitDigests, trimmedBuckets, waitBucketOf } from '@emp/core';

/**
 * What went through the queues between two samples: jobs that ended (per
 * terminal state) and submit-to-start waits, per pool and service, counted
 * from the event hub's feed and written into the queue history with each
 * sample. Waits are kept exactly up to a bound per slot (a uniform reservoir
 * beyond it) for that slot's percentiles; across slots they merge by histogram.
 */

const FINISHED_STATES = ['succeeded', 'failed', 'canceled', 'expired'] as const;
type FinishedState = (typeof FINISHED_STATES)[number];
const FINISHED_EVENTS: ReadonlyMap<string, FinishedState> = new Map(FINISHED_STATES.map((state) => [`job.${state}`, state]));

/** waits kept per pool, service and slot for its percentiles; the count and histogram keep every one */
export const MAX_WAITS_PER_SLOT = 1_000;

class WaitTally {
  count = 0;
  max = 0;
  readonly buckets: number[] = [];
  readonly kept: number[] = [];

  add(ms: number): void {
    this.count += 1;
    this.max = Math.max(this.max, ms);
    const bucket = waitBucketOf(ms);
    this.buckets[bucket] = (this.buckets[bucket] ?? 0) + 1;
    if (this.kept.length < MAX_WAITS_PER_SLOT) this.kept.push(ms);
    else {
      // reservoir sampling: every wait of the slot equally likely to be kept
      const at = Math.floor(Math.random() * this.count);
      if (at < MAX_WAITS_PER_SLOT) this.kept[at] = ms;
    }
  }

  digest(): WaitDigest {
    return { count: this.count, p50_ms: nearestRank(this.kept, 0.5), p95_ms: nearestRank(this.kept, 0.95), max_ms: this.max, buckets: trimmedBuckets(this.buckets) };
  }
}

interface ServiceTally {
  finished: FinishedCounts;
  waits?: WaitTally;
}

/** One pool's flow in one slot: its services', and the pool's as their sum. */
export interface PoolFlow {
  finished: FinishedCounts;
  wait?: WaitDigest;
  services: Map<string, { finished: FinishedCounts; wait?: WaitDigest }>;
}

/**
 * Counts the feed's job events into slots of `intervalMs` by their time
 * (Redis's clock, as the samples' slots). An event that comes in after its
 * slot was taken goes into the oldest open one, so nothing counted is lost.
 */
export class FlowCounter {
  /** slot start -> pool -> service -> tally */
  private readonly slots = new Map<number, Map<string, Map<string, ServiceTally>>>();
  /** the slots before this one have been taken */
  private openFrom = -Infinity;
  /** the first slot counted from its start (the one after the first take's): earlier ones are partial */
  private watchedFrom: number | undefined;

  constructor(readonly intervalMs: number) {}

  note(event: StreamEvent): void {
    const state = FINISHED_EVENTS.get(event.type);
    if (event.type !== 'job.starting' && !state) return;
    const { service } = event as { service?: string };
    if (!service) return;
    // a sharded pool's events come from its shards' streams: counted as the pool's
    const tally = this.tally(Math.max(this.slotOf(event.ts), this.openFrom), event.pool, service);
    if (state) tally.finished[state] = (tally.finished[state] ?? 0) + 1;
    else if (event.type === 'job.starting' && event.submitted_at !== undefined && event.submitted_at > 0) {
      (tally.waits ??= new WaitTally()).add(Math.max(0, event.ts - event.submitted_at));
    }
  }

  /**
   * The flow of every slot before `slot` not taken yet, per pool, and forgets
   * it; undefined when counting had not watched the whole of them (the first
   * two takes after start: their counts would be partial).
   */
  take(slot: number): Map<string, PoolFlow> | undefined {
    this.watchedFrom ??= slot + this.intervalMs;
    const complete = this.openFrom >= this.watchedFrom;
    this.openFrom = Math.max(this.openFrom, slot);
    const merged = new Map<string, Map<string, { finished: FinishedCounts; waits: WaitTally[] }>>();
    for (const [start, pools] of this.slots) {
      if (start >= slot) continue;
      this.slots.delete(start);
      for (const [pool, services] of pools) {
        if (!merged.has(pool)) merged.set(pool, new Map());
        const into = merged.get(pool)!;
        for (const [service, tally] of services) {
          const known = into.get(service) ?? { finished: {}, waits: [] };
          known.finished = addFinished(known.finished, tally.finished);
          if (tally.waits) known.waits.push(tally.waits);
          into.set(service, known);
        }
      }
    }
    if (!complete) return undefined;
    const flows = new Map<string, PoolFlow>();
    for (const [pool, services] of merged) {
      const flow: PoolFlow = { finished: {}, services: new Map() };
      const poolWaits: WaitDigest[] = [];
      for (const [service, { finished, waits }] of services) {
        const wait = waits.length === 1 ? waits[0]!.digest() : mergeWaitDigests(waits.map((w) => w.digest()));
        flow.services.set(service, wait ? { finished, wait } : { finished });
        flow.finished = addFinished(flow.finished, finished);
        if (wait) poolWaits.push(wait);
      }
      const wait = poolWaits.length === 1 ? poolWaits[0] : mergeWaitDigests(poolWaits);
      if (wait) flow.wait = wait;
      flows.set(pool, flow);
    }
    return flows;
  }

  private slotOf(ts: number): number {
    return ts - (ts % this.intervalMs);
  }

  private tally(slot: number, pool: string, service: string): ServiceTally {
    let pools = this.slots.get(slot);
    if (!pools) this.slots.set(slot, (pools = new Map()));
    let services = pools.get(pool);
    if (!services) pools.set(pool, (services = new Map()));
    let tally = services.get(service);
    if (!tally) services.set(service, (tally = { finished: {} }));
    return tally;
  }
}

/**
 * A sample with its pool's flow written in: the pool's counts (zeros when
 * nothing ended, since the interval was watched), and each service's, a
 * service with no queued job added when something went through it.
 */
export function withFlow(sample: QueueSample, flow: PoolFlow | undefined): QueueSample {
  const services = sample.services.map((entry) => {
    const seen = flow?.services.get(entry.service);
    return seen ? { ...entry, ...seen } : entry;
  });
  for (const [service, seen] of flow?.services ?? []) {
    if (!sample.services.some((entry) => entry.service === service)) services.push({ service, depth: 0, ...seen });
  }
  return { ...sample, finished: flow?.finished ?? {}, wait: flow?.wait, services };
}

/**
 * The day history's sample of one pool over a coarse slot: the highest depth
 * and oldest age of its samples (pressure shows), what ended summed, waits
 * merged; `finished` stays unknown only when no sample of the slot knew it.
 */
export function coarseSample(pool: string, slot: number, samples: readonly QueueSample[]): QueueSample | undefined {
  if (samples.length === 0) return undefined;
  const services = new Map<string, QueueSample['services']>();
  const classes = new Map<string, QueueSample['classes']>();
  for (const sample of samples) {
    for (const entry of sample.services) services.set(entry.service, [...(services.get(entry.service) ?? []), entry]);
    for (const entry of sample.classes) classes.set(entry.requirement_class, [...(classes.get(entry.requirement_class) ?? []), entry]);
  }
  return {
    ts: slot,
    pool,
    ...highest(samples),
    ...flowOf(samples),
    services: [...services].map(([service, entries]) => ({ service, ...highest(entries), ...flowOf(entries) })),
    classes: [...classes].map(([requirement_class, entries]) => ({ requirement_class, ...highest(entries) })),
  };
}

function highest(entries: ReadonlyArray<{ depth: number; oldest_age_ms?: number }>): { depth: number; oldest_age_ms?: number } {
  const depth = Math.max(...entries.map((e) => e.depth));
  const ages = entries.flatMap((e) => (e.oldest_age_ms === undefined ? [] : [e.oldest_age_ms]));
  return ages.length > 0 ? { depth, oldest_age_ms: Math.max(...ages) } : { depth };
}

function flowOf(entries: ReadonlyArray<{ finished?: FinishedCounts; wait?: WaitDigest }>): { finished?: FinishedCounts; wait?: WaitDigest } {
  const known = entries.filter((e) => e.finished);
  const wait = mergeWaitDigests(entries.flatMap((e) => (e.wait ? [e.wait] : [])));
  return {
    finished: known.length > 0 ? known.reduce<FinishedCounts>((sum, e) => addFinished(sum, e.finished!), {}) : undefined,
    wait,
  };
}

/** Throughput and waits over samples `intervalMs` apart: jobs per minute over the slots whose throughput is known. */
export function flowSummary(samples: readonly QueueSample[], intervalMs: number): QueueFlowSummary {
  const known = samples.filter((s) => s.finished);
  const finished = known.reduce<FinishedCounts>((sum, s) => addFinished(sum, s.finished!), {});
  const coveredMs = new Set(known.map((s) => s.ts)).size * intervalMs;
  const wait = mergeWaitDigests(samples.flatMap((s) => (s.wait ? [s.wait] : [])));
  const perMin = coveredMs > 0 ? (finishedTotal(finished) * 60_000) / coveredMs : 0;
  return { finished, covered_ms: coveredMs, jobs_per_min: Math.round(perMin * 100) / 100, wait };
}

export function finishedTotal(counts: FinishedCounts): number {
  return FINISHED_STATES.reduce((sum, state) => sum + (counts[state] ?? 0), 0);
}

function addFinished(a: FinishedCounts, b: FinishedCounts): FinishedCounts {
  const sum: FinishedCounts = { ...a };
  for (const state of FINISHED_STATES) if (b[state]) sum[state] = (sum[state] ?? 0) + b[state];
  return sum;
}

function nearestRank(values: number[], fraction: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1))]!;
}
