import { readFile } from 'node:fs/promises';
import { SimulationConfig } from './config';
import { type FitRow, type FitVerdict, fitPolicy, fitVerdict, formatFit } from './fit';
import { RunSlots, defaultParallelism } from './parallel';
import { PLANNED_POLICIES, POLICIES, type Policy, policiesNamed } from './policies';
import { type PolicyReport, formatReport } from './report';
import { type TargetRow, evaluateTargets, formatTargets } from './targets';
import { parseTrace } from './trace';
import { type SimJob, generateWorkload } from './workload';

export { SimulationConfig } from './config';
export { EventQueue } from './event-queue';
export { PLANNED_POLICIES, POLICIES, type Policy } from './policies';
export { type PolicyReport, formatReport } from './report';
export { FIT_FEWER_TARGET_PCT, FIT_MAX_SCALE, FIT_MIN_SCALE, FIT_STEPS, type FitRow, type FitVerdict, fitPolicy, fitVerdict, formatFit } from './fit';
export { RunSlots, type RunRequest, defaultParallelism, runInChild, runRequest } from './parallel';
export { plotSvg } from './plot';
export { type TargetRow, evaluateTargets, formatTargets, meetsWaitTargets } from './targets';
export { Random } from './random';
export { VIRTUAL_EPOCH_MS } from './simulation';
export { TraceError, parseTrace } from './trace';
export { generateWorkload, imageModelWeights, type SimJob } from './workload';

export interface SimulateOptions {
  /** a policy's name, or 'all' */
  policy: string;
  seed: number;
  hours: number;
  /** a fixed fleet size instead of the daily 10 -> 50 -> 10 curve */
  machines?: number;
  /** a CSV trace instead of the built-in workload */
  trace?: string;
  /** overrides of the fleet and workload (a parsed config file) */
  config?: unknown;
  /** also search each policy's smallest fleet that meets the wait targets (`--fit`) */
  fit?: boolean;
  /** runs at once (default: one per core); 1 runs them one after the other in this process */
  parallel?: number;
}

/** The `--json` shape: `policies` (the documented interface), then `targets`, and `fit` with `--fit`. */
export interface SimulationResult {
  policies: PolicyReport[];
  targets: TargetRow[];
  fit?: FitRow[];
  /** with `--fit`: the best policy's saving against the baseline, and whether it reaches the 30% target */
  fit_verdict?: FitVerdict;
}

/**
 * Runs each policy asked for on the same workload and seed, each on a fresh
 * private Redis, up to `parallel` at once (each in a child process of its
 * own; a run's report does not depend on what runs beside it).
 */
export async function simulate(options: SimulateOptions): Promise<SimulationResult> {
  const policies = policiesNamed(options.policy);
  const config = SimulationConfig.parse(options.config ?? {});
  const workload: SimJob[] = options.trace
    ? parseTrace(await readFile(options.trace, 'utf8'), options.trace)
    : generateWorkload(config.workload, options.hours, options.seed);
  const slots = new RunSlots(Math.min(options.parallel ?? defaultParallelism(), options.fit ? Infinity : policies.length));
  const request = (policy: string) => ({ policy, config, workload, hours: options.hours, seed: options.seed, machines: options.machines });
  // the costliest runs start first, so that the last to finish is a short one and the cores stay busy to the end;
  // the reports stay in the order asked for
  const reports: PolicyReport[] = new Array(policies.length);
  await Promise.all(startOrder(policies).map(async (i) => (reports[i] = await slots.run(request(policies[i]!.name)))));
  const baseline = reports.find((r) => r.name === 'baseline');
  const targets = reports.flatMap((r) => evaluateTargets(r, { preemptionsPerHour: config.fleet.preemptions_per_hour, hours: options.hours, baseline }));
  if (!options.fit) return { policies: reports, targets };
  const fit = await Promise.all(policies.map((p, i) => fitPolicy(request(p.name), slots, reports[i])));
  return { policies: reports, targets, fit, fit_verdict: fitVerdict(fit) };
}

/**
 * The indices of `policies` costliest first: each part a policy adds costs the
 * run Redis calls (pools: a routing read before submits and three shards to
 * tick and read signals from; affinity: model reports; the planner: its rounds;
 * fallback: borrowing claims), so more parts first. Measured on the default day
 * (docs/simulator.md): the baseline costs about half of any pooled policy.
 */
export function startOrder(policies: readonly Policy[]): number[] {
  const parts = (p: Policy) => [p.pools, p.affinity, p.planner, p.fallback].filter(Boolean).length;
  return policies.map((_, i) => i).sort((a, b) => parts(policies[b]!) - parts(policies[a]!) || a - b);
}

export function reportNote(): string {
  return `policies: ${POLICIES.map((p) => p.name).join(', ')}; ${PLANNED_POLICIES}`;
}

export function formatSimulation(result: SimulationResult): string {
  return [formatReport(result.policies, reportNote()), '', formatTargets(result.targets), ...(result.fit ? ['', formatFit(result.fit)] : [])].join('\n');
}
