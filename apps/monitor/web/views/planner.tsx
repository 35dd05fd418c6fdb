import type { PlacementCell, PlannerPoolReport, PlannerReport } from '@emp/core';
import { useCallback, useEffect, useRef, useState } from 'react';
import { type Connection, describeError } from '../api/connection';
import { Empty } from './common';
import { ago, bytes, clock } from './format';

/** How often the planner's record is read again (it changes once per planning round). */
const READ_EVERY_MS = 5_000;

const CELL_TEXT: Record<PlacementCell, string> = { loaded: 'loaded', on_disk: 'on disk', downloading: 'downloading', planned: 'planned', evicting: 'evicting', loading: 'loading', absent: '' };

function usePlannerReport(connection: Connection): { report: PlannerReport | undefined; error: string | undefined } {
  const [report, setReport] = useState<PlannerReport>();
  const [error, setError] = useState<string>();
  const reading = useRef<Promise<void> | undefined>(undefined);
  const read = useCallback(async () => {
    try {
      setReport(await connection.client.planner());
      setError(undefined);
    } catch (e) {
      setError(describeError(e));
    }
  }, [connection]);
  useEffect(() => {
    const refresh = () => (reading.current ??= read().finally(() => (reading.current = undefined)));
    void refresh();
    const timer = setInterval(() => void refresh(), READ_EVERY_MS);
    return () => clearInterval(timer);
  }, [read]);
  return { report, error };
}

function PoolPlan({ pool, now }: { pool: PlannerPoolReport; now: number }) {
  const { matrix, capacity } = pool;
  return (
    <section aria-label={`planner ${pool.pool}`} data-pool={pool.pool} className="panel">
      <h3>
        {pool.pool} <span className="muted small">{pool.run_at ? `planned ${ago(pool.run_at, now)}` : 'the planner has not run for this pool'}</span>
      </h3>
      {pool.problems.map((problem) => (
        <p key={problem} className="unknown">unreadable: {problem}</p>
      ))}
      {capacity && (
        <p data-capacity-hint={capacity.machines} title={capacity.explanation}>
          Capacity hint: <strong>{capacity.machines}</strong> machine{capacity.machines === 1 ? '' : 's'} to meet the {((pool.wait_target_ms ?? 0) / 1_000).toFixed(1)} s wait target
          {capacity.readyMachines !== undefined && <span className="muted"> (ready now: {capacity.readyMachines})</span>}
          <br />
          <span className="muted small">{capacity.explanation}</span>
        </p>
      )}
      {matrix.machines.length > 0 && matrix.models.length > 0 ? (
        <div className="table-wrap">
          <table className="placement-matrix">
            <thead>
              <tr>
                <th>machine</th>
                <th>cache</th>
                {matrix.models.map((model) => (
                  <th key={model} className="mono small">
                    {model}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {matrix.machines.map((machine) => (
                <tr key={machine.id} data-machine={machine.id}>
                  <td className="mono">
                    {machine.id} <span className="muted small">{machine.state}</span>
                  </td>
                  <td className="small">{machine.budget_bytes !== undefined ? `${bytes(machine.used_bytes ?? 0)} / ${bytes(machine.budget_bytes)}` : '–'}</td>
                  {matrix.models.map((model) => {
                    const cell = machine.cells[model] ?? 'absent';
                    return (
                      <td key={model} data-model={model} data-cell={cell} className={`cell-${cell}`}>
                        {CELL_TEXT[cell]}
                      </td>
                    );
                  })}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : (
        <Empty>No machine of this pool reports models.</Empty>
      )}
      {pool.forecast.length > 0 && (
        <div className="table-wrap">
          <table className="planner-forecast">
            <thead>
              <tr>
                <th>model</th>
                <th className="num">forecast / 5 min</th>
                <th className="num">last 5 min</th>
                <th className="num">last hour</th>
                <th>how</th>
              </tr>
            </thead>
            <tbody>
              {pool.forecast.map((f) => (
                <tr key={f.model} data-forecast={f.model}>
                  <td className="mono">{f.model}</td>
                  <td className="num">{f.rate.toFixed(2)}</td>
                  <td className="num">{f.current}</td>
                  <td className="num">{f.lastHour}</td>
                  <td className="small muted">{f.explanation}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {pool.decisions.length > 0 && (
        <div className="table-wrap">
          <table className="planner-decisions">
            <thead>
              <tr>
                <th>time</th>
                <th>machine</th>
                <th>action</th>
                <th>model</th>
                <th>reason</th>
              </tr>
            </thead>
            <tbody>
              {[...pool.decisions].reverse().map((d) => (
                <tr key={`${d.ts}-${d.machine}-${d.action}-${d.model}`} data-decision={`${d.action} ${d.model} ${d.machine}`}>
                  <td>{clock(d.ts)}</td>
                  <td className="mono">{d.machine}</td>
                  <td>{d.action}</td>
                  <td className="mono">{d.model}</td>
                  <td className="small">{d.reason}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

/**
 * The planner: per pool, the capacity hint, the model x machine placement
 * matrix (loaded / on disk / downloading / planned / evicting / loading), the forecast
 * per model and the last decisions with their reasons (GET /v1/planner).
 */
export function PlannerView({ connection, now }: { connection: Connection; now: number }) {
  const { report, error } = usePlannerReport(connection);
  return (
    <section aria-label="planner">
      <div className="page-head">
        <h2>Planner</h2>
        <span className="muted">which models each machine holds, what the planner forecast and decided</span>
      </div>
      {error && <p className="unknown">The planner's record could not be read: {error}</p>}
      {!report && !error && <Empty>Loading the planner's record…</Empty>}
      {report && report.pools.length === 0 && <Empty>No pool yet.</Empty>}
      {report?.pools.map((pool) => <PoolPlan key={pool.pool} pool={pool} now={now} />)}
    </section>
  );
}
