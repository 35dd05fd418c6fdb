import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runEmp } from './testing/emp-process';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emp-simulate-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** a quarter of an hour from midnight on two machines: seconds of wall time */
const tiny = ['simulate', '--policy', 'baseline', '--seed', '1', '--hours', '0.25', '--machines', '2'];

describe('emp simulate (the build, as a user runs it)', () => {
  it('--plot writes the SVG and --fit adds the fleet search; --json keeps the documented fields and adds targets and fit', async () => {
    const plot = join(dir, 'day.svg');
    const result = await runEmp([...tiny, '--plot', plot, '--fit', '--json'], {}, 120_000);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const out = JSON.parse(result.stdout) as { policies: Array<Record<string, unknown>>; targets: Array<Record<string, unknown>>; fit: Array<Record<string, unknown>>; fit_verdict: Record<string, unknown> };
    const [baseline] = out.policies;
    for (const field of ['name', 'jobs', 'completed', 'lost', 'completion_rate', 'wait_p50_s', 'wait_p95_s', 'wait_p99_s', 'download_wait_s', 'machine_hours', 'pools']) expect(baseline).toHaveProperty(field);
    expect(out.targets.map((t) => Object.keys(t).sort())).toEqual(Array(4).fill(['met', 'note', 'policy', 'target', 'value']));
    expect(out.fit).toEqual([{ policy: 'baseline', scale: null, machine_hours: null, met: false, runs: 2, machine_hours_at_max: expect.any(Number) }]);
    expect(out.fit_verdict).toMatchObject({ best: null, met: false, target_pct: 30 });
    const svg = await readFile(plot, 'utf8');
    expect(svg).toMatch(/^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"[\s\S]*<\/svg>$/); // the simulator's tests parse it as XML
    expect(svg).toContain('emp simulate: seed 1, 0.25 h');
  });

  it('prints the targets table after the policies, and the fit table with --fit', async () => {
    const result = await runEmp([...tiny, '--fit'], {}, 120_000);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^targets\npolicy +target +value +met +note$/m);
    expect(result.stdout).toMatch(/^baseline +every pool p95 wait < 10 s +[\d.]+ s +(met|NOT met) +worst pool sim$/m);
    expect(result.stdout).toMatch(/^baseline +download wait >= 90% below baseline +- +n\/a +n\/a: the reference$/m);
    expect(result.stdout.indexOf('targets')).toBeGreaterThan(result.stdout.indexOf('policy baseline'));
    expect(result.stdout).toMatch(/^baseline +cannot within 3x +- +- +2$/m);
    expect(result.stdout).toMatch(/^best policy >= 30% fewer machine-hours than the baseline: not met \(no policy but the baseline meets the wait targets within 3x\)$/m);
  });

  it('--plot into a folder that does not exist: exit 2, the path and why, no stack trace', async () => {
    const result = await runEmp([...tiny, '--plot', join(dir, 'missing', 'day.svg')], {}, 120_000);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^error: --plot .*missing\/day\.svg: ENOENT/m);
    expect(result.stderr).not.toMatch(/^\s+at /m);
  });
});
