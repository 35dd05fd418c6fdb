import type { Workflow, WorkflowStepView } from '@emp/core';
import { useCallback, useEffect, useRef, useState } from 'react';
import { type Connection, describeError } from '../api/connection';
import { Empty, STATE_TONES, ShortId, StateBadge, href } from './common';
import { ago, clock } from './format';

const BOX_W = 150;
const BOX_H = 46;
const GAP_X = 56;
const GAP_Y = 18;
const PAD = 8;

/** Each step's column (its depth: 0 without needs, else one past its deepest need) and row within it. */
export function layoutSteps(steps: Array<Pick<WorkflowStepView, 'name' | 'needs'>>): Map<string, { column: number; row: number }> {
  const byName = new Map(steps.map((step) => [step.name, step]));
  const depth = new Map<string, number>();
  const depthOf = (name: string, seen: Set<string> = new Set()): number => {
    const known = depth.get(name);
    if (known !== undefined) return known;
    if (seen.has(name)) return 0;
    seen.add(name);
    const needs = byName.get(name)?.needs ?? [];
    const d = needs.length ? 1 + Math.max(...needs.map((need) => depthOf(need, seen))) : 0;
    depth.set(name, d);
    return d;
  };
  const rows = new Map<number, number>();
  const placed = new Map<string, { column: number; row: number }>();
  for (const step of steps) {
    const column = depthOf(step.name);
    const row = rows.get(column) ?? 0;
    rows.set(column, row + 1);
    placed.set(step.name, { column, row });
  }
  return placed;
}

/** The workflow's steps as boxes by depth, an edge from each need, colored by state. */
export function WorkflowGraph({ workflow }: { workflow: Workflow }) {
  const places = layoutSteps(workflow.steps);
  const columns = Math.max(...[...places.values()].map((p) => p.column)) + 1;
  const rows = Math.max(...[...places.values()].map((p) => p.row)) + 1;
  const x = (column: number) => PAD + column * (BOX_W + GAP_X);
  const y = (row: number) => PAD + row * (BOX_H + GAP_Y);
  return (
    <svg
      className="workflow-graph"
      role="img"
      aria-label={`steps of workflow ${workflow.id}`}
      width={2 * PAD + columns * BOX_W + (columns - 1) * GAP_X}
      height={2 * PAD + rows * BOX_H + (rows - 1) * GAP_Y}
    >
      {workflow.steps.flatMap((step) =>
        step.needs.map((need) => {
          const from = places.get(need);
          const to = places.get(step.name)!;
          if (!from) return null;
          return (
            <line
              key={`${need}->${step.name}`}
              className="workflow-edge"
              data-edge={`${need}->${step.name}`}
              x1={x(from.column) + BOX_W}
              y1={y(from.row) + BOX_H / 2}
              x2={x(to.column)}
              y2={y(to.row) + BOX_H / 2}
            />
          );
        }),
      )}
      {workflow.steps.map((step) => {
        const place = places.get(step.name)!;
        const tone = STATE_TONES[step.state] ?? 'muted';
        return (
          <g key={step.name} data-step={step.name} data-state={step.state} transform={`translate(${x(place.column)},${y(place.row)})`}>
            <title>{`${step.name}: ${step.state}${step.error ? ` — ${step.error}` : ''}`}</title>
            <rect className={`workflow-step tone-${tone}`} width={BOX_W} height={BOX_H} rx={6} />
            <text x={10} y={19} className="workflow-step-name">
              {step.name}
              {step.optional ? ' (optional)' : ''}
            </text>
            <text x={10} y={36} className="workflow-step-state">
              {step.state}
              {step.jobs.length > 1 ? ` · ${step.jobs.filter((j) => j.state === 'succeeded').length}/${step.jobs.length}` : ''}
            </text>
          </g>
        );
      })}
    </svg>
  );
}

/** How often a workflow is read again besides its live stream (a dropped stream, a missed event). */
const RESYNC_MS = 5_000;

/** One workflow, read again on each of its events (its SSE stream) until it ends. */
function useLiveWorkflow(connection: Connection, id: string): { workflow: Workflow | undefined; error: string | undefined } {
  const [workflow, setWorkflow] = useState<Workflow>();
  const [error, setError] = useState<string>();
  const reading = useRef<Promise<void> | undefined>(undefined);
  const again = useRef(false);
  const read = useCallback(() => {
    if (reading.current) {
      again.current = true;
      return;
    }
    reading.current = connection.client
      .getWorkflow(id)
      .then((read) => {
        setWorkflow(read);
        setError(undefined);
      })
      .catch((e: unknown) => setError(describeError(e)))
      .finally(() => {
        reading.current = undefined;
        if (again.current) {
          again.current = false;
          read();
        }
      });
  }, [connection, id]);
  useEffect(() => {
    const controller = new AbortController();
    read();
    void connection.followWorkflow(id, () => read(), controller.signal).catch(() => undefined).finally(() => read());
    const timer = setInterval(read, RESYNC_MS);
    return () => {
      controller.abort();
      clearInterval(timer);
    };
  }, [connection, id, read]);
  return { workflow, error };
}

export function WorkflowPage({ connection, id, now }: { connection: Connection; id: string; now: number }) {
  const { workflow, error } = useLiveWorkflow(connection, id);
  if (!workflow) return error ? <p className="unknown">{error}</p> : <p className="muted">Loading workflow…</p>;
  return (
    <section aria-label={`workflow ${workflow.id}`} data-workflow={workflow.id} className="panel">
      <h2>
        Workflow <span className="mono">{workflow.id}</span> <StateBadge state={workflow.state} />
      </h2>
      <p className="muted small">
        {workflow.progress.ended}/{workflow.progress.total} steps ended · tenant {workflow.tenant} · pool {workflow.pool} · priority {workflow.priority} · submitted {clock(workflow.submitted_at)} ({ago(workflow.submitted_at, now)})
        {workflow.finished_at ? ` · took ${((workflow.finished_at - workflow.submitted_at) / 1_000).toFixed(1)} s` : ''}
      </p>
      {workflow.error && <p className="unknown" data-workflow-error>{workflow.error}</p>}
      <div className="table-wrap">
        <WorkflowGraph workflow={workflow} />
      </div>
      <table>
        <thead>
          <tr>
            <th>step</th>
            <th>state</th>
            <th>needs</th>
            <th>jobs</th>
            <th>ready</th>
            <th>ran</th>
            <th>error</th>
          </tr>
        </thead>
        <tbody>
          {workflow.steps.map((step) => (
            <tr key={step.name} data-step-row={step.name}>
              <td className="mono">{step.name}</td>
              <td>
                <StateBadge state={step.state} />
              </td>
              <td className="small">{step.needs.join(', ') || '–'}</td>
              <td className="small">
                {step.jobs.map((job) => (
                  <span key={job.id}>
                    <ShortId value={job.id} keep={16} href={href('jobs', job.id)} />{' '}
                  </span>
                ))}
              </td>
              <td className="small">{step.ready_at ? clock(step.ready_at) : '–'}</td>
              <td className="small">{step.started_at && step.ended_at ? `${((step.ended_at - step.started_at) / 1_000).toFixed(1)} s` : step.started_at ? 'running' : '–'}</td>
              <td className="small">{step.error ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

/** How often the list is read again. */
const LIST_EVERY_MS = 5_000;

export function WorkflowsView({ connection, now }: { connection: Connection; now: number }) {
  const [workflows, setWorkflows] = useState<Workflow[]>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    let stopped = false;
    const read = async () => {
      try {
        const { workflows: found } = await connection.client.listWorkflows({ limit: 50 });
        if (!stopped) {
          setWorkflows(found);
          setError(undefined);
        }
      } catch (e) {
        if (!stopped) setError(describeError(e));
      }
    };
    void read();
    const timer = setInterval(() => void read(), LIST_EVERY_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [connection]);
  return (
    <section aria-label="workflows" className="panel">
      <h2>Workflows</h2>
      {error && <p className="unknown">{error}</p>}
      {workflows && workflows.length === 0 && <Empty>No workflows yet. Submit one with `emp workflow submit docs/examples/workflow.json`.</Empty>}
      {workflows && workflows.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>workflow</th>
              <th>state</th>
              <th>steps</th>
              <th>tenant</th>
              <th>submitted</th>
            </tr>
          </thead>
          <tbody>
            {workflows.map((w) => (
              <tr key={w.id} data-workflow-row={w.id}>
                <td>
                  <ShortId value={w.id} keep={24} href={href('workflows', w.id)} />
                </td>
                <td>
                  <StateBadge state={w.state} />
                </td>
                <td>
                  {w.progress.ended}/{w.progress.total}
                </td>
                <td>{w.tenant}</td>
                <td className="small">{ago(w.submitted_at, now)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
