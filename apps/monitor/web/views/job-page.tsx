import type { JobView } from '@emp/core';
import { TERMINAL_STATES, assertNever } from '@emp/core';
import { useEffect, useRef, useState } from 'react';
import { type Connection, describeError } from '../api/connection';
import { type MonitorStore, useMonitorState } from '../live/monitor-store';
import { type JobEventView, jobEventViews } from '../state/live-event';
import { ConfirmButton, Empty, Field, Meter, StateBadge, href } from './common';
import { clock, dateTime, duration } from './format';

const ACTIVE = new Set(['queued', 'starting', 'running', 'retrying']);
const RETRYABLE = new Set(['failed', 'canceled', 'expired']);

/** A line of the timeline: what each job event says about the job's path. */
interface TimelineEntry {
  state: string;
  worker: string | undefined;
  machine: string | undefined;
  attempt: number | undefined;
  reason: string | undefined;
}

/** The timeline's line of an event; undefined for progress reports (the log shows those). */
function timelineEntry(event: JobEventView): TimelineEntry | undefined {
  const entry: TimelineEntry = { state: event.state, worker: undefined, machine: undefined, attempt: undefined, reason: undefined };
  switch (event.type) {
    case 'job.progress':
      return undefined;
    case 'job.queued':
    case 'job.retrying':
      return { ...entry, reason: event.reason };
    case 'job.starting':
      return { ...entry, worker: event.worker, machine: event.machine, attempt: event.attempt };
    case 'job.running':
    case 'job.succeeded':
    case 'job.failed':
    case 'job.canceled':
    case 'job.expired':
      return { ...entry, worker: event.worker };
    default:
      return assertNever(event);
  }
}

/**
 * One job: its state and timings, every transition with its time and
 * worker/machine, live progress, its log (progress messages), the result with
 * image and video previews, or the classified error; cancel and retry.
 */
export function JobPage({ connection, store, id }: { connection: Connection; store: MonitorStore; id: string }) {
  const [job, setJob] = useState<JobView>();
  const [events, setEvents] = useState<JobEventView[]>([]);
  const [error, setError] = useState<string>();
  const cursor = useRef<string | undefined>(undefined);
  const reading = useRef<Promise<void> | undefined>(undefined);
  // the feed tells that something happened to this job; the API tells what, in full
  const liveMark = useMonitorState(store, (s) => s.jobs[id]?.updatedAt);

  const refresh = async () => {
    try {
      const [view, page] = await Promise.all([connection.client.get(id), connection.client.events(id, cursor.current ? { after: cursor.current } : {})]);
      cursor.current = page.cursor;
      setJob(view);
      const read = jobEventViews(page.events);
      if (read.length > 0) setEvents((list) => [...list, ...read.filter((e) => !list.some((known) => known.id === e.id))]);
      setError(undefined);
    } catch (e) {
      setError(describeError(e));
    }
  };
  // one read at a time; changes told during a read get one more read after it
  const dirty = useRef(false);
  const refreshSoon = (): Promise<void> => {
    if (reading.current) {
      dirty.current = true;
      return reading.current;
    }
    dirty.current = false;
    reading.current = refresh().finally(() => {
      reading.current = undefined;
      if (dirty.current) void refreshSoon();
    });
    return reading.current;
  };

  useEffect(() => {
    cursor.current = undefined;
    setEvents([]);
    setJob(undefined);
    void refreshSoon();
  }, [id, connection]);
  useEffect(() => {
    if (liveMark !== undefined) void refreshSoon();
  }, [liveMark]);
  // without the feed (a key that may not follow it), poll while the job is active
  useEffect(() => {
    if (connection.isOperator || !job || !ACTIVE.has(job.state)) return;
    const timer = setInterval(() => void refreshSoon(), 1_000);
    return () => clearInterval(timer);
  }, [connection, job?.state]);

  if (error && !job) {
    return (
      <section>
        <p className="crumbs">
          <a href="#/jobs">Jobs</a> / <span className="mono">{id}</span>
        </p>
        <p className="unknown">{error}</p>
      </section>
    );
  }
  if (!job) return <Empty>Loading job {id}…</Empty>;
  const logLines = events.flatMap((e) => (e.type === 'job.progress' && e.progress.message ? [{ id: e.id, ts: e.ts, message: e.progress.message }] : []));
  return (
    <section className="job-page" aria-label={`job ${id}`} data-job={id} data-state={job.state}>
      <p className="crumbs">
        <a href="#/jobs">Jobs</a> / <span className="mono">{id}</span>
      </p>
      <div className="page-head">
        <h2 className="mono">{id}</h2>
        <StateBadge state={job.state} />
        {job.position !== undefined && <span className="muted">position {job.position}</span>}
        <div className="spacer" />
        {ACTIVE.has(job.state) && (
          <ConfirmButton
            label="Cancel job"
            title={`Cancel ${id}?`}
            description={<p>The job stops where it is and ends canceled; a worker running it is told at once.</p>}
            danger
            askReason
            run={async (reason) => {
              const answer = await connection.client.cancel(id, reason || undefined);
              void refreshSoon();
              return answer.changed ? `${id} canceled` : `${id} was already ${answer.state}`;
            }}
          />
        )}
        {RETRYABLE.has(job.state) && (
          <ConfirmButton
            label="Retry job"
            title={`Retry ${id}?`}
            description={<p>The job goes back to its queue under the same id, with its original payload.</p>}
            run={async () => {
              const answer = await connection.client.retry(id);
              void refreshSoon();
              return `${id} is ${answer.state} again`;
            }}
          />
        )}
      </div>
      {job.progress && !TERMINAL_STATES.includes(job.state) && (
        <div className="panel progress-panel" aria-label="progress">
          <span className="badge tone-info">{job.progress.stage}</span>
          {job.progress.max ? (
            <>
              <Meter value={job.progress.value ?? 0} max={job.progress.max} label="job progress" tone="info" />
              <span className="mono">
                {job.progress.value ?? 0} / {job.progress.max}
              </span>
            </>
          ) : null}
          {job.progress.message && <span>{job.progress.message}</span>}
        </div>
      )}
      <div className="grid-2">
        <div className="panel">
          <h3>Job</h3>
          <dl className="fields">
            <Field label="service">{job.service}</Field>
            <Field label="tenant">{job.tenant}</Field>
            <Field label="pool">{job.pool}</Field>
            <Field label="routing">
              {job.routing ? (
                <span data-routing={job.routing.source} title={`source: ${job.routing.source}`}>
                  {job.routing.reason}
                </span>
              ) : (
                '–'
              )}
            </Field>
            <Field label="priority">{job.priority}</Field>
            <Field label="attempts">
              {job.attempts} of {job.max_attempts}
              {job.infra_failures ? ` (+${job.infra_failures} infrastructure)` : ''}
            </Field>
            <Field label="worker">{job.worker ? <span className="mono">{job.worker}</span> : '–'}</Field>
            <Field label="machine">{job.machine ? <a href={href('machines', job.pool, job.machine)}>{job.machine}</a> : '–'}</Field>
            <Field label="submitted">{dateTime(job.timestamps.submitted_at)}</Field>
            <Field label="queue wait">{duration(job.timings.queue_ms)}</Field>
            <Field label="model load">{duration(job.timings.start_ms)}</Field>
            <Field label="execution">{duration(job.timings.execution_ms)}</Field>
            <Field label="total">{duration(job.timings.total_ms)}</Field>
          </dl>
        </div>
        <div className="panel">
          <h3>Timeline</h3>
          <ol className="timeline" aria-label="timeline">
            {events.map((event) => {
              const entry = timelineEntry(event);
              if (!entry) return null;
              return (
                <li key={event.id} data-event={event.type}>
                  <span className="mono muted">{clock(event.ts)}</span> <StateBadge state={entry.state} />
                  {entry.worker ? <span className="mono"> {entry.worker}</span> : null}
                  {entry.machine ? <span className="muted"> on {entry.machine}</span> : null}
                  {entry.attempt ? <span className="muted"> · attempt {entry.attempt}</span> : null}
                  {entry.reason ? <span className="muted"> · {entry.reason}</span> : null}
                </li>
              );
            })}
          </ol>
        </div>
      </div>
      {job.result !== undefined && <ResultPanel connection={connection} result={job.result} />}
      {job.error && (
        <div className="panel error-panel" aria-label="error">
          <h3>
            Error <span className="badge tone-bad">{job.error.kind}</span>
            {job.error.type && <span className="muted"> {job.error.type}</span>}
          </h3>
          <p>{job.error.message}</p>
          {job.error.details !== undefined && <pre className="code">{JSON.stringify(job.error.details, null, 2)}</pre>}
        </div>
      )}
      <div className="panel">
        <h3>Log</h3>
        {logLines.length === 0 ? (
          <p className="muted">No progress message yet.</p>
        ) : (
          <pre className="logs">
            {logLines.map((e) => (
              <div key={e.id}>
                <span className="muted">{clock(e.ts)}</span> {e.message}
              </div>
            ))}
          </pre>
        )}
      </div>
      {job.payload !== undefined && (
        <details className="panel">
          <summary>Payload and requirements</summary>
          <pre className="code">{JSON.stringify({ payload: job.payload, requirements: job.requirements }, null, 2)}</pre>
        </details>
      )}
    </section>
  );
}

const IMAGE = /\.(png|jpe?g|webp|gif|avif)(\?|$)/i;
const VIDEO = /\.(mp4|webm|mov)(\?|$)/i;

/** Every URL-looking string in a result, wherever it sits. */
function urlsIn(value: unknown, found: string[] = []): string[] {
  if (typeof value === 'string') {
    if (/^https?:\/\//.test(value)) found.push(value);
  } else if (Array.isArray(value)) {
    for (const item of value) urlsIn(item, found);
  } else if (value && typeof value === 'object') {
    for (const item of Object.values(value)) urlsIn(item, found);
  }
  return found;
}

function ResultPanel({ connection, result }: { connection: Connection; result: unknown }) {
  const urls = [...new Set(urlsIn(result))];
  const media = urls.filter((url) => IMAGE.test(url) || VIDEO.test(url));
  return (
    <div className="panel" aria-label="result">
      <h3>Result</h3>
      {media.length > 0 && (
        <div className="previews">
          {media.map((url) =>
            VIDEO.test(url) ? (
              <video key={url} src={connection.assetUrl(url)} controls muted loop />
            ) : (
              <a key={url} href={connection.assetUrl(url)} target="_blank" rel="noreferrer">
                <img src={connection.assetUrl(url)} alt="job output" loading="lazy" />
              </a>
            ),
          )}
        </div>
      )}
      <pre className="code">{JSON.stringify(result, null, 2)}</pre>
    </div>
  );
}
