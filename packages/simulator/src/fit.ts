import type { RunRequest, RunSlots } from './parallel';
import type { PolicyReport } from './report';
import { meetsWaitTargets } from './targets';

/** `--fit`: the fleet scales searched (a factor on the daily fleet curve, or on `--machines`), and the bisection steps inside the bracket found. */
export const FIT_MIN_SCALE = 0.25;
export const FIT_MAX_SCALE = 3;
export const FIT_STEPS = 4;

/** One policy's answer: the smallest scale found that meets the wait targets (met false: not even at 3x). */
export interface FitRow {
  policy: string;
  scale: number | null;
  machine_hours: number | null;
  met: boolean;
  /** full runs the search took (the run at scale 1 included) */
  runs: number;
  /** not met: the machine-hours of its run at 3x, which its need exceeds (null when met) */
  machine_hours_at_max: number | null;
}

/** The cost target: the best policy needs at least this much less machine time than the baseline. */
export const FIT_FEWER_TARGET_PCT = 30;

/**
 * The fit's verdict on the cost target: the policy that meets the wait targets
 * on the fewest machine-hours, and how many fewer than the baseline's. When the
 * baseline cannot within 3x its need exceeds its run at 3x, so the saving is a
 * bound (`at_least`): at least (3x run - best) / 3x run.
 */
export interface FitVerdict {
  best: string | null;
  fewer_pct: number | null;
  at_least: boolean;
  target_pct: number;
  met: boolean;
  note: string;
}

/**
 * Bisection on the fleet scale for the smallest fleet at which the policy meets
 * the wait targets (`meetsWaitTargets`): from the run at scale 1 (`atScale1`
 * when the caller has it), the bracket is [0.25, 1] when 1 meets them (0.25
 * itself is tried first) and [1, 3] when 3 does; then FIT_STEPS halvings, each
 * a full run. It assumes that a larger fleet never waits longer, which holds
 * in expectation, not for every seed: a scale is as good as the runs at it.
 */
export async function fitPolicy(request: RunRequest, slots: RunSlots, atScale1?: PolicyReport, steps = FIT_STEPS): Promise<FitRow> {
  let runs = 0;
  const at = async (scale: number) => {
    runs++;
    return slots.run({ ...request, fleetScale: scale });
  };
  const one = atScale1 ?? (await at(1));
  if (atScale1) runs++;
  let lo: number;
  let hi: number;
  let best: PolicyReport;
  if (meetsWaitTargets(one)) {
    const smallest = await at(FIT_MIN_SCALE);
    if (meetsWaitTargets(smallest)) return row(request.policy, FIT_MIN_SCALE, smallest, runs);
    [lo, hi, best] = [FIT_MIN_SCALE, 1, one];
  } else {
    const largest = await at(FIT_MAX_SCALE);
    if (!meetsWaitTargets(largest)) return { policy: request.policy, scale: null, machine_hours: null, met: false, runs, machine_hours_at_max: largest.machine_hours };
    [lo, hi, best] = [1, FIT_MAX_SCALE, largest];
  }
  for (let step = 0; step < steps; step++) {
    const mid = Math.round(((lo + hi) / 2) * 1000) / 1000;
    const report = await at(mid);
    if (meetsWaitTargets(report)) [hi, best] = [mid, report];
    else lo = mid;
  }
  return row(request.policy, hi, best, runs);
}

function row(policy: string, scale: number, report: PolicyReport, runs: number): FitRow {
  return { policy, scale, machine_hours: report.machine_hours, met: true, runs, machine_hours_at_max: null };
}

export function fitVerdict(rows: FitRow[]): FitVerdict {
  const verdict = (fields: Omit<FitVerdict, 'target_pct'>): FitVerdict => ({ ...fields, target_pct: FIT_FEWER_TARGET_PCT });
  const baseline = rows.find((r) => r.policy === 'baseline');
  const best = rows
    .filter((r) => r !== baseline && r.met && r.machine_hours !== null)
    .sort((a, b) => a.machine_hours! - b.machine_hours!)[0];
  if (!best) return verdict({ best: null, fewer_pct: null, at_least: false, met: false, note: 'no policy but the baseline meets the wait targets within 3x' });
  const against = baselineHours(baseline);
  if (!baseline || against === null || against <= 0) {
    return verdict({ best: best.policy, fewer_pct: null, at_least: false, met: false, note: 'the baseline was not run, so there is nothing to compare with' });
  }
  const atLeast = !baseline.met;
  const fewer = Math.round(((against - best.machine_hours!) / against) * 1000) / 10;
  const met = fewer >= FIT_FEWER_TARGET_PCT;
  const measure = atLeast ? `at least ${fewer}% fewer than the baseline, which cannot within 3x (its 3x run: ${against})` : `${fewer}% fewer than the baseline's ${against}`;
  return verdict({ best: best.policy, fewer_pct: fewer, at_least: atLeast, met, note: `${best.policy}: ${best.machine_hours} machine-hours, ${measure}` });
}

/** The fit as a table: policy, scale, machine-hours, and how many fewer than the baseline's (where the baseline was fitted and met them). */
export function formatFit(rows: FitRow[]): string {
  const baseline = rows.find((r) => r.policy === 'baseline');
  const width = Math.max(6, ...rows.map((r) => r.policy.length)) + 2;
  const lines = [
    `fit: the smallest fleet (scale of the fleet curve, ${FIT_MIN_SCALE}-${FIT_MAX_SCALE}) meeting every pool p95 < 10 s, fast p95 < 2 s, completion >= 99.99%`,
    `${'policy'.padEnd(width)}${'scale'.padStart(18)}${'machine-hours'.padStart(16)}${'vs baseline'.padStart(14)}${'runs'.padStart(6)}`,
  ];
  for (const r of rows) {
    const fewer = fewerThan(baseline, r);
    const scale = r.met ? String(r.scale) : 'cannot within 3x';
    lines.push(`${r.policy.padEnd(width)}${scale.padStart(18)}${(r.machine_hours === null ? '-' : String(r.machine_hours)).padStart(16)}${fewer.padStart(14)}${String(r.runs).padStart(6)}`);
  }
  const verdict = fitVerdict(rows);
  lines.push(`best policy >= ${verdict.target_pct}% fewer machine-hours than the baseline: ${verdict.met ? 'met' : 'not met'} (${verdict.note})`);
  return lines.join('\n');
}

/** "N% fewer" than the baseline's fitted machine-hours, ">=N% fewer" than its 3x run where it cannot within 3x, else "-". */
function fewerThan(baseline: FitRow | undefined, r: FitRow): string {
  if (!baseline || r === baseline || r.machine_hours === null) return '-';
  const against = baselineHours(baseline);
  if (!against) return '-';
  const pct = `${(((against - r.machine_hours) / against) * 100).toFixed(1)}% fewer`;
  return baseline.met ? pct : `>=${pct}`;
}

/**
 * The baseline's machine-hours a policy is compared with: its fitted ones, or,
 * where it cannot meet the targets within 3x, its 3x run's (a saving against
 * that is a bound); null when there is no baseline or no figure.
 */
function baselineHours(baseline: FitRow | undefined): number | null {
  if (!baseline) return null;
  return (baseline.met ? baseline.machine_hours : baseline.machine_hours_at_max) ?? null;
}
