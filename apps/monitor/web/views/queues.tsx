import type { QueueFlowSummary, QueueHistoryRange } from '@emp/core';
import { useMemo, useState } from 'react';
import type { Connection } from '../api/connection';
import { type MonitorStore, useMonitorState } from '../live/monitor-store';
import { type Sample, flowSeries, recentRate } from '../state/monitor-state';
import { CHART_COLORS, TimeChart } from './chart';
import { Empty, ShortId, href } from './common';
import { Stat } from './fleet';
import { count, duration } from './format';
import { PauseToggle } from './operator-actions';

/** A requirement class's definition in a few words: what a worker needs to take its jobs. */
function describeClass(definition: Record<string, unknown>): string {
  const parts = Object.entries(definition)
    .filter(([key]) => key !== 'service')
    .map(([key, value]) => `${key}=${typeof value === 'object' ? JSON.stringify(value) : String(value)}`);
  return parts.length === 0 ? 'no extra requirements' : parts.join(' · ');
}

/**
 * Throughput, waits and depth over the last hour (or day) from the API's queue
 * history, so the page shows them as soon as it opens; then per pool, service
 * and requirement class: depth and oldest-job age, charted, and their state now.
 */
export function QueuesView({ connection, store, now }: { connection: Connection; store: MonitorStore; now: number }) {
  const [range, setRange] = useState<QueueHistoryRange>('hour');
  const queues = useMonitorState(store, (s) => s.queues);
  const depth = useMonitorState(store, (s) => s.depth);
  const age = useMonitorState(store, (s) => s.age);
  const history = useMonitorState(store, (s) => s.history[range]);
  const hour = useMonitorState(store, (s) => s.history.hour);
  const series = useMemo(() => flowSeries(history), [history]);
  const summary = history?.summary?.all;
  const lastFive = recentRate(hour, 5 * 60_000);
  const span = range === 'hour' ? 'hour' : 'day';
  // the live hour's depth series (a sample every 5 s) where the hour is shown, the day's samples otherwise
  const serviceSeries = (pool: string, service?: string) => {
    if (range === 'hour') {
      const key = service === undefined ? pool : `${pool}/${service}`;
      const d = depth[key] ?? [];
      return { ts: d.map(([ts]) => ts), depth: d.map(([, v]) => v), oldestAge: (age[key] ?? []).map(([, v]) => v) };
    }
    return flowSeries(history, service === undefined ? { pool } : { pool, service });
  };

  if (!queues) return <Empty>Waiting for the first queue report…</Empty>;
  return (
    <section aria-label="queues">
      <div className="toolbar">
        <div className="segmented" role="group" aria-label="history range">
          {(['hour', 'day'] as const).map((r) => (
            <button key={r} type="button" aria-pressed={range === r} className={range === r ? 'active' : ''} onClick={() => setRange(r)}>
              last {r}
            </button>
          ))}
        </div>
        <span className="muted">{history ? `from the API's queue history, a sample every ${duration(history.interval_ms)}` : 'loading the queue history…'}</span>
      </div>
      <div className="summary" data-summary="queues">
        <Stat label="jobs/min, last 5 min" value={rate(lastFive)} />
        <Stat label={`jobs/min, last ${span}`} value={rate(summary && summary.covered_ms > 0 ? summary.jobs_per_min : undefined)} />
        <Stat label={`jobs ended, last ${span}`} value={summary ? count(finishedTotal(summary.finished)) : '–'} tone={summary?.finished.failed ? 'warn' : undefined} />
        <Stat label={`wait p50, last ${span}`} value={duration(summary?.wait?.p50_ms)} />
        <Stat label={`wait p95, last ${span}`} value={duration(summary?.wait?.p95_ms)} />
        <Stat label="queued now" value={count(queues.pools.reduce((sum, pool) => sum + pool.depth, 0))} />
      </div>
      <div className="charts">
        <figure className="panel">
          <figcaption>jobs ended per minute</figcaption>
          <TimeChart label="jobs per minute" ts={series.ts} lines={[{ label: 'jobs/min', values: series.perMin, color: CHART_COLORS.green }]} />
        </figure>
        <figure className="panel">
          <figcaption>wait, submit to start</figcaption>
          <TimeChart label="wait" unit="ms" ts={series.ts} lines={[{ label: 'p50', values: series.waitP50, color: CHART_COLORS.blue }, { label: 'p95', values: series.waitP95, color: CHART_COLORS.amber }]} />
        </figure>
        <figure className="panel">
          <figcaption>queued{range === 'day' ? ' (highest in each slot)' : ''}</figcaption>
          <TimeChart label="queued" ts={series.ts} lines={[{ label: 'queued', values: series.depth, color: CHART_COLORS.violet }]} />
        </figure>
      </div>
      {queues.pools.length === 0 && <Empty>No pool has seen a job yet.</Empty>}
      {queues.pools.map((pool) => (
        <div className="panel" key={pool.pool} data-pool={pool.pool}>
          <div className="panel-head">
            <h3>{pool.pool}</h3>
            <span className="muted">
              {pool.depth} queued · oldest {duration(pool.oldest_age_ms)} · {pool.on_timers} on timers · workers {pool.workers.idle} idle / {pool.workers.online} online / {pool.workers.offline} offline
              <PoolFlow flow={history?.summary?.pools.find((p) => p.pool === pool.pool)} span={span} />
            </span>
          </div>
          <table>
            <thead>
              <tr>
                <th>service</th>
                <th className="num">depth</th>
                <th className="num">oldest</th>
                <th>depth, last {span}</th>
                <th>oldest age, last {span}</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {pool.services.length === 0 && (
                <tr>
                  <td colSpan={6} className="muted">
                    nothing queued
                  </td>
                </tr>
              )}
              {pool.services.map((service) => {
                const key = `${pool.pool}/${service.service}`;
                const chart = serviceSeries(pool.pool, service.service);
                return (
                  <tr key={service.service} data-service={service.service}>
                    <td>
                      {service.service} {service.paused && <span className="badge tone-warn">paused</span>}
                    </td>
                    <td className="num">{service.depth}</td>
                    <td className="num">{duration(service.oldest_age_ms)}</td>
                    <td className="chart-cell">
                      <TimeChart compact height={28} label={`${key} depth`} ts={chart.ts} lines={[{ label: 'depth', values: chart.depth, color: CHART_COLORS.violet }]} />
                    </td>
                    <td className="chart-cell">
                      <TimeChart compact height={28} unit="ms" label={`${key} oldest age`} ts={chart.ts} lines={[{ label: 'oldest', values: chart.oldestAge, color: CHART_COLORS.amber }]} />
                    </td>
                    <td className="actions-cell">
                      <PauseToggle connection={connection} pool={pool.pool} service={service.service} paused={service.paused} />
                    </td>
                  </tr>
                );
              })}
              {pool.paused
                .filter((p) => !pool.services.some((s) => s.service === p.service))
                .map((p) => (
                  <tr key={`paused-${p.service}`}>
                    <td>
                      {p.service} <span className="badge tone-warn">paused</span> <span className="muted">{p.reason}</span>
                    </td>
                    <td className="num">0</td>
                    <td className="num">–</td>
                    <td />
                    <td />
                    <td className="actions-cell">
                      <PauseToggle connection={connection} pool={pool.pool} service={p.service} paused />
                    </td>
                  </tr>
                ))}
            </tbody>
          </table>
          {pool.classes.length > 0 && (
            <details>
              <summary>
                {pool.classes.length} requirement class{pool.classes.length === 1 ? '' : 'es'}
              </summary>
              <table>
                <thead>
                  <tr>
                    <th>class</th>
                    <th>needs</th>
                    <th className="num">depth</th>
                    <th className="num">oldest</th>
                    <th>depth, last hour</th>
                    <th>head job</th>
                  </tr>
                </thead>
                <tbody>
                  {pool.classes.map((cls) => (
                    <tr key={cls.requirement_class}>
                      <td>
                        <ShortId value={cls.requirement_class} keep={10} /> {!cls.routable && <span className="badge tone-bad" title="no registered worker can run these jobs">no worker can run</span>}
                      </td>
                      <td>
                        {String(cls.definition.service ?? '')} <span className="muted">{describeClass(cls.definition)}</span>
                      </td>
                      <td className="num">{cls.depth}</td>
                      <td className="num">{duration(cls.oldest_age_ms)}</td>
                      <td className="chart-cell">
                        <ClassDepth samples={depth[`${pool.pool}/#${cls.requirement_class}`] ?? []} />
                      </td>
                      <td>{cls.head_job ? <ShortId value={cls.head_job} href={href('jobs', cls.head_job)} /> : '–'}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </details>
          )}
        </div>
      ))}
    </section>
  );
}

function rate(perMin: number | undefined): string {
  return perMin === undefined ? '–' : perMin < 10 ? perMin.toFixed(1) : String(Math.round(perMin));
}

function finishedTotal(counts: QueueFlowSummary['finished']): number {
  return Object.values(counts).reduce((sum, n) => sum + (n ?? 0), 0);
}

/** A pool's throughput and waits over the range, beside its state now. */
function PoolFlow({ flow, span }: { flow: (QueueFlowSummary & { pool: string }) | undefined; span: string }) {
  if (!flow) return null;
  return (
    <span data-pool-flow>
      {' '}
      · {rate(flow.covered_ms > 0 ? flow.jobs_per_min : undefined)} jobs/min, wait p50 {duration(flow.wait?.p50_ms)} / p95 {duration(flow.wait?.p95_ms)} (last {span})
    </span>
  );
}

function ClassDepth({ samples }: { samples: readonly Sample[] }) {
  return <TimeChart compact height={28} label="class depth" ts={samples.map(([ts]) => ts)} lines={[{ label: 'depth', values: samples.map(([, v]) => v), color: CHART_COLORS.violet }]} />;
}
