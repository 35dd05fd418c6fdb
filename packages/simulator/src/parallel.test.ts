import { describe, expect, it } from 'vitest';
import { SimulationConfig } from './config';
import { startOrder } from './index';
import { POLICIES } from './policies';
import { RunSlots, runInChild, runRequest } from './parallel';
import { generateWorkload } from './workload';

const config = SimulationConfig.parse({ workload: { peak_jobs_per_hour: 700 }, fleet: { preemptions_per_hour: 2 } });
const workload = generateWorkload(config.workload, 0.5, 9);
const request = { policy: 'baseline', config, workload, hours: 0.5, seed: 9, machines: 4 };

describe('the parallel runner', () => {
  it('gives a child process run the same report as a run in this process', async () => {
    const here = await runRequest(request);
    expect(here.jobs).toBeGreaterThan(50);
    expect(here.preemptions).toBeGreaterThan(0);
    expect(await runInChild(request)).toEqual(here);
  });

  it('runs several at once, each report the same as when run alone, in the order asked for', async () => {
    const requests = [request, { ...request, fleetScale: 2 }, { ...request, seed: 10 }];
    const alone = [];
    for (const r of requests) alone.push(await runRequest(r));
    const slots = new RunSlots(2);
    expect(slots.inProcess).toBe(false);
    expect(await Promise.all(requests.map((r) => slots.run(r)))).toEqual(alone);
    expect(alone[0]).not.toEqual(alone[1]);
  });

  it('starts the costliest policies first (the most parts), the baseline last, ties in the order asked for', () => {
    expect(startOrder(POLICIES).map((i) => POLICIES[i]!.name)).toEqual(['fallback', 'planner', 'affinity', 'pools', 'baseline']);
    expect(startOrder([POLICIES[0]!, POLICIES[2]!, POLICIES[1]!])).toEqual([1, 2, 0]);
    expect(startOrder([POLICIES[1]!, { ...POLICIES[1]!, name: 'pools-again' }])).toEqual([0, 1]);
  });

  it('reports a run that fails in its child with the policy and the reason', async () => {
    await expect(runInChild({ ...request, policy: 'no-such-policy' })).rejects.toThrow(/no-such-policy: no policy "no-such-policy"/);
  });
});
