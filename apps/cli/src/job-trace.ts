import { type DeliveryLogEntry, type Job, type StreamEvent, assertNever } from '@emp/core';
import { duration } from './format';

/** What a job was doing between two events, as the timeline names it. */
type Phase = 'queued' | 'starting' | 'downloading_model' | 'loading_model' | 'running' | 'uploading' | 'backing off';

const PHASE_LABELS: Record<Phase, string> = {
  queued: 'queue wait',
  starting: 'starting',
  downloading_model: 'model download',
  loading_model: 'model load',
  running: 'run',
  uploading: 'upload',
  'backing off': 'backoff',
};

/**
 * The timeline of one job from its events, for an operator without a tracing
 * backend: every event with its time since submission, then the time spent in
 * each phase (queue wait, start, model download and load, run, upload, backoff)
 * over all attempts, then the webhook: its delivery attempts among the events
 * and how long after the end its final event was delivered. Events the pool's
 * stream has trimmed are missing; the phases then come from the job's own timestamps.
 */
export function traceJob(job: Job, events: StreamEvent[], deliveries: DeliveryLogEntry[] = []): string {
  const t = job.timestamps;
  const start = t.submitted_at;
  const lines: Array<{ at: number; line: string }> = [];
  const spent = new Map<Phase, number>();
  let phase: Phase | undefined;
  let since = start;
  const enter = (next: Phase | undefined, at: number) => {
    if (phase !== undefined) spent.set(phase, (spent.get(phase) ?? 0) + Math.max(0, at - since));
    phase = next;
    since = at;
  };
  for (const event of events) {
    const at = event.ts;
    let detail = '';
    let type: string = event.type;
    switch (event.type) {
      case 'job.queued':
        detail = event.reason ? `(${event.reason.replace(/_/g, ' ')})` : '';
        enter('queued', at);
        break;
      case 'job.starting':
        detail = `attempt ${event.attempt} on ${event.worker}${event.machine ? ` (machine ${event.machine})` : ''}`;
        enter('starting', at);
        break;
      case 'job.running':
        enter('running', at);
        break;
      case 'job.progress': {
        const p = event.progress;
        detail = `${p.stage}${p.max !== undefined ? ` ${p.value ?? 0}/${p.max}` : ''}${p.message ? ` ${p.message}` : ''}`;
        if (p.stage !== 'queued' && p.stage !== phase) enter(p.stage, at);
        break;
      }
      case 'job.retrying':
        detail = `(${event.reason.replace(/_/g, ' ')}) until +${duration(event.retry_at - start)}`;
        enter('backing off', at);
        break;
      case 'job.succeeded':
      case 'job.failed':
      case 'job.canceled':
      case 'job.expired':
        enter(undefined, at);
        break;
      case 'unknown':
        // an entry this CLI does not know: listed as stored, the phases left as they are
        type = event.raw.type ?? 'unknown';
        detail = `(not a known event: ${event.problem})`;
        break;
      // a job's events only (Broker.jobEvents): the pool's other events never reach a trace
      case 'worker.registered':
      case 'worker.idle':
      case 'worker.busy':
      case 'worker.draining':
      case 'worker.offline':
      case 'worker.gone':
      case 'machine.command':
      case 'machine.command.done':
      case 'machine.process':
      case 'machine.starting':
      case 'machine.ready':
      case 'machine.degraded':
      case 'machine.draining':
      case 'machine.offline':
      case 'machine.gone':
      case 'class.routable':
      case 'service.paused':
      case 'service.resumed':
      case 'clock.unwatched':
      case 'planner.decision':
      case 'workflow.submitted':
      case 'workflow.step_succeeded':
      case 'workflow.step_failed':
      case 'workflow.succeeded':
      case 'workflow.failed':
      case 'workflow.canceled':
        break;
      default:
        assertNever(event);
    }
    lines.push({ at, line: `${`+${duration(at - start)}`.padEnd(10)} ${type.padEnd(14)} ${detail}`.trimEnd() });
  }
  for (const d of deliveries) {
    const answer = d.status !== undefined ? `${d.status}` : 'no response';
    const detail = `${d.type} to ${d.endpoint ?? d.url}, attempt ${d.attempt}: ${answer}, ${d.outcome} in ${duration(d.latency_ms)}`;
    lines.push({ at: d.at, line: `${`+${duration(d.at - start)}`.padEnd(10)} ${'webhook'.padEnd(14)} ${detail}` });
  }
  // the webhook attempts among the events, by time (the sort keeps each list's own order for equal times)
  lines.sort((a, b) => a.at - b.at);
  if (events.length === 0) {
    // the stream no longer has the job's events: the phases its timestamps still tell
    lines.unshift({ at: start, line: '(no events: the pool stream has been trimmed past this job)' });
    const claimed = t.claimed_at ?? t.started_at;
    if (claimed !== undefined) spent.set('queued', claimed - start);
    if (t.started_at !== undefined && t.claimed_at !== undefined) spent.set('starting', t.started_at - t.claimed_at);
    if (t.started_at !== undefined && t.finished_at !== undefined) spent.set('running', t.finished_at - t.started_at);
  } else if (phase !== undefined) {
    // still going: the current phase lasts until now (the last update)
    enter(undefined, Math.max(since, t.updated_at));
  }
  const end = t.finished_at ?? t.updated_at;
  const summary = (Object.keys(PHASE_LABELS) as Phase[])
    .filter((p) => spent.has(p))
    .map((p) => `${PHASE_LABELS[p]} ${duration(spent.get(p)!)}`);
  summary.push(`${t.finished_at !== undefined ? 'total' : 'so far'} ${duration(end - start)}`);
  const final = t.finished_at !== undefined ? deliveries.find((d) => d.type === `job.${job.state}` && d.outcome === 'delivered') : undefined;
  if (final) summary.push(`webhook delivered ${duration(final.at + final.latency_ms - t.finished_at!)} after the end`);
  else if (deliveries.length > 0) summary.push(`webhook: ${deliveries.length} attempt(s), the final event not delivered yet`);
  return [`${job.id}  ${job.state}`, ...lines.map((l) => l.line), summary.join(' · ')].join('\n');
}
