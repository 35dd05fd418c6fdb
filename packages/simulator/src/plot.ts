import type { PolicyReport } from './report';
import { FAST_P95_S, POOL_P95_S } from './targets';

export interface PlotInput {
  policies: PolicyReport[];
  seed: number;
  hours: number;
}

/** Waits below this are drawn at it: the wait panel's scale is logarithmic. */
const FLOOR_S = 0.1;
const TARGET_LINES = [
  { wait_s: POOL_P95_S, label: `target: every pool p95 < ${POOL_P95_S} s` },
  { wait_s: FAST_P95_S, label: `target: fast lane p95 < ${FAST_P95_S} s` },
];

/**
 * `--plot out.svg`: two panels over the simulated hours, one line per policy:
 * the p95 wait of the jobs submitted in each hour (log scale) above the
 * machines up in that hour. Drawn by Vega-Lite and rendered to SVG by Vega in
 * Node (no browser, no canvas); both load here, on first use, so `emp` starts
 * without them.
 */
export async function plotSvg(input: PlotInput): Promise<string> {
  const [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
  const policies = input.policies.map((p) => p.name);
  const rows = input.policies.flatMap((p) =>
    p.hourly.map((h) => ({ policy: p.name, hour: h.from_hour, wait_p95_s: h.wait_p95_s === null ? null : Math.max(FLOOR_S, h.wait_p95_s), machines: h.machines })),
  );
  const x = { field: 'hour', type: 'quantitative', title: 'simulated hour (from midnight; each point: the jobs submitted in that hour)', axis: { tickMinStep: 1 } } as const;
  const color = { field: 'policy', type: 'nominal', title: 'policy', scale: { domain: policies }, legend: { orient: 'right' } } as const;
  const panel = { width: 640, height: 220, mark: { type: 'line', point: true, strokeWidth: 2 } } as const;
  const spec: import('vega-lite').TopLevelSpec = {
    title: { text: `emp simulate: seed ${input.seed}, ${input.hours} h`, subtitle: `policies: ${policies.join(', ')}` },
    data: { values: rows },
    vconcat: [
      {
        width: panel.width,
        height: panel.height,
        layer: [
          {
            mark: panel.mark,
            transform: [{ filter: 'datum.wait_p95_s !== null' }],
            encoding: { x, color, y: { field: 'wait_p95_s', type: 'quantitative', title: 'wait p95 (s, log scale)', scale: { type: 'log' } } },
          },
          // the targets (docs/simulator.md, "Targets"), as dashed rules to read the lines against
          {
            data: { values: TARGET_LINES },
            mark: { type: 'rule', strokeDash: [4, 4], color: '#888' },
            encoding: { y: { field: 'wait_s', type: 'quantitative' } },
          },
          {
            data: { values: TARGET_LINES },
            mark: { type: 'text', align: 'left', dx: 4, dy: -6, color: '#666', fontSize: 10 },
            encoding: { y: { field: 'wait_s', type: 'quantitative' }, x: { value: 0 }, text: { field: 'label' } },
          },
        ],
      },
      { ...panel, encoding: { x, color, y: { field: 'machines', type: 'quantitative', title: 'machines up (mean over the hour)' } } },
    ],
    config: { font: 'sans-serif' },
  };
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
