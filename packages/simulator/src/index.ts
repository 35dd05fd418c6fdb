import { readFile } from 'node:fs/promises';
import { SimulationConfig } from './config';
import { PLANNED_POLICIES, POLICIES, policiesNamed } from './policies';
import { type PolicyReport, formatReport, summarise } from './report';
import { runPolicy } from './simulation';
import { parseTrace } from './trace';
import { type SimJob, generateWorkload } from './workload';

export { SimulationConfig } from './config';
export { EventQueue } from './event-queue';
export { PLANNED_POLICIES, POLICIES, type Policy } from './policies';
export { type PolicyReport, formatReport } from './report';
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
}

/**
 * Runs each policy asked for on the same workload and seed, one after the
 * other, each on a fresh private Redis. `{ policies }` is the `--json` shape.
 */
export async function simulate(options: SimulateOptions): Promise<{ policies: PolicyReport[] }> {
  const policies = policiesNamed(options.policy);
  const config = SimulationConfig.parse(options.config ?? {});
  const workload: SimJob[] = options.trace
    ? parseTrace(await readFile(options.trace, 'utf8'), options.trace)
    : generateWorkload(config.workload, options.hours, options.seed);
  const reports: PolicyReport[] = [];
  for (const policy of policies) {
    reports.push(summarise(await runPolicy({ policy, config, workload, hours: options.hours, seed: options.seed, machines: options.machines })));
  }
  return { policies: reports };
}

export function reportNote(): string {
  return `policies: ${POLICIES.map((p) => p.name).join(', ')}; ${PLANNED_POLICIES}`;
}

export function formatSimulation(result: { policies: PolicyReport[] }): string {
  return formatReport(result.policies, reportNote());
}
