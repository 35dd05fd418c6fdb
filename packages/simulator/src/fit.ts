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
    if (!meetsWaitTargets(largest)) return { policy: request.policy, scale: null, machine_hours: null, met: false, runs };
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
  return { policy, scale, machine_hours: report.machine_hours, met: true, runs };
}

/** The fit as a table: policy, scale, machine-hours, and how many fewer than the baseline's (where the baseline was fitted and met them). */
export function formatFit(rows: FitRow[]): string {
  const baseline = rows.find((r) => r.policy === 'baseline' && r.met);
  const width = Math.max(6, ...rows.map((r) => r.policy.length)) + 2;
  const lines = [
    `fit: the smallest fleet (scale of the fleet curve, ${FIT_MIN_SCALE}-${FIT_MAX_SCALE}) meeting every pool p95 < 10 s, fast p95 < 2 s, completion >= 99.99%`,
    `${'policy'.padEnd(width)}${'scale'.padStart(18)}${'machine-hours'.padStart(16)}${'vs baseline'.padStart(14)}${'runs'.padStart(6)}`,
  ];
  for (const r of rows) {
    const fewer = baseline?.machine_hours && r.machine_hours !== null && r !== baseline ? `${(((baseline.machine_hours - r.machine_hours) / baseline.machine_hours) * 100).toFixed(1)}% fewer` : '-';
    const scale = r.met ? String(r.scale) : 'cannot within 3x';
    lines.push(`${r.policy.padEnd(width)}${scale.padStart(18)}${(r.machine_hours === null ? '-' : String(r.machine_hours)).padStart(16)}${fewer.padStart(14)}${String(r.runs).padStart(6)}`);
  }
  return lines.join('\n');
}
