import type { ServerResponse } from 'node:http';
import { type Broker, type Job, isTerminalEvent, poolOfJobId } from '@emp/core';
import { isTerminal } from '../job-view';
import type { EventHub } from './event-hub';

/**
 * Waits up to `timeoutMs` for a job to finish (or until `signal` aborts) and
 * returns it as it then is. The stream cursor is taken before the job is read,
 * so a job that finishes in between is seen in the events that follow it, and
 * only those are read, however old the job.
 */
export async function waitForJob(hub: EventHub, broker: Broker, id: string, timeoutMs: number, signal?: AbortSignal): Promise<Job | null> {
  const pool = poolOfJobId(id);
  const cursor = await hub.latestId(pool);
  const job = await broker.getJob(id);
  if (!job || isTerminal(job.state) || timeoutMs <= 0) return job;
  let finished!: () => void;
  const done = new Promise<void>((resolve) => (finished = resolve));
  // the request's connection keeps the process alive while it waits, not this timer: a server
  // that shut down with requests still waiting exits at once
  const timer = setTimeout(finished, timeoutMs).unref();
  const onAbort = () => finished();
  signal?.addEventListener('abort', onAbort, { once: true });
  let unsubscribe: (() => void) | undefined;
  try {
    unsubscribe = await hub.follow(pool, cursor, (event) => {
      if (isTerminalEvent(event)) finished();
    }, id);
    await done;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
    unsubscribe?.();
  }
  return broker.getJob(id);
}

/** Aborts when the client's connection closes, so that a request waiting for a job stops waiting. */
export function closedSignal(response: ServerResponse): AbortSignal {
  const gone = new AbortController();
  response.once('close', () => gone.abort());
  return gone.signal;
}

/** Seconds to wait from `?wait=N` or `Prefer: wait=N` (the larger), capped. */
export function requestedWait(query: number | undefined, prefer: string | undefined, cap: number): number {
  const match = prefer ? /(?:^|[,;\s])wait=(\d{1,6})\b/.exec(prefer) : null;
  return Math.min(cap, Math.max(query ?? 0, match ? Number(match[1]) : 0));
}
