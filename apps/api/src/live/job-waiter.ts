import type { ServerResponse } from 'node:http';
import { type Broker, type Job, isTerminalEvent, poolOfJobId } from '@emp/core';
import { isTerminal } from '../job-view';
import type { EventHub } from './event-hub';

/**
 * Waits up to `timeoutMs` for a job to finish (or until `signal` aborts) and
 * returns it as it then is. The job's live events are watched before the job
 * is read, so a job that finishes in between is seen either in that read or in
 * an event that follows it (EventHub.watchJob): a waiting request adds two job
 * reads and no stream read of its own.
 */
export async function waitForJob(hub: EventHub, broker: Broker, id: string, timeoutMs: number, signal?: AbortSignal): Promise<Job | null> {
  if (timeoutMs <= 0) return broker.getJob(id);
  let finished!: () => void;
  const done = new Promise<void>((resolve) => (finished = resolve));
  const unsubscribe = await hub.watchJob(poolOfJobId(id), id, (event) => {
    if (isTerminalEvent(event)) finished();
  });
  let timer: NodeJS.Timeout | undefined;
  const onAbort = () => finished();
  try {
    const job = await broker.getJob(id);
    if (!job || isTerminal(job.state)) return job;
    // the request's connection keeps the process alive while it waits, not this timer: a server
    // that shut down with requests still waiting exits at once
    timer = setTimeout(finished, timeoutMs).unref();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) finished();
    await done;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
    unsubscribe();
  }
  return broker.getJob(id);
}

/** Why a wait was cut short: given to abort(), which would otherwise build an AbortError with a stack trace. */
const CLIENT_GONE = 'the client closed the connection';

/** Aborts when the client's connection closes before the answer was sent, so that a request waiting for a job stops waiting. */
export function closedSignal(response: ServerResponse): AbortSignal {
  const gone = new AbortController();
  response.once('close', () => {
    // a response sent in full closes too: nothing waits any more then
    if (!response.writableFinished) gone.abort(CLIENT_GONE);
  });
  return gone.signal;
}

/** Seconds to wait from `?wait=N` or `Prefer: wait=N` (the larger), capped. */
export function requestedWait(query: number | undefined, prefer: string | undefined, cap: number): number {
  const match = prefer ? /(?:^|[,;\s])wait=(\d{1,6})\b/.exec(prefer) : null;
  return Math.min(cap, Math.max(query ?? 0, match ? Number(match[1]) : 0));
}
