import type { HourlyMs, JobRecord, RunOutcome } from './simulation';
import { JOB_CLASSES } from './workload';

export interface WaitSummary {
  jobs: number;
  completed: number;
  wait_p50_s: number | null;
  wait_p95_s: number | null;
  wait_p99_s: number | null;
}

/** One policy's row of the report; the first fields are the stable `--json` interface. */
export interface PolicyReport extends WaitSummary {
  name: string;
  lost: number;
  completion_rate: number;
  download_wait_s: number;
  machine_hours: number;
  pools: Record<string, WaitSummary>;
  classes: Record<string, WaitSummary>;
  failed: number;
  redundant_downloads: number;
  gpu_utilisation: number;
  preemptions: number;
  requeued: number;
  /** shares of started attempts whose model was loaded (warm), on disk, or downloaded first (cold) */
  model_hits: { warm: number; disk: number; cold: number };
  /** jobs another pool's idle worker took (cross-pool fallback) */
  fallback_claims: number;
  /** downloads the planner asked for ahead of demand */
  planner_prefetches: number;
  /** models the planner's loads put into idle GPUs (docs/planner.md, "Warm loads") */
  planner_loads: number;
  /**
   * completed / jobs among those submitted before the run's last stretch (10 minutes, or half a run
   * shorter than 20): a job that arrives just before the end and is still queued or running then is not
   * a failure; this is the rate the completion target is held to
   */
  completion_rate_settled: number;
  /** the two hours around the daily peak (15:00-17:00 by default), where the run covers them */
  peak: HourReport | null;
  /** one row per simulated hour */
  hourly: HourReport[];
}

/**
 * One stretch of the run: mean machines up (registered), occupancy = the share
 * of their time spent holding a job (downloading, loading or running it), GPU
 * utilisation = the share spent running jobs that completed.
 */
export interface HourReport {
  from_hour: number;
  to_hour: number;
  arrivals: number;
  /** wait p95 of the jobs submitted in this stretch that started (null where none did) */
  wait_p95_s: number | null;
  machines: number;
  occupancy: number;
  gpu_utilisation: number;
}

/** The pool a job ran in (routing policies set it on the job record); the one-pool baseline's is 'sim'. */
export function poolOf(record: JobRecord): string {
  return (record as JobRecord & { pool?: string }).pool ?? 'sim';
}

/** How long before the end of a run a job must have been submitted to count towards the settled completion rate. */
export function settleMs(hours: number): number {
  return Math.min(600_000, (hours * 3_600_000) / 2);
}

/** Wait = from submission until the job runs (model download and load included); null where no job started. */
export function summarise(outcome: RunOutcome): PolicyReport {
  const machineMs = outcome.machines.reduce((sum, m) => sum + (m.goneAtMs! - m.bootedAtMs), 0);
  const busyMs = outcome.machines.reduce((sum, m) => sum + m.busyMs, 0);
  const all = waits(outcome.jobs);
  const pools = new Map<string, JobRecord[]>();
  for (const job of outcome.jobs) {
    const pool = poolOf(job);
    if (!pools.has(pool)) pools.set(pool, []);
    pools.get(pool)!.push(job);
  }
  const settledBefore = outcome.hours * 3_600_000 - settleMs(outcome.hours);
  const settled = outcome.jobs.filter((j) => j.job.arrivalMs < settledBefore);
  return {
    name: outcome.policy,
    ...all,
    lost: outcome.lost.length,
    completion_rate: all.jobs === 0 ? 1 : round(all.completed / all.jobs, 4),
    download_wait_s: round(outcome.jobs.reduce((sum, j) => sum + j.downloadMs, 0) / 1000, 1),
    machine_hours: round(machineMs / 3_600_000, 2),
    pools: Object.fromEntries([...pools.keys()].sort().map((p) => [p, waits(pools.get(p)!)])),
    classes: Object.fromEntries(JOB_CLASSES.map((c) => [c, waits(outcome.jobs.filter((j) => j.job.jobClass === c))])),
    failed: outcome.failed.length,
    redundant_downloads: outcome.machines.reduce((sum, m) => sum + m.redundantDownloads, 0),
    gpu_utilisation: machineMs === 0 ? 0 : round(busyMs / machineMs, 4),
    preemptions: outcome.preemptions,
    requeued: outcome.requeued,
    model_hits: hitShares(outcome.modelHits),
    fallback_claims: outcome.fallbackClaims,
    planner_prefetches: outcome.plannerPrefetches,
    planner_loads: outcome.plannerLoads,
    completion_rate_settled: settled.length === 0 ? 1 : round(settled.filter((j) => j.completedAtMs !== undefined).length / settled.length, 6),
    peak: peakWindow(outcome),
    hourly: outcome.hourly.map((_, h) => stretch(outcome, h, h + 1)),
  };
}

function stretch(outcome: RunOutcome, from: number, to: number): HourReport {
  const rows = outcome.hourly.slice(from, to);
  const sum = (f: keyof HourlyMs) => rows.reduce((s, r) => s + r[f], 0);
  const up = sum('upMs');
  return {
    from_hour: from,
    to_hour: to,
    arrivals: sum('arrivals'),
    wait_p95_s: waits(outcome.jobs.filter((j) => j.job.arrivalMs >= from * 3_600_000 && j.job.arrivalMs < to * 3_600_000)).wait_p95_s,
    machines: round(up / ((to - from) * 3_600_000), 1),
    occupancy: up === 0 ? 0 : round(sum('occupiedMs') / up, 4),
    gpu_utilisation: up === 0 ? 0 : round(sum('executionMs') / up, 4),
  };
}

/** The hour before and the hour after the daily peak, on the first day the run covers whole. */
function peakWindow(outcome: RunOutcome): HourReport | null {
  const from = (Math.round(outcome.peakHour) + 23) % 24;
  if (from + 2 > outcome.hourly.length) return null;
  return stretch(outcome, from, from + 2);
}

function waits(jobs: RunOutcome['jobs']): WaitSummary {
  const sorted = jobs.filter((j) => j.startedAtMs !== undefined).map((j) => (j.startedAtMs! - j.job.arrivalMs) / 1000).sort((a, b) => a - b);
  const q = (p: number) => (sorted.length === 0 ? null : round(sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!, 1));
  return { jobs: jobs.length, completed: jobs.filter((j) => j.completedAtMs !== undefined).length, wait_p50_s: q(0.5), wait_p95_s: q(0.95), wait_p99_s: q(0.99) };
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** The report as a table for a terminal: one block per policy, a row for all jobs, the pool and each class. */
export function formatReport(reports: PolicyReport[], note: string): string {
  const lines: string[] = [];
  const cell = (v: number | null) => (v === null ? '-' : String(v));
  for (const r of reports) {
    lines.push(`policy ${r.name}`);
    lines.push(['', 'jobs', 'done', 'wait p50 s', 'p95 s', 'p99 s'].map((h, i) => (i === 0 ? h.padEnd(14) : h.padStart(11))).join(''));
    const rows: Array<[string, WaitSummary]> = [['all', r], ...Object.entries(r.pools).map(([p, s]) => [`pool ${p}`, s] as [string, WaitSummary]), ...Object.entries(r.classes).map(([c, s]) => [`class ${c}`, s] as [string, WaitSummary])];
    for (const [label, s] of rows) {
      lines.push([label.padEnd(14), ...[s.jobs, s.completed, s.wait_p50_s, s.wait_p95_s, s.wait_p99_s].map((v) => cell(v).padStart(11))].join(''));
    }
    lines.push(
      `  completion ${(r.completion_rate * 100).toFixed(1)}%  lost ${r.lost}  failed ${r.failed}  download wait ${r.download_wait_s} s  redundant downloads ${r.redundant_downloads}`,
      `  machine-hours ${r.machine_hours}  GPU utilisation ${(r.gpu_utilisation * 100).toFixed(1)}%  preemptions ${r.preemptions}  jobs requeued ${r.requeued}`,
      `  model found loaded ${(r.model_hits.warm * 100).toFixed(1)}%, on disk ${(r.model_hits.disk * 100).toFixed(1)}%, downloaded ${(r.model_hits.cold * 100).toFixed(1)}%  fallback claims ${r.fallback_claims}  planner prefetches ${r.planner_prefetches}  loads ${r.planner_loads}`,
      ...(r.peak
        ? [`  peak ${r.peak.from_hour}:00-${r.peak.to_hour}:00: ${r.peak.arrivals} arrivals, ${r.peak.machines} machines up, occupied ${(r.peak.occupancy * 100).toFixed(1)}%, GPU utilisation ${(r.peak.gpu_utilisation * 100).toFixed(1)}%`]
        : []),
      '',
    );
  }
  lines.push(note);
  return lines.join('\n');
}

function hitShares(hits: { warm: number; disk: number; cold: number }): { warm: number; disk: number; cold: number } {
  const all = hits.warm + hits.disk + hits.cold;
  if (all === 0) return { warm: 0, disk: 0, cold: 0 };
  return { warm: round(hits.warm / all, 4), disk: round(hits.disk / all, 4), cold: round(hits.cold / all, 4) };
}
