import { useMemo } from 'react';
import type { Connection } from '../api/connection';
import { type MonitorStore, useMonitorState } from '../live/monitor-store';
import { HOUR_MS, percentile, throughputSeries } from '../state/monitor-state';
import { Empty, Sparkline, href } from './common';
import { Stat } from './fleet';
import { duration } from './format';
import { PauseToggle } from './operator-actions';

/** A requirement class's definition in a few words: what a worker needs to take its jobs. */
function describeClass(definition: Record<string, unknown>): string {
  const parts = Object.entries(definition)
    .filter(([key]) => key !== 'service')
    .map(([key, value]) => `${key}=${typeof value === 'object' ? JSON.stringify(value) : String(value)}`);
  return parts.length === 0 ? 'no extra requirements' : parts.join(' · ');
}

/** Depth and oldest-job age per pool, service and requirement class, an hour of history, throughput and wait percentiles. */
export function QueuesView({ connection, store, now }: { connection: Connection; store: MonitorStore; now: number }) {
  const queues = useMonitorState(store, (s) => s.queues);
  const depth = useMonitorState(store, (s) => s.depth);
  const age = useMonitorState(store, (s) => s.age);
  const waits = useMonitorState(store, (s) => s.waits);
  const finished = useMonitorState(store, (s) => s.finished);
  const from = now - HOUR_MS;
  const throughput = useMemo(() => throughputSeries(finished, now), [finished, Math.floor(now / 10_000)]);
  const recentWaits = useMemo(() => waits.filter(([ts]) => ts > from).map(([, ms]) => ms), [waits, Math.floor(now / 10_000)]);
  const lastMinutes = throughput.slice(-5).reduce((sum, [, n]) => sum + n, 0) / 5;

  if (!queues) return <Empty>Waiting for the first queue report…</Empty>;
  return (
    <section aria-label="queues">
      <div className="summary">
        <Stat label="jobs/min (last 5 min)" value={lastMinutes.toFixed(1)} />
        <Stat label="wait p50" value={duration(percentile(recentWaits, 0.5))} />
        <Stat label="wait p95" value={duration(percentile(recentWaits, 0.95))} />
        <Stat label="wait p99" value={duration(percentile(recentWaits, 0.99))} />
        <div className="stat stat-chart">
          <Sparkline samples={throughput} from={from} to={now} height={36} label="jobs finished per minute" />
          <div className="stat-label">finished per minute, last hour{connection.isOperator ? '' : ' (live feed needed)'}</div>
        </div>
      </div>
      {queues.pools.length === 0 && <Empty>No pool has seen a job yet.</Empty>}
      {queues.pools.map((pool) => (
        <div className="panel" key={pool.pool} data-pool={pool.pool}>
          <div className="panel-head">
            <h3>{pool.pool}</h3>
            <span className="muted">
              {pool.depth} queued · oldest {duration(pool.oldest_age_ms)} · {pool.on_timers} on timers · workers {pool.workers.idle} idle / {pool.workers.online} online / {pool.workers.offline} offline
            </span>
            <Sparkline samples={depth[pool.pool] ?? []} from={from} to={now} label={`${pool.pool} depth`} />
          </div>
          <table>
            <thead>
              <tr>
                <th>service</th>
                <th className="num">depth</th>
                <th className="num">oldest</th>
                <th>depth, last hour</th>
                <th>oldest age, last hour</th>
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
                return (
                  <tr key={service.service} data-service={service.service}>
                    <td>
                      {service.service} {service.paused && <span className="badge tone-warn">paused</span>}
                    </td>
                    <td className="num">{service.depth}</td>
                    <td className="num">{duration(service.oldest_age_ms)}</td>
                    <td>
                      <Sparkline samples={depth[key] ?? []} from={from} to={now} label={`${key} depth`} />
                    </td>
                    <td>
                      <Sparkline samples={age[key] ?? []} from={from} to={now} label={`${key} oldest age (ms)`} />
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
                      <td className="mono">
                        {cls.requirement_class.slice(0, 10)} {!cls.routable && <span className="badge tone-bad" title="no registered worker can run these jobs">no worker can run</span>}
                      </td>
                      <td>
                        {String(cls.definition.service ?? '')} <span className="muted">{describeClass(cls.definition)}</span>
                      </td>
                      <td className="num">{cls.depth}</td>
                      <td className="num">{duration(cls.oldest_age_ms)}</td>
                      <td>
                        <Sparkline samples={depth[`${pool.pool}/#${cls.requirement_class}`] ?? []} from={from} to={now} label="class depth" />
                      </td>
                      <td>{cls.head_job ? <a className="mono" href={href('jobs', cls.head_job)}>{cls.head_job}</a> : '–'}</td>
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
