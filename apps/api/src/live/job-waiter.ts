import type { ServerResponse } from 'node:http';
import { type Broker, type Job, isTerminalEvent, poolOfJobId } from '@emp/core';
import { isTerminal } from '../job-view';
import type { EventHub, HubMark } from './event-hub';

/**
 * The response of a waiting request: it closes before the answer is sent when
 * the client goes away (a response sent in full closes too, after the wait).
 */
export type WaitingResponse = Pick<ServerResponse, 'once' | 'removeListener' | 'destroyed'>;

/**
 * Where the hub stood before a job was read (by its submit, or to be answered)
 * and the job as read; without `job`, where it stood before the submit that
 * created the job (which was then not finished).
 */
export interface MarkedRead {
  job?: Job;
  mark: HubMark;
}

/**
 * Waits up to `timeoutMs` for a job to finish (or until the client of
 * `response` goes away) and returns it as it then is. The job's live events
 * are watched before the job is read, so a job that finishes in between is
 * seen either in that read or in an event that follows it (EventHub.watchJob):
 * a waiting request adds two job reads and no stream read of its own. A
 * request that read the job after taking the hub's mark (a GET), or submitted
 * it after (a waiting submit), passes that mark (`read`, with the job it read):
 * the hub then tells whether the job ended since (EventHub.endedSince), and
 * only the final read is left. The response's own 'close' is listened to, not
 * an AbortSignal made of it: an AbortController and its listener per request
 * showed in the profile.
 */
export async function waitForJob(
  hub: EventHub,
  broker: Broker,
  id: string,
  timeoutMs: number,
  response?: WaitingResponse,
  read?: MarkedRead,
): Promise<Job | null> {
  if (read?.job && (isTerminal(read.job.state) || timeoutMs <= 0)) return read.job;
  if (timeoutMs <= 0) return broker.getJob(id);
  let finished!: () => void;
  const done = new Promise<void>((resolve) => (finished = resolve));
  const pool = poolOfJobId(id);
  const unsubscribe = await hub.watchJob(pool, id, (event) => {
    if (isTerminalEvent(event)) finished();
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    const ended = read ? hub.endedSince(pool, id, read.mark) : undefined;
    if (ended === undefined) {
      const job = await broker.getJob(id);
      if (!job || isTerminal(job.state)) return job;
    }
    if (!ended && !response?.destroyed) {
      // the request's connection keeps the process alive while it waits, not this timer: a server
      // that shut down with requests still waiting exits at once
      timer = setTimeout(finished, timeoutMs).unref();
      response?.once('close', finished);
      await done;
    }
  } finally {
    clearTimeout(timer);
    response?.removeListener('close', finished);
    unsubscribe();
  }
  return broker.getJob(id);
}

/** Seconds to wait from `?wait=N` or `Prefer: wait=N` (the larger), capped. */
export function requestedWait(query: number | undefined, prefer: string | undefined, cap: number): number {
  const match = prefer ? /(?:^|[,;\s])wait=(\d{1,6})\b/.exec(prefer) : null;
  return Math.min(cap, Math.max(query ?? 0, match ? Number(match[1]) : 0));
}
