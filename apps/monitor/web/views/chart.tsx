import { useEffect, useRef } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { duration } from './format';

/** One line of a chart: its values at the chart's times (null: no value there, a gap). */
export interface ChartLine {
  label: string;
  values: ReadonlyArray<number | null>;
  color: string;
}

export const CHART_COLORS = { blue: '#3b82f6', amber: '#f59e0b', green: '#10b981', red: '#ef4444', violet: '#8b5cf6' } as const;

/**
 * A time chart drawn by uPlot on a canvas: `compact` for a table cell (no axes,
 * no legend), else with axes, a legend and a cursor that reads each value.
 * `unit: 'ms'` formats values as durations. Times are ms since the epoch.
 */
export function TimeChart({ ts, lines, label, height = 140, compact = false, unit }: { ts: readonly number[]; lines: readonly ChartLine[]; label: string; height?: number; compact?: boolean; unit?: 'ms' }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | undefined>(undefined);
  const data = (): uPlot.AlignedData => [ts.map((t) => t / 1_000), ...lines.map((line) => [...line.values])];
  const shape = `${lines.map((l) => l.label).join('|')}:${compact}:${height}:${unit ?? ''}`;

  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const format = (value: number | null) => (value === null || value === undefined ? '–' : unit === 'ms' ? duration(value) : String(Math.round(value * 10) / 10));
    const options: uPlot.Options = {
      width: Math.max(compact ? 100 : 200, element.clientWidth),
      height,
      legend: { show: !compact },
      padding: compact ? [2, 2, 2, 2] : undefined,
      cursor: compact ? { show: false } : { drag: { x: false, y: false } },
      axes: compact ? [{ show: false }, { show: false }] : [{ stroke: 'currentColor', grid: { stroke: 'rgba(128,128,128,0.15)' } }, { stroke: 'currentColor', grid: { stroke: 'rgba(128,128,128,0.15)' }, values: (_u, values) => values.map((v) => format(v)), size: 60 }],
      scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min ?? 0), Math.max(1, max ?? 1)] } },
      series: [{}, ...lines.map((line) => ({ label: line.label, stroke: line.color, width: compact ? 1.25 : 1.5, fill: compact ? `${line.color}22` : undefined, spanGaps: false, value: (_u: uPlot, v: number | null) => format(v) }))],
    };
    plot.current = new uPlot(options, data(), element);
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(compact ? 100 : 200, element.clientWidth), height }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = undefined;
    };
    // rebuilt only when the lines or the layout change; new values go through setData below
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [shape]);

  useEffect(() => {
    plot.current?.setData(data());
  });

  const last = lines.map((line) => `${line.label} ${line.values.at(-1) ?? '–'}`).join(', ');
  return <div ref={box} className={compact ? 'chart chart-compact' : 'chart'} role="img" aria-label={`${label}: ${last}`} title={compact ? `${label}: ${last}` : undefined} data-chart={label} />;
}
