import { type Broker, type InvalidRecord, WORKER_STATES, decodeMachine, decodeWorker, isInvalidRecord } from '@emp/core';
import { type FleetActivity, HOUR_MS, type PoolActivity, type RecentFailure, WAIT_WINDOW_MS } from './fleet-activity';
import { clockTime, duration, table } from './format';

/** One service's queue in one pool. */
export interface ServiceQueue {
  service: string;
  queued: number;
  running: number;
  /** delayed or waiting out a retry backoff */
  waiting: number;
  /** age of the oldest queued job */
  oldestAgeMs?: number;
  /** median time from submission to start, over the last WAIT_WINDOW_MS */
  medianWaitMs?: number;
  /** false when a class of the service has queued jobs that no registered worker can run */
  routable: boolean;
}

export interface PoolSnapshot {
  pool: string;
  services: ServiceQueue[];
  /** workers per state (idle, busy, draining, offline; `invalid` for a record that cannot be read) */
  workers: Map<string, number>;
  machines: Map<string, number>;
  activity: PoolActivity;
}

/** What one frame of `emp top` shows. */
export interface TopSnapshot {
  now: number;
  pools: PoolSnapshot[];
  failures: Array<RecentFailure & { message?: string }>;
}

/** Reads of a busy pool's last hour of events before a `wholeHour` frame gives up on completeness (20,000 events a read). */
const MOST_READS = 50;

/**
 * Reads one frame's worth of the pools (their events through `activity`,
 * which keeps what it read before). `wholeHour`: the first frame waits until
 * the last hour's events are read (a frame printed once has no next one).
 */
export async function readTopSnapshot(
  broker: Broker,
  activity: FleetActivity,
  pool: string | undefined,
  errorMessages: Map<string, string>,
  options: { wholeHour?: boolean } = {},
): Promise<TopSnapshot> {
  const pools = pool ? [pool] : await broker.pools();
  const now = await broker.serverTime();
  await activity.update(pools, now);
  for (let reads = 1; options.wholeHour && !activity.complete(pools) && reads < MOST_READS; reads++) await activity.update(pools, now);
  const snapshots = await Promise.all(
    pools.map(async (name): Promise<PoolSnapshot> => {
      const [stats, counts, workers, machines] = await Promise.all([broker.queueStats(name), broker.jobCounts(name), broker.workers(name), broker.machines(name)]);
      const poolActivity = activity.activity(name, now);
      const services = new Map<string, ServiceQueue>();
      const service = (id: string) => {
        let queue = services.get(id);
        if (!queue) services.set(id, (queue = { service: id, queued: 0, running: 0, waiting: 0, routable: true }));
        return queue;
      };
      for (const count of counts) {
        const queue = service(count.service);
        queue.queued = count.queued;
        queue.running = count.starting + count.running;
        queue.waiting = count.delayed + count.retrying;
      }
      for (const c of stats.classes) {
        if (typeof c.definition.service !== 'string' || c.depth === 0) continue;
        const queue = service(c.definition.service);
        if (!c.routable) queue.routable = false;
        if (c.headSubmittedAt !== undefined) queue.oldestAgeMs = Math.max(queue.oldestAgeMs ?? 0, now - c.headSubmittedAt);
      }
      for (const [id, waitMs] of poolActivity.medianWaitMs) service(id).medianWaitMs = waitMs;
      return {
        pool: name,
        services: [...services.values()].sort((a, b) => b.queued - a.queued || a.service.localeCompare(b.service)),
        workers: countStates(workers.map((hash) => decodeWorker(name, hash))),
        machines: countStates(machines.map((hash) => decodeMachine(name, hash))),
        activity: poolActivity,
      };
    }),
  );
  const failures = activity.recentFailures().filter((failure) => pools.includes(failure.pool));
  // the error of each failure shown, looked up once
  await Promise.all(
    failures
      .filter((failure) => !errorMessages.has(failure.job))
      .map(async (failure) => {
        const job = await broker.getJob(failure.job);
        errorMessages.set(failure.job, job?.error ? `${job.error.kind}: ${job.error.message}` : '');
      }),
  );
  return { now, pools: snapshots, failures: failures.map((failure) => ({ ...failure, message: errorMessages.get(failure.job) || undefined })) };
}

function countStates(records: Array<{ state?: string } | InvalidRecord>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const record of records) {
    const state = isInvalidRecord(record) ? 'invalid' : (record.state ?? 'unknown');
    counts.set(state, (counts.get(state) ?? 0) + 1);
  }
  return counts;
}

/** `3: 2 busy, 1 idle, 0 offline`: the total, then each state (the usual ones always, others when present). */
function stateCounts(counts: Map<string, number>, always: readonly string[]): string {
  const total = [...counts.values()].reduce((sum, n) => sum + n, 0);
  const states = [...always, ...[...counts.keys()].filter((state) => !always.includes(state)).sort()];
  return `${total}: ${states.map((state) => `${counts.get(state) ?? 0} ${state}`).join(', ')}`;
}

function throughput(activity: PoolActivity, now: number): string {
  if (!activity.complete) return 'counting (reading the last hour of events)';
  const minutes = Math.max(1, (now - activity.countedSince) / 60_000);
  const window = activity.countedSince > now - HOUR_MS + 60_000 ? `since ${clockTime(activity.countedSince).slice(0, 5)} (the event stream keeps no more)` : 'over the last hour';
  const failed = activity.failedLastHour ? `, ${activity.failedLastHour} failed` : '';
  return `${activity.finishedLastMinute}/min over the last minute, ${rate(activity.finishedLastHour / minutes)}/min ${window} (${activity.finishedLastHour} finished${failed})`;
}

/** A rate per minute: whole from 10 on, one decimal below, `<0.1` for a trickle. */
function rate(perMinute: number): string {
  if (perMinute >= 10 || perMinute === 0) return String(Math.round(perMinute));
  return perMinute < 0.1 ? '<0.1' : perMinute.toFixed(1);
}

/**
 * One frame as text lines: per pool its throughput, workers and machines by
 * state, and its queues per service; then the recent failures.
 */
export function renderTopFrame(snapshot: TopSnapshot, header: string): string[] {
  const lines = [header, ''];
  if (snapshot.pools.length === 0) lines.push('no pools yet: nothing has been submitted and no worker has registered');
  for (const pool of snapshot.pools) {
    lines.push(`POOL ${pool.pool}`);
    lines.push(`  throughput  ${throughput(pool.activity, snapshot.now)}`);
    lines.push(`  workers     ${stateCounts(pool.workers, WORKER_STATES.filter((state) => state !== 'draining'))}`);
    lines.push(`  machines    ${pool.machines.size ? stateCounts(pool.machines, []) : 'none registered'}`);
    if (pool.services.length === 0) lines.push('  no queued or running jobs');
    else {
      const rows = pool.services.map((q) => [
        q.service,
        String(q.queued),
        String(q.running),
        String(q.waiting),
        q.oldestAgeMs === undefined ? '-' : duration(q.oldestAgeMs),
        q.medianWaitMs === undefined ? '-' : duration(q.medianWaitMs),
        q.routable ? 'yes' : 'NO',
      ]);
      const queues = table(['SERVICE', 'QUEUED', 'RUNNING', 'WAITING', 'OLDEST', `WAIT p50 ${duration(WAIT_WINDOW_MS).replace('m00s', 'm')}`, 'ROUTABLE'], rows);
      lines.push(...queues.split('\n').map((line) => `  ${line}`));
    }
    lines.push('');
  }
  lines.push('RECENT FAILURES');
  if (snapshot.failures.length === 0) lines.push('  none in the last hour');
  else {
    const rows = snapshot.failures.map((f) => [clockTime(f.ts).slice(0, 8), f.pool, f.job, f.service, f.worker ?? '-', f.message ?? f.reason ?? '-']);
    lines.push(...table(['AT', 'POOL', 'JOB', 'SERVICE', 'WORKER', 'ERROR'], rows).split('\n').map((line) => `  ${line}`));
  }
  return lines;
}
