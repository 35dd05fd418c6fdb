import { JOB_STATES, type JobState, type JobView, TERMINAL_STATES } from '@emp/core';
import { type ReactNode, useEffect, useMemo, useState } from 'react';
import { type Connection, describeError } from '../api/connection';
import { type MonitorStore, useMonitorState } from '../live/monitor-store';
import type { LiveJob } from '../state/monitor-state';
import { Empty, Meter, StateBadge, href, navigate, useRoute } from './common';
import { ago, duration } from './format';

const SINCE = { '15m': 15 * 60_000, '1h': 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000 } as const;
type Since = keyof typeof SINCE | 'all';

interface Filter {
  states: JobState[];
  service: string;
  tenant: string;
  pool: string;
  since: Since;
}

function filterFromQuery(query: URLSearchParams): Filter {
  const states = (query.get('state') ?? '').split(',').filter((s): s is JobState => (JOB_STATES as readonly string[]).includes(s));
  const since = query.get('since');
  return {
    states,
    service: query.get('service') ?? '',
    tenant: query.get('tenant') ?? '',
    pool: query.get('pool') ?? '',
    since: since && (since === 'all' || since in SINCE) ? (since as Since) : '1h',
  };
}

function queryOf(filter: Filter): string {
  const query = new URLSearchParams();
  if (filter.states.length) query.set('state', filter.states.join(','));
  for (const key of ['service', 'tenant', 'pool'] as const) if (filter[key]) query.set(key, filter[key]);
  if (filter.since !== '1h') query.set('since', filter.since);
  return query.toString();
}

/** One row of the table: what the list answered, overlaid with what the feed told since. */
interface Row {
  id: string;
  pool: string;
  state: JobState;
  service?: string;
  tenant?: string;
  worker?: string;
  machine?: string;
  progress?: LiveJob['progress'];
  submittedAt?: number;
  updatedAt?: number;
  /** when it reached its terminal state */
  finishedAt?: number;
  attempts?: number;
}

function fromView(job: JobView): Row {
  return {
    id: job.id,
    pool: job.pool,
    state: job.state,
    service: job.service,
    tenant: job.tenant,
    worker: job.worker || undefined,
    machine: job.machine || undefined,
    progress: job.progress,
    submittedAt: job.timestamps.submitted_at,
    updatedAt: job.timestamps.updated_at,
    finishedAt: job.timestamps.finished_at,
    attempts: job.attempts,
  };
}

function overlay(row: Row, live: LiveJob | undefined): Row {
  if (!live || (row.updatedAt !== undefined && live.updatedAt < row.updatedAt)) return row;
  const { finishedAt: _, ...rest } = row;
  const ended = TERMINAL_STATES.includes(live.state) ? { finishedAt: live.updatedAt } : {};
  return { ...rest, ...ended, state: live.state, worker: live.worker ?? row.worker, machine: live.machine ?? row.machine, progress: live.progress, updatedAt: live.updatedAt };
}

/** A meter while the job runs; once it has ended, how it ended and how long it took from submission. */
function progressCell(row: Row): ReactNode {
  if (TERMINAL_STATES.includes(row.state)) {
    const took = row.submittedAt !== undefined && row.finishedAt !== undefined ? ` in ${duration(row.finishedAt - row.submittedAt)}` : '';
    return `${row.state}${took}`;
  }
  if (row.progress?.max) return <Meter value={row.progress.value ?? 0} max={row.progress.max} label="progress" tone="info" />;
  return row.progress?.stage ?? '';
}

function matches(job: LiveJob, filter: Filter, since: number | undefined): boolean {
  if (filter.states.length && !filter.states.includes(job.state)) return false;
  if (filter.service && job.service !== filter.service) return false;
  if (filter.tenant && job.tenant !== filter.tenant) return false;
  if (filter.pool && job.pool !== filter.pool) return false;
  return since === undefined || (job.queuedAt ?? job.updatedAt) >= since;
}

/** Jobs with filters: a page from the API, kept live by the feed (new jobs appear on top, states change in place). */
export function JobsView({ connection, store, now }: { connection: Connection; store: MonitorStore; now: number }) {
  const route = useRoute();
  const filter = useMemo(() => filterFromQuery(route.query), [route.query]);
  const [draft, setDraft] = useState(filter);
  const [page, setPage] = useState<{ rows: Row[]; cursor?: string; loadedAt: number }>();
  const [error, setError] = useState<string>();
  const [loading, setLoading] = useState(false);
  const live = useMonitorState(store, (s) => s.jobs);
  useEffect(() => setDraft(filter), [filter]);

  const since = filter.since === 'all' ? undefined : Date.now() - SINCE[filter.since];
  const load = async (cursor?: string) => {
    setLoading(true);
    try {
      const answer = await connection.client.list({
        limit: 50,
        // the SDK leaves out what is undefined (and an empty list); '' stays out too
        states: filter.states,
        services: filter.service ? [filter.service] : undefined,
        tenant: filter.tenant || undefined,
        pool: filter.pool || undefined,
        since,
        cursor: cursor || undefined,
      });
      setError(undefined);
      setPage((previous) => ({
        rows: [...(cursor && previous ? previous.rows : []), ...answer.jobs.map(fromView)],
        cursor: answer.next_cursor || undefined,
        loadedAt: cursor && previous ? previous.loadedAt : Date.now(),
      }));
    } catch (e) {
      setError(describeError(e));
    } finally {
      setLoading(false);
    }
  };
  useEffect(() => {
    setPage(undefined);
    void load();
  }, [connection, filter]);

  const rows = useMemo(() => {
    if (!page) return [];
    const listed = new Set(page.rows.map((r) => r.id));
    const fresh = Object.values(live)
      .filter((job) => !listed.has(job.id) && (job.queuedAt ?? 0) >= page.loadedAt - 5_000 && matches(job, filter, since))
      .sort((a, b) => (b.queuedAt ?? b.updatedAt) - (a.queuedAt ?? a.updatedAt))
      .map((job): Row => ({
        ...job,
        submittedAt: job.queuedAt,
        finishedAt: TERMINAL_STATES.includes(job.state) ? job.updatedAt : undefined,
      }));
    return [...fresh, ...page.rows.map((row) => overlay(row, live[row.id]))];
  }, [page, live, filter]);

  const apply = () => navigate(`#/jobs${queryOf(draft) ? `?${queryOf(draft)}` : ''}`);
  return (
    <section aria-label="jobs">
      <form
        className="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          apply();
        }}
      >
        <fieldset className="state-filter">
          <legend>State</legend>
          {JOB_STATES.map((state) => (
            <label key={state} className="inline">
              <input
                type="checkbox"
                checked={draft.states.includes(state)}
                onChange={(e) => setDraft({ ...draft, states: e.target.checked ? [...draft.states, state] : draft.states.filter((s) => s !== state) })}
              />
              {state}
            </label>
          ))}
        </fieldset>
        <label>
          Service
          <input value={draft.service} onChange={(e) => setDraft({ ...draft, service: e.target.value.trim() })} placeholder="any" size={10} />
        </label>
        <label>
          Tenant
          <input value={draft.tenant} onChange={(e) => setDraft({ ...draft, tenant: e.target.value.trim() })} placeholder="any" size={10} />
        </label>
        <label>
          Pool
          <input value={draft.pool} onChange={(e) => setDraft({ ...draft, pool: e.target.value.trim() })} placeholder="any" size={10} />
        </label>
        <label>
          Submitted
          <select value={draft.since} onChange={(e) => setDraft({ ...draft, since: e.target.value as Since })}>
            <option value="15m">last 15 min</option>
            <option value="1h">last hour</option>
            <option value="24h">last 24 h</option>
            <option value="7d">last 7 days</option>
            <option value="all">any time</option>
          </select>
        </label>
        <button type="submit" className="primary">
          Apply
        </button>
      </form>
      {error && <p className="unknown">Jobs could not be listed: {error}</p>}
      {!page && !error && <Empty>Loading jobs…</Empty>}
      {page && rows.length === 0 && <Empty>No job matches these filters.</Empty>}
      {rows.length > 0 && (
        <div className="table-wrap">
          <table className="jobs-table">
            <thead>
              <tr>
                <th>job</th>
                <th>state</th>
                <th>service</th>
                <th>tenant</th>
                <th>pool</th>
                <th>worker</th>
                <th>progress</th>
                <th>submitted</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((row) => (
                <tr key={row.id} data-job={row.id} data-state={row.state} onClick={() => navigate(href('jobs', row.id))} className="clickable">
                  <td className="mono">
                    <a href={href('jobs', row.id)}>{row.id}</a>
                  </td>
                  <td>
                    <StateBadge state={row.state} />
                  </td>
                  <td>{row.service ?? '–'}</td>
                  <td>{row.tenant ?? '–'}</td>
                  <td>{row.pool}</td>
                  <td className="mono muted">{row.worker ?? '–'}</td>
                  <td className="progress-cell">{progressCell(row)}</td>
                  <td className="muted">{ago(row.submittedAt, now)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {page?.cursor && (
        <button type="button" onClick={() => void load(page.cursor)} disabled={loading}>
          {loading ? 'Loading…' : 'Load more'}
        </button>
      )}
      <p className="muted small">
        Showing {rows.length} job{rows.length === 1 ? '' : 's'}
        {page ? `, listed ${duration(Math.max(0, now - page.loadedAt))} ago and kept live since` : ''}.
      </p>
    </section>
  );
}
