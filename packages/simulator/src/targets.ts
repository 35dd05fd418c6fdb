import { type PolicyReport, settleMs } from './report';

/**
 * The targets of issue 14 that every run is reported against, each row marked
 * met or not: `met` null (n/a) where the row does not apply to the policy or
 * the invocation (no fast pool, no baseline run beside it).
 */
export interface TargetRow {
  policy: string;
  target: string;
  /** seconds for waits, a share (0-1) for completion and the download-wait cut */
  value: number | null;
  met: boolean | null;
  /** what the value is over, or why the row is n/a */
  note: string;
}

export const FAST_POOL = 'fast';
export const FAST_P95_S = 2;
export const POOL_P95_S = 10;
export const COMPLETION = 0.9999;
export const DOWNLOAD_CUT = 0.9;

export interface TargetContext {
  /** the run's spot interruption rate per machine per hour, stated with the completion row */
  preemptionsPerHour: number;
  /** the run's simulated hours (the completion row leaves out the jobs submitted in its last minutes) */
  hours: number;
  /** the baseline's report when it ran in the same invocation (the download-wait row compares with it) */
  baseline?: PolicyReport;
}

export function evaluateTargets(report: PolicyReport, context: TargetContext): TargetRow[] {
  const row = (target: string, value: number | null, met: boolean | null, note: string): TargetRow => ({ policy: report.name, target, value, met, note });
  const fast = report.pools[FAST_POOL];
  const worst = worstPool(report);
  const rows: TargetRow[] = [
    fast
      ? row(`fast-lane p95 wait < ${FAST_P95_S} s`, fast.wait_p95_s, fast.wait_p95_s !== null && fast.wait_p95_s < FAST_P95_S, `pool ${FAST_POOL}, ${fast.jobs} jobs`)
      : row(`fast-lane p95 wait < ${FAST_P95_S} s`, null, null, `n/a: the policy has no ${FAST_POOL} pool`),
    row(`every pool p95 wait < ${POOL_P95_S} s`, worst.p95, worst.met, `worst pool ${worst.pool}`),
    row(
      `completion >= ${COMPLETION * 100}%`,
      report.completion_rate_settled,
      report.completion_rate_settled >= COMPLETION && report.lost === 0,
      `jobs submitted before the run's last ${settleMs(context.hours) / 60_000} min; ${context.preemptionsPerHour} preemptions per machine-hour; lost ${report.lost}`,
    ),
  ];
  const downloadTarget = `download wait >= ${DOWNLOAD_CUT * 100}% below baseline`;
  if (!context.baseline) rows.push(row(downloadTarget, null, null, 'n/a: the baseline did not run in this invocation'));
  else if (context.baseline.name === report.name) rows.push(row(downloadTarget, null, null, 'n/a: the reference'));
  else {
    const reference = context.baseline.download_wait_s;
    const cut = reference === 0 ? (report.download_wait_s === 0 ? 0 : -Infinity) : round4(1 - report.download_wait_s / reference);
    rows.push(row(downloadTarget, Number.isFinite(cut) ? cut : null, cut >= DOWNLOAD_CUT, `${report.download_wait_s} s vs ${reference} s`));
  }
  return rows;
}

/** The wait targets `--fit` sizes the fleet for: every pool p95 < 10 s, the fast pool's < 2 s where there is one, completion >= 99.99%. */
export function meetsWaitTargets(report: PolicyReport): boolean {
  const fast = report.pools[FAST_POOL];
  if (fast && (fast.wait_p95_s === null || fast.wait_p95_s >= FAST_P95_S)) return false;
  return worstPool(report).met && report.completion_rate_settled >= COMPLETION && report.lost === 0;
}

/** The pool with the highest p95 wait (a pool where no job started counts as worst: its wait is unbounded). */
function worstPool(report: PolicyReport): { pool: string; p95: number | null; met: boolean } {
  let worst = { pool: '-', p95: null as number | null, met: true };
  for (const [pool, summary] of Object.entries(report.pools)) {
    if (summary.jobs === 0) continue;
    if (summary.wait_p95_s === null) return { pool, p95: null, met: false };
    if (worst.p95 === null || summary.wait_p95_s > worst.p95) worst = { pool, p95: summary.wait_p95_s, met: summary.wait_p95_s < POOL_P95_S };
  }
  return worst;
}

const round4 = (value: number) => Math.round(value * 10_000) / 10_000;

/** The targets as a table: one block of rows per policy, each marked met, NOT met or n/a. */
export function formatTargets(rows: TargetRow[]): string {
  const value = (r: TargetRow) => {
    if (r.value === null) return '-';
    return r.target.startsWith('completion') || r.target.startsWith('download') ? `${(r.value * 100).toFixed(r.target.startsWith('completion') ? 3 : 1)}%` : `${r.value} s`;
  };
  const width = Math.max(6, ...rows.map((r) => r.policy.length)) + 2;
  const lines = ['targets', `${'policy'.padEnd(width)}${'target'.padEnd(42)}${'value'.padStart(10)}  ${'met'.padEnd(7)} note`];
  for (const r of rows) lines.push(`${r.policy.padEnd(width)}${r.target.padEnd(42)}${value(r).padStart(10)}  ${(r.met === null ? 'n/a' : r.met ? 'met' : 'NOT met').padEnd(7)} ${r.note}`);
  return lines.join('\n');
}
