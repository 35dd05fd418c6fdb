import { z } from 'zod';
import type { ValidationIssue } from './errors';
import { type Job, JobId } from './job';
import { PoolName } from './requirements';

/**
 * The wire shapes of the HTTP and WebSocket API that both the server
 * (apps/api) and the SDK (packages/client) use, defined once here beside the
 * job schemas they are made of.
 */

/** How long each phase of a job took, like RunPod's delayTime / executionTime. */
export interface JobTimings {
  /** submitted -> claimed by a worker */
  queue_ms?: number;
  /** claimed -> running: model download and load */
  start_ms?: number;
  /** running -> finished */
  execution_ms?: number;
  /** submitted -> finished */
  total_ms?: number;
}

/** A job as the API answers it (lists leave the payload out). */
export type JobView = Omit<Job, 'payload'> & { payload?: unknown; timings: JobTimings };

/** An event's fields on the wire: its stream id is a cursor; fields flattened, JSON ones parsed. */
export interface EventFields {
  id: string;
  pool: string;
  ts: number;
  job?: string;
  state?: string;
  progress?: unknown;
  /** on a job's terminal event, for subscribers of that job */
  result?: unknown;
  error?: unknown;
  [field: string]: unknown;
}

/** One event (history, SSE, SDK): `type` is job.queued, job.starting, job.running, job.progress, job.succeeded, job.failed, job.canceled, job.expired, job.retrying, worker.*, machine.*, ... */
export interface EventView extends EventFields {
  type: string;
}

/** Every error answer. */
export interface ApiErrorBody {
  error: { code: string; message: string; issues?: ValidationIssue[] };
}

export const StreamId = z.string().regex(/^\d{1,20}-\d{1,20}$/, 'an event id looks like 1700000000000-0');

/** What a WebSocket client may send on /v1/live. */
export const LiveClientMessage = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('subscribe'),
      job: JobId,
      /** resume after this event id, or 'start' for every event of the job; left out: a snapshot, then what follows */
      after: z.union([z.literal('start'), StreamId]).optional(),
    })
    .strict(),
  z.object({ type: z.literal('unsubscribe'), job: JobId }).strict(),
  z
    .object({
      type: z.literal('monitor'),
      /** resume each pool after its event id; left out: a snapshot, then what follows */
      after: z.record(PoolName, StreamId).optional(),
    })
    .strict(),
]);
export type LiveClientMessage = z.input<typeof LiveClientMessage>;

/** What the server sends on /v1/live. */
export type LiveServerMessage =
  | { type: 'snapshot'; job: JobView; cursor: string }
  | (EventFields & { type: 'event'; event: string })
  | { type: 'position'; job: string; position: number }
  | { type: 'monitor.snapshot'; cursors: Record<string, string>; queues: unknown; workers: unknown; machines: unknown }
  | { type: 'error'; code: string; message: string; job?: string; issues?: ValidationIssue[] };

/** WebSocket close code for a consumer that does not keep up (its send buffer passed the bound). */
export const CLOSE_SLOW_CONSUMER = 4008;

/** Stream ids (`<ms>-<seq>`) in order: the cursors of every event feed. */
export function compareStreamIds(a: string, b: string): number {
  const [am = '0', as = '0'] = a.split('-');
  const [bm = '0', bs = '0'] = b.split('-');
  return Number(am) - Number(bm) || Number(as) - Number(bs);
}
