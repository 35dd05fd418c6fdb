import { Broker } from '@emp/core';
import { startRedis } from '@emp/core/redis-server';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { SimulationConfig } from './config';
import { simulate } from './index';
import { POLICIES } from './policies';
import { VIRTUAL_EPOCH_MS, runPolicy } from './simulation';
import { TraceError, parseTrace } from './trace';
import { IMAGE_MODEL_SHARES, generateWorkload, imageModelWeights } from './workload';

/** a small fleet under a light load: a few hundred jobs in a simulated hour */
const small = { workload: { peak_jobs_per_hour: 700 } };

describe('the fleet simulator', () => {
  it('runs a simulated hour against the real broker, losing no job', async () => {
    const { policies } = await simulate({ policy: 'baseline', seed: 7, hours: 1, machines: 6, config: small });
    const [baseline] = policies;
    expect(baseline!.jobs).toBeGreaterThan(100);
    expect(baseline!.lost).toBe(0);
    expect(baseline!.completed).toBeGreaterThan(0);
    expect(baseline!.machine_hours).toBeGreaterThan(5);
    expect(baseline!.hourly).toHaveLength(1);
    expect(baseline!.hourly[0]!.occupancy).toBeGreaterThanOrEqual(baseline!.hourly[0]!.gpu_utilisation);
    expect(baseline!.hourly[0]!.occupancy).toBeLessThanOrEqual(1);
    expect(baseline!.peak).toBeNull(); // an hour from midnight does not reach the 16:00 peak
  });

  it('runs the five policies on the same workload: pools route by learned durations, affinity finds models loaded more often, the planner prefetches, fallback borrows, and none loses a job', async () => {
    // a light load, so that workers are sometimes idle and can borrow
    const { policies } = await simulate({ policy: 'all', seed: 2, hours: 2, machines: 10, config: small });
    const by = Object.fromEntries(policies.map((p) => [p.name, p]));
    expect(policies.map((p) => p.name)).toEqual(['baseline', 'pools', 'affinity', 'planner', 'fallback']);
    for (const policy of policies) expect(policy.lost).toBe(0);
    const pools = by.pools!;
    expect(Object.keys(pools.pools).sort()).toEqual(['fast', 'heavy', 'standard']);
    // text jobs (1-5 s) learned as fast; video (5-10 min) as heavy
    expect(pools.pools.fast!.jobs).toBeGreaterThanOrEqual(0.9 * pools.classes.text!.jobs);
    expect(pools.pools.heavy!.jobs).toBeGreaterThanOrEqual(0.5 * pools.classes.video!.jobs);
    expect(pools.classes.text!.wait_p95_s!).toBeLessThan(by.baseline!.classes.text!.wait_p95_s!);
    expect(pools.download_wait_s).toBeLessThan(by.baseline!.download_wait_s);
    expect(by.affinity!.model_hits.warm).toBeGreaterThan(pools.model_hits.warm);
    expect(by.planner!.planner_prefetches).toBeGreaterThan(0);
    // the planner's warm loads (into idle GPUs) are (d)'s and (e)'s only
    expect(by.planner!.planner_loads).toBeGreaterThan(0);
    expect(by.fallback!.planner_loads).toBeGreaterThan(0);
    for (const name of ['baseline', 'pools', 'affinity']) expect(by[name]!.planner_loads).toBe(0);
    expect(by.fallback!.fallback_claims).toBeGreaterThan(0);
    for (const name of ['baseline', 'pools', 'affinity', 'planner']) expect(by[name]!.fallback_claims).toBe(0);
  });

  it('gives the same table for the same seed, and another for another seed', async () => {
    const run = (seed: number) => simulate({ policy: 'all', seed, hours: 0.5, machines: 4, config: small });
    const first = await run(11);
    expect(await run(11)).toEqual(first);
    expect(await run(12)).not.toEqual(first);
  });

  it('requeues the jobs of preempted machines, with and without notice, and loses none', async () => {
    const config = SimulationConfig.parse({ ...small, fleet: { preemptions_per_hour: 3, notice_share: 0.5 } });
    const workload = generateWorkload(config.workload, 1, 5);
    const outcome = await runPolicy({ policy: POLICIES[0]!, config, workload, hours: 1, seed: 5, machines: 6 });
    expect(outcome.preemptions).toBeGreaterThan(5);
    expect(outcome.requeued).toBeGreaterThan(0);
    expect(outcome.lost).toEqual([]);
    expect(outcome.failed).toEqual([]);
    expect(outcome.jobs.some((j) => j.attempts > 1 && j.completedAtMs !== undefined)).toBe(true);
  });

  it('gives the same run when it ticks only where something is due and leaves out the heartbeats no tick can tell from none', async () => {
    // frequent interruptions (reaped leases, workers gone silent) on a fleet with idle machines to take requeued jobs at once,
    // and a shrinking fleet (retirements) with borrowing
    const cases = [
      { policy: POLICIES[0]!, machines: 8, config: SimulationConfig.parse({ ...small, fleet: { preemptions_per_hour: 4, notice_share: 0.3 } }) },
      {
        policy: POLICIES[4]!,
        config: SimulationConfig.parse({ workload: { peak_jobs_per_hour: 1_400, trough_hour: 2 }, fleet: { min_machines: 2, max_machines: 10, preemptions_per_hour: 3, notice_share: 0.5 } }),
      },
    ];
    for (const { policy, machines, config } of cases) {
      const workload = generateWorkload(config.workload, 1, 3);
      // every job's start, completion and attempts, every machine's record (job ids are drawn at random: left out)
      const run = async (reference: boolean) => {
        const { jobs, ...outcome } = await runPolicy({ policy, config, workload, hours: 1, seed: 3, machines, reference });
        return { ...outcome, jobs: jobs.map(({ id: _, ...job }) => job) };
      };
      const reference = await run(true);
      expect(reference.preemptions).toBeGreaterThan(5);
      expect(reference.requeued).toBeGreaterThan(0);
      expect(await run(false)).toEqual(reference);
    }
  });
});

describe("the planner's warm loads", () => {
  it('load models into idle GPUs, and the run stays the same for the same seed, with every tick and heartbeat or without', async () => {
    const config = SimulationConfig.parse({ ...small, fleet: { preemptions_per_hour: 1 } });
    const workload = generateWorkload(config.workload, 2, 4);
    const run = async (reference: boolean) => {
      const { jobs, ...outcome } = await runPolicy({ policy: POLICIES[3]!, config, workload, hours: 2, seed: 4, machines: 10, reference });
      return { ...outcome, jobs: jobs.map(({ id: _, ...job }) => job) };
    };
    const first = await run(false);
    expect(first.plannerLoads).toBeGreaterThan(0);
    expect(first.lost).toEqual([]);
    expect(await run(false)).toEqual(first);
    expect(await run(true)).toEqual(first);
  });
});

describe('the virtual clock', () => {
  it('stays inside the simulator: a broker without one stamps jobs with Redis TIME', async () => {
    const server = await startRedis();
    const redis = new Redis(server.url);
    try {
      const broker = await Broker.connect({ redis });
      expect(broker.clock).toBeUndefined();
      const { id } = await broker.submit({ service: 'simulation' });
      const job = await broker.getJob(id);
      expect(Math.abs(job!.timestamps.submitted_at - Date.now())).toBeLessThan(60_000);
      expect(VIRTUAL_EPOCH_MS - Date.now()).toBeGreaterThan(50 * 365 * 86_400_000); // a virtual stamp could never pass for a real one
    } finally {
      redis.disconnect();
      await server.stop();
    }
  });
});

describe('the workload', () => {
  it('matches the published model popularity: top 1 / 5 / 10 models serve 31% / 70% / 87%', () => {
    const weights = imageModelWeights();
    const top = (n: number) => weights.slice(0, n).reduce((a, b) => a + b, 0);
    expect(weights).toHaveLength(87);
    expect(top(1)).toBeCloseTo(IMAGE_MODEL_SHARES.top1, 6);
    expect(top(5)).toBeCloseTo(IMAGE_MODEL_SHARES.top5, 6);
    expect(top(10)).toBeCloseTo(IMAGE_MODEL_SHARES.top10, 6);
    expect(top(87)).toBeCloseTo(1, 6);
  });

  it('is calibrated to ~30,000 jobs a day, video a few percent of jobs but half the execution seconds (docs/simulator.md)', () => {
    const jobs = generateWorkload(SimulationConfig.parse({}).workload, 24, 1);
    expect(jobs.length).toBeGreaterThan(28_500);
    expect(jobs.length).toBeLessThan(31_500);
    const seconds = (cls?: string) => jobs.filter((j) => !cls || j.jobClass === cls).reduce((s, j) => s + j.durationMs / 1000, 0);
    expect(seconds() / jobs.length).toBeGreaterThan(41); // mean execution per job, 43.2 s expected
    expect(seconds() / jobs.length).toBeLessThan(46);
    expect(seconds('video') / seconds()).toBeGreaterThan(0.45);
  });

  it('draws image execution times near the published p50 23 s / p90 53 s', () => {
    const config = SimulationConfig.parse({ workload: { peak_jobs_per_hour: 20_000, mix: { image: 1, text: 0, video: 0 } } });
    const seconds = generateWorkload(config.workload, 24, 1).map((j) => j.durationMs / 1000).sort((a, b) => a - b);
    const q = (p: number) => seconds[Math.floor(p * seconds.length)]!;
    expect(q(0.5)).toBeGreaterThan(21);
    expect(q(0.5)).toBeLessThan(25);
    expect(q(0.9)).toBeGreaterThan(49);
    expect(q(0.9)).toBeLessThan(57);
    expect(seconds.at(-1)).toBeLessThanOrEqual(570);
  });
});

describe('a CSV trace', () => {
  it('reads jobs in arrival order', () => {
    const jobs = parseTrace('arrival_s,service,model,duration_s,tenant\n5,comfyui,sd-01,20,acme\n# a comment\n1.5,ollama,llm-8b,2,acme\n');
    expect(jobs.map((j) => [j.arrivalMs, j.jobClass])).toEqual([[1500, 'text'], [5000, 'image']]);
  });

  it('names the file, line and column of every bad field', () => {
    const text = 'arrival_s,service,model,duration_s,tenant,class\n1,comfyui,sd-01,20,acme,image\nsoon,comfyui,sd-01,20,acme,\n3,comfyui,sd-01,-4,acme,movie\n4,comfyui,sd-01\n';
    expect(() => parseTrace(text, 'day.csv')).toThrow(TraceError);
    let message = '';
    try {
      parseTrace(text, 'day.csv');
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain('day.csv:3: arrival_s:');
    expect(message).toContain('day.csv:4: duration_s: expected 0 or more');
    expect(message).toContain('day.csv:4: class:');
    expect(message).toContain('day.csv:5: 3 fields; expected 6');
  });

  it('refuses a file whose header is not the trace columns', () => {
    expect(() => parseTrace('time,service\n1,comfyui\n', 't.csv')).toThrow(/t\.csv:1: the header is "time,service"/);
  });
});
