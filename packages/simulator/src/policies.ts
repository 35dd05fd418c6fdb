import type { JobClass } from './workload';

/**
 * A way of running the fleet that the simulator compares with others on the
 * same workload and seed (issue 14, item 4). Each policy after the baseline
 * adds one part of the routing issue 13 built, in the order they stack.
 */
export interface Policy {
  name: string;
  description: string;
  /** the priority a job of this class is submitted with (higher runs first; equal ones by age) */
  priority(jobClass: JobClass): number;
  /** pools by expected duration (fast / standard / heavy, the broker's default config), jobs routed by learned history; else one pool */
  pools: boolean;
  /** workers report the models they hold and the claim prefers warm ones (the broker's affinity settings, affinity_wait_s); else no reports */
  affinity: boolean;
  /** the planner (@emp/planning) prefetches models onto machines ahead of demand */
  planner: boolean;
  /** idle workers take jobs of other pools under their pool's fallback rules */
  fallback: boolean;
}

const priority = (jobClass: JobClass) => (jobClass === 'text' ? 10 : 0);

export const POLICIES: readonly Policy[] = [
  {
    name: 'baseline',
    description: 'one pool, priority + age (text jobs first), every worker takes any job and downloads its model when it lacks it',
    priority,
    pools: false,
    affinity: false,
    planner: false,
    fallback: false,
  },
  {
    name: 'pools',
    description: 'pools by expected duration (fast < 30 s, standard, heavy >= 3 min on 48 GB GPUs), each sized by its share of the work; jobs routed by learned durations',
    priority,
    pools: true,
    affinity: false,
    planner: false,
    fallback: false,
  },
  {
    name: 'affinity',
    description: 'pools + model affinity: workers report models loaded and on disk, a claim prefers the jobs whose model the worker holds (a wake-up goes to a holder first), a job older than 60 s outranks them',
    priority,
    pools: true,
    affinity: true,
    planner: false,
    fallback: false,
  },
  {
    name: 'planner',
    description: 'pools + affinity + the planner: per-model demand forecast, models prefetched onto machines before they are asked for',
    priority,
    pools: true,
    affinity: true,
    planner: true,
    fallback: false,
  },
  {
    name: 'fallback',
    description: 'pools + affinity + planner + cross-pool fallback: an idle worker takes another pool\'s job that has waited past its rule',
    priority,
    pools: true,
    affinity: true,
    planner: true,
    fallback: true,
  },
];

export const PLANNED_POLICIES = 'policies (a)-(e) of issue 14, in the order they stack';

export function policiesNamed(name: string): Policy[] {
  if (name === 'all') return [...POLICIES];
  const policy = POLICIES.find((p) => p.name === name);
  if (!policy) throw new Error(`no policy "${name}"; the policies are: ${POLICIES.map((p) => p.name).join(', ')} (or all)`);
  return [policy];
}
