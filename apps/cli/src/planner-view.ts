import type { PlacementCell, PlannerReport } from '@emp/core';
import { clockTime, table } from './format';

/** One character per cell of the placement matrix, as the legend says. */
const CELL_MARK: Record<PlacementCell, string> = { loaded: 'L', on_disk: 'D', downloading: 'v', planned: 'p', evicting: 'x', loading: 'l', absent: '.' };
const LEGEND = 'L loaded  D on disk  v downloading  p planned (prefetch sent)  x evicting  l loading (load into the idle GPU sent)  . absent';

const GB = 1024 ** 3;

/** `emp planner` as text: per pool, the capacity hint, the forecast, the placement matrix and the last decisions. */
export function plannerText(report: PlannerReport, options: { decisions?: number } = {}): string {
  const out: string[] = [];
  for (const pool of report.pools) {
    out.push(`pool ${pool.pool}: ${pool.run_at ? `planned ${clockTime(pool.run_at)}` : 'the planner has not run for this pool'}`);
    for (const problem of pool.problems) out.push(`  unreadable: ${problem}`);
    if (pool.capacity) {
      const c = pool.capacity;
      out.push(
        `  capacity hint: ${c.machines} machine${c.machines === 1 ? '' : 's'} (wait target ${((pool.wait_target_ms ?? 0) / 1_000).toFixed(1)} s` +
          (c.readyMachines !== undefined ? `; ready now: ${c.readyMachines})` : ')'),
      );
      out.push(`    ${c.explanation}`);
    }
    if (pool.forecast.length > 0) {
      out.push('', table(
        ['MODEL', 'FORECAST/5MIN', 'LAST 5MIN', 'LAST HOUR', 'METHOD'],
        pool.forecast.map((f) => [f.model, f.rate.toFixed(2), String(f.current), String(f.lastHour), f.method]),
      ));
    }
    const { models, machines } = pool.matrix;
    if (machines.length > 0 && models.length > 0) {
      out.push('', table(
        ['MACHINE', 'STATE', 'CACHE', ...models],
        machines.map((m) => [
          m.id,
          m.state ?? '-',
          m.budget_bytes !== undefined ? `${((m.used_bytes ?? 0) / GB).toFixed(1)}/${(m.budget_bytes / GB).toFixed(1)} GB` : '-',
          ...models.map((model) => CELL_MARK[m.cells[model] ?? 'absent']),
        ]),
      ), `  ${LEGEND}`);
    }
    const decisions = pool.decisions.slice(-(options.decisions ?? 10)).reverse();
    if (decisions.length > 0) {
      out.push('', table(['TIME', 'MACHINE', 'ACTION', 'MODEL', 'REASON'], decisions.map((d) => [clockTime(d.ts), d.machine, d.action, d.model, d.reason])));
    }
    out.push('');
  }
  return out.join('\n');
}
