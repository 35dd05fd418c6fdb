import { type Broker, type Job, type StreamEvent } from '@emp/core';
import type { EventHub } from './live/event-hub';

/** Attempts per pool and service the mean run time is taken over. */
const WINDOW = 50;
/** Attempts being timed at once, at most (the oldest are forgotten first). */
const MAX_IN_FLIGHT = 100_000;
/** How long a class's capacity is reused before it is read again. */
const CAPACITY_TTL_MS = 2_000;

/**
 * Estimates how long a queued job still waits for a worker, like fal's queue
 * position with an ETA: (position + 1) x the mean run time (claim to finish) of
 * the service's recent attempts / the number of its class's jobs the capable
 * online workers run at once. The run times come from the event streams the
 * hub reads anyway (kept in memory, so a fresh API instance has none until
 * jobs finish); there is no estimate without them, without a capable worker,
 * or while the service is paused.
 */
export class QueueEta {
  private readonly started = new Map<string, number>();
  private readonly runs = new Map<string, { durations: number[]; next: number }>();
  private readonly capacities = new Map<string, { at: number; value: Promise<number> }>();

  constructor(
    private readonly broker: Broker,
    hub: EventHub,
  ) {
    hub.onEvent((event) => this.observe(event));
  }

  /** The mean claim-to-finish time of the service's recent attempts in the pool, or undefined without any. */
  meanRunMs(pool: string, service: string): number | undefined {
    const durations = this.runs.get(`${pool}/${service}`)?.durations;
    if (!durations?.length) return undefined;
    return durations.reduce((sum, d) => sum + d, 0) / durations.length;
  }

  /** Estimated ms until a worker takes this job, for a queued job whose service has recent run times; else undefined. */
  async etaMs(job: Pick<Job, 'pool' | 'service' | 'state' | 'position' | 'requirement_class'>): Promise<number | undefined> {
    if (job.state !== 'queued' || job.position === undefined) return undefined;
    const mean = this.meanRunMs(job.pool, job.service);
    if (mean === undefined) return undefined;
    const capacity = await this.capacity(job.pool, job.requirement_class);
    if (capacity <= 0) return undefined;
    return Math.round(((job.position + 1) * mean) / capacity);
  }

  private capacity(pool: string, requirementClass: string): Promise<number> {
    const key = `${pool}/${requirementClass}`;
    const cached = this.capacities.get(key);
    if (cached && Date.now() - cached.at < CAPACITY_TTL_MS) return cached.value;
    if (this.capacities.size >= 10_000) this.capacities.clear();
    const value = this.broker.classCapacity(pool, [requirementClass]).then(([capacity]) => capacity ?? 0);
    this.capacities.set(key, { at: Date.now(), value });
    value.catch(() => this.capacities.delete(key));
    return value;
  }

  private observe(event: StreamEvent): void {
    switch (event.type) {
      case 'job.starting':
        if (this.started.size >= MAX_IN_FLIGHT) this.started.delete(this.started.keys().next().value!);
        this.started.set(event.job, event.ts);
        return;
      // the end of an attempt a worker ran: the time since its job.starting is a run duration
      case 'job.succeeded':
      case 'job.failed':
      case 'job.retrying':
        return this.finished(event.job, event.ts, `${event.pool}/${event.service}`);
      // the attempt ended without running to an outcome (canceled, expired, put back): not a run time
      case 'job.canceled':
      case 'job.expired':
      case 'job.queued':
        this.finished(event.job, event.ts);
        return;
      default:
        return;
    }
  }

  private finished(job: string, at: number, runKey?: string): void {
    const since = this.started.get(job);
    if (since === undefined) return;
    this.started.delete(job);
    if (runKey) this.record(runKey, Math.max(0, at - since));
  }

  private record(key: string, duration: number): void {
    let runs = this.runs.get(key);
    if (!runs) this.runs.set(key, (runs = { durations: [], next: 0 }));
    runs.durations[runs.next] = duration;
    runs.next = (runs.next + 1) % WINDOW;
  }
}
