import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';
import { SimulationConfig } from './config';
import { FIT_STEPS, type FitRow, fitPolicy, fitVerdict, formatFit } from './fit';
import { simulate } from './index';
import { RunSlots, runRequest } from './parallel';
import { plotSvg } from './plot';
import { POLICIES } from './policies';
import { type PolicyReport, summarise } from './report';
import { runPolicy } from './simulation';
import { evaluateTargets, meetsWaitTargets } from './targets';
import { generateWorkload } from './workload';

/** a small fleet under a light load: a few hundred jobs in a simulated hour */
const small = { workload: { peak_jobs_per_hour: 700 } };

/**
 * Text jobs on machines that boot at once and download in a blink: what is left
 * of a wait is queueing and the two text models' loads, so a fleet of a few
 * machines meets the wait targets and a smaller one does not.
 */
const quick = SimulationConfig.parse({
  workload: { peak_jobs_per_hour: 3000, mix: { image: 0, text: 1, video: 0 } },
  fleet: { preemptions_per_hour: 0, boot_s: { min: 0, max: 0 }, types: [{ gpu: 'a100-80gb', gpu_memory_gb: 80, disk_gb: 500, download_mb_s: 100_000, weight: 1 }] },
});

describe('the report', () => {
  it('groups waits by the pool each job record names (the one-pool baseline: sim), and gives each hour its wait p95', async () => {
    const config = SimulationConfig.parse(small);
    const workload = generateWorkload(config.workload, 2, 4);
    const outcome = await runPolicy({ policy: POLICIES[0]!, config, workload, hours: 2, seed: 4, machines: 5 });
    const report = summarise(outcome);
    expect(Object.keys(report.pools)).toEqual(['sim']);
    expect(report.pools.sim!.jobs).toBe(report.jobs);
    expect(report.hourly.map((h) => h.from_hour)).toEqual([0, 1]);
    for (const hour of report.hourly) expect(hour.wait_p95_s).not.toBeNull();

    // a routing policy sets `pool` on its job records: the report follows it
    const routed = { ...outcome, jobs: outcome.jobs.map((j) => ({ ...j, pool: j.job.jobClass === 'text' ? 'fast' : 'standard' })) };
    const byPool = summarise(routed);
    expect(Object.keys(byPool.pools)).toEqual(['fast', 'standard']);
    expect(byPool.pools.fast!.jobs).toBe(outcome.jobs.filter((j) => j.job.jobClass === 'text').length);
    expect(byPool.pools.fast!.jobs + byPool.pools.standard!.jobs).toBe(report.jobs);
    expect(byPool.pools.fast).toEqual(byPool.classes.text);
  });
});

describe('the targets', () => {
  const report = (pools: Record<string, number | null>, extra: Partial<PolicyReport> = {}): PolicyReport =>
    ({
      name: 'pools',
      lost: 0,
      completion_rate_settled: 1,
      download_wait_s: 50,
      pools: Object.fromEntries(Object.entries(pools).map(([p, w]) => [p, { jobs: 10, completed: 10, wait_p50_s: w, wait_p95_s: w, wait_p99_s: w }])),
      ...extra,
    }) as PolicyReport;
  const baseline = { name: 'baseline', download_wait_s: 1000 } as PolicyReport;

  it('marks each row met or not, and n/a where it does not apply', () => {
    const rows = evaluateTargets(report({ fast: 1.5, standard: 8 }), { preemptionsPerHour: 0.1, hours: 24, baseline });
    expect(rows.map((r) => [r.target, r.value, r.met])).toEqual([
      ['fast-lane p95 wait < 2 s', 1.5, true],
      ['every pool p95 wait < 10 s', 8, true],
      ['completion >= 99.99%', 1, true],
      ['download wait >= 90% below baseline', 0.95, true],
    ]);
    expect(rows[2]!.note).toBe("jobs submitted before the run's last 10 min; 0.1 preemptions per machine-hour; lost 0");
    expect(meetsWaitTargets(report({ fast: 1.5, standard: 8 }))).toBe(true);

    const slow = evaluateTargets(report({ fast: 2, standard: 12, video: null }, { completion_rate_settled: 0.9998, download_wait_s: 150 }), { preemptionsPerHour: 0.1, hours: 24, baseline });
    expect(slow.map((r) => r.met)).toEqual([false, false, false, false]);
    expect(slow[1]!.note).toBe('worst pool video'); // a pool where no job started is the worst
    expect(meetsWaitTargets(report({ fast: 2, standard: 8 }))).toBe(false);
    expect(meetsWaitTargets(report({ standard: 8 }, { lost: 1 }))).toBe(false);

    const alone = evaluateTargets(report({ sim: 5 }), { preemptionsPerHour: 0.05, hours: 0.25 });
    expect(alone[0]).toMatchObject({ value: null, met: null, note: 'n/a: the policy has no fast pool' });
    expect(alone[2]!.note).toMatch(/^jobs submitted before the run's last 7.5 min;/);
    expect(alone[3]).toMatchObject({ value: null, met: null, note: 'n/a: the baseline did not run in this invocation' });
    expect(meetsWaitTargets(report({ sim: 5 }))).toBe(true);
  });

  it('come with every run, the baseline being the download reference', async () => {
    const { targets } = await simulate({ policy: 'baseline', seed: 3, hours: 0.25, machines: 3, config: small });
    expect(targets.map((t) => t.target)).toEqual(['fast-lane p95 wait < 2 s', 'every pool p95 wait < 10 s', 'completion >= 99.99%', 'download wait >= 90% below baseline']);
    expect(targets.every((t) => t.policy === 'baseline')).toBe(true);
    expect(targets[3]).toMatchObject({ met: null, note: 'n/a: the reference' });
    expect(typeof targets[1]!.met).toBe('boolean');
  });
});

describe('--plot', () => {
  it('draws an SVG with a wait line and a fleet line per policy, named in the legend', async () => {
    const config = SimulationConfig.parse(small);
    const workload = generateWorkload(config.workload, 2, 2);
    const request = { policy: 'baseline', config, workload, hours: 2, seed: 2, machines: 3 };
    // a second series: the same policy on twice the fleet, under its own name
    const series = [await runRequest(request), { ...(await runRequest({ ...request, fleetScale: 2 })), name: 'baseline-2x' }];
    const svg = await plotSvg({ policies: series, seed: 2, hours: 2 });
    expect(XMLValidator.validate(svg)).toBe(true);
    const lines = [...svg.matchAll(/<path [^>]*aria-roledescription="line mark"/g)].map((m) => m[0]);
    for (const name of ['baseline', 'baseline-2x']) {
      // one line in each panel: its aria-label names the first point's axes and the policy
      expect(lines.filter((l) => l.includes(`policy: ${name}"`) && l.includes('wait p95'))).toHaveLength(1);
      expect(lines.filter((l) => l.includes(`policy: ${name}"`) && l.includes('machines up'))).toHaveLength(1);
      expect(svg).toContain(`>${name}</text>`);
    }
    expect(lines).toHaveLength(4);
    const text = JSON.stringify(new XMLParser().parse(svg));
    for (const label of ['emp simulate: seed 2, 2 h', 'wait p95 (s, log scale)', 'machines up (mean over the hour)', 'target: every pool p95 < 10 s']) expect(text).toContain(label);
  });
});

describe('--fit', () => {
  it('finds the smallest fleet scale that meets the wait targets by bisection, each step a full run', async () => {
    const workload = generateWorkload(quick.workload, 0.5, 3);
    const request = { policy: 'baseline', config: quick, workload, hours: 0.5, seed: 3, machines: 8 };
    const steps = FIT_STEPS - 2; // a coarser search than the command's, for time
    const fit = await fitPolicy(request, new RunSlots(1), undefined, steps);
    expect(fit.met).toBe(true);
    expect(fit.runs).toBe(2 + steps); // scale 1 meets them, 0.25 does not, then the halvings
    expect(fit.scale).toBeGreaterThan(0.25);
    expect(fit.scale).toBeLessThan(1);
    const at = await runRequest({ ...request, fleetScale: fit.scale! });
    expect(meetsWaitTargets(at)).toBe(true);
    expect(fit.machine_hours).toBe(at.machine_hours);
    expect(meetsWaitTargets(await runRequest({ ...request, fleetScale: 0.25 }))).toBe(false);
  });

  it('says so when even three times the fleet does not meet them', async () => {
    const { fit, fit_verdict } = await simulate({ policy: 'baseline', seed: 1, hours: 0.25, machines: 2, config: small, fit: true });
    expect(fit).toEqual([{ policy: 'baseline', scale: null, machine_hours: null, met: false, runs: 2, machine_hours_at_max: expect.any(Number) }]);
    // 3x of 2 machines for a quarter of an hour, less what boots late
    expect(fit![0]!.machine_hours_at_max).toBeGreaterThan(0);
    expect(fit![0]!.machine_hours_at_max).toBeLessThanOrEqual(6 * 0.25);
    expect(fit_verdict).toMatchObject({ best: null, met: false, note: 'no policy but the baseline meets the wait targets within 3x' });
  });

  it('states the best policy\'s saving: exact against a fitted baseline, a bound against one that cannot within 3x', () => {
    const row = (policy: string, machine_hours: number | null, machine_hours_at_max: number | null = null): FitRow => ({
      policy, scale: machine_hours === null ? null : 1, machine_hours, met: machine_hours !== null, runs: 2, machine_hours_at_max,
    });
    expect(fitVerdict([row('baseline', 1000), row('pools', 800), row('planner', 650)])).toMatchObject({ best: 'planner', fewer_pct: 35, at_least: false, met: true });
    expect(fitVerdict([row('baseline', 1000), row('planner', 750)])).toMatchObject({ best: 'planner', fewer_pct: 25, met: false });
    const bound = fitVerdict([row('baseline', null, 2160), row('affinity', null, 2160), row('planner', 1350.81), row('fallback', 1350.74)]);
    expect(bound).toMatchObject({ best: 'fallback', fewer_pct: 37.5, at_least: true, met: true, target_pct: 30 });
    expect(bound.note).toBe('fallback: 1350.74 machine-hours, at least 37.5% fewer than the baseline, which cannot within 3x (its 3x run: 2160)');
    expect(fitVerdict([row('planner', 700)])).toMatchObject({ best: 'planner', fewer_pct: null, met: false });
    expect(formatFit([row('baseline', null, 2000), row('planner', 1000)])).toContain('>=50.0% fewer');
  });
});
