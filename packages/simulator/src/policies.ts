import type { JobClass } from './workload';

/**
 * A way of running the fleet that the simulator compares with others on the
 * same workload and seed. Only the baseline exists so far; the planner's
 * policies (pools, prefetch, placement: (b)-(e) of issue 14) arrive with issue 13.
 */
export interface Policy {
  name: string;
  description: string;
  /** the priority a job of this class is submitted with (higher runs first; equal ones by age) */
  priority(jobClass: JobClass): number;
}

export const POLICIES: readonly Policy[] = [
  {
    name: 'baseline',
    description: 'one pool, priority + age (text jobs first), every worker takes any job and downloads its model when it lacks it',
    priority: (jobClass) => (jobClass === 'text' ? 10 : 0),
  },
];

export const PLANNED_POLICIES = 'the pool, prefetch and placement policies ((b)-(e) of issue 14) arrive with the planner (issue 13)';

export function policiesNamed(name: string): Policy[] {
  if (name === 'all') return [...POLICIES];
  const policy = POLICIES.find((p) => p.name === name);
  if (!policy) throw new Error(`no policy "${name}"; the policies are: ${POLICIES.map((p) => p.name).join(', ')} (or all); ${PLANNED_POLICIES}`);
  return [policy];
}
