import { z } from 'zod';
import { JobProgress } from './job';

/**
 * The events the Lua library appends to each pool's stream `<ns>:{<pool>}:events`,
 * one discriminated union on `type`: the one written list of what a stream entry
 * may hold (see functions/includes/40-lifecycle.lua `job_event` and every
 * `events_append`). Stream fields are text; numbers and JSON are decoded here.
 */

const ms = z.coerce.number().int();
const text = z.string();
const optionalText = z
  .string()
  .optional()
  .transform((value) => (value === '' ? undefined : value));

const jobBase = {
  /** the job's id */
  job: text,
  state: text,
  tenant: text,
  service: text,
};

const jsonProgress = z.string().transform((value, ctx) => {
  try {
    return JobProgress.parse(JSON.parse(value));
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: `progress is not a progress report: ${(error as Error).message}` });
    return z.NEVER;
  }
});

/** Why a job is (back) in its queue: absent at submit. */
export const QUEUED_REASONS = ['retry', 'manual_retry', 'worker_lost', 'infrastructure'] as const;

export const JobQueuedEvent = z.object({
  type: z.literal('job.queued'),
  ...jobBase,
  /** at submit: '1' when a registered worker can run it */
  routable: optionalText,
  /** when the job went back to the queue: 'retry' (its backoff ran out), 'manual_retry', or a failure kind */
  reason: optionalText,
});
export const JobStartingEvent = z.object({
  type: z.literal('job.starting'),
  ...jobBase,
  worker: text,
  machine: optionalText,
  attempt: ms,
  submitted_at: ms.optional(),
});
export const JobRunningEvent = z.object({ type: z.literal('job.running'), ...jobBase, worker: optionalText });
export const JobProgressEvent = z.object({ type: z.literal('job.progress'), ...jobBase, progress: jsonProgress });
export const JobRetryingEvent = z.object({ type: z.literal('job.retrying'), ...jobBase, reason: text, retry_at: ms });
export const JobFinishedEvent = z.object({
  type: z.literal(['job.succeeded', 'job.failed', 'job.canceled', 'job.expired']),
  ...jobBase,
  worker: optionalText,
});

export const WORKER_EVENT_STATES = ['idle', 'busy', 'draining', 'offline', 'gone'] as const;
export const WorkerRegisteredEvent = z.object({ type: z.literal('worker.registered'), worker: text, machine: optionalText });
export const WorkerStateEvent = z.object({
  type: z.literal(WORKER_EVENT_STATES.map((s) => `worker.${s}` as const)),
  worker: text,
  state: z.enum(WORKER_EVENT_STATES),
  machine: optionalText,
});
export const MachineCommandEvent = z.object({
  type: z.literal('machine.command'),
  machine: text,
  action: text,
  service: optionalText,
  command: text,
  by: optionalText,
});
export const MachineCommandDoneEvent = z.object({
  type: z.literal('machine.command.done'),
  machine: text,
  command: text,
  action: optionalText,
  service: optionalText,
  outcome: text,
  message: optionalText,
});
/** a process the machine agent supervises changed (its other fields: restarts, exit_code, signal, pid, delay_ms, ...) */
export const MachineProcessEvent = z.looseObject({ type: z.literal('machine.process'), machine: text, process: text, state: text });
export const ClassRoutableEvent = z.object({ type: z.literal('class.routable'), class: text });
export const ServicePausedEvent = z.object({ type: z.literal('service.paused'), service: text, by: optionalText, reason: optionalText });
export const ServiceResumedEvent = z.object({ type: z.literal('service.resumed'), service: text, by: optionalText });
export const ClockUnwatchedEvent = z.object({ type: z.literal('clock.unwatched'), from: ms, gap_ms: ms, grace_until: ms });

/** Every event with a fixed type. (`machine.<state>` events carry the agent's own state vocabulary: see MachineStateEvent.) */
export const StreamEventBody = z.discriminatedUnion('type', [
  JobQueuedEvent,
  JobStartingEvent,
  JobRunningEvent,
  JobProgressEvent,
  JobRetryingEvent,
  JobFinishedEvent,
  WorkerRegisteredEvent,
  WorkerStateEvent,
  MachineCommandEvent,
  MachineCommandDoneEvent,
  MachineProcessEvent,
  ClassRoutableEvent,
  ServicePausedEvent,
  ServiceResumedEvent,
  ClockUnwatchedEvent,
]);
export type StreamEventBody = z.output<typeof StreamEventBody>;

/** `machine.<state>`: the machine agent's state changed (starting, ready, draining, offline, gone, ...). */
export const MachineStateEvent = z.object({ type: z.string().regex(/^machine\.[a-z_]+$/), machine: text, state: text });
export type MachineStateEvent = z.output<typeof MachineStateEvent>;

/** Where an entry sits: its pool, its stream id (a cursor) and its time (ms, Redis's clock). */
interface EntryPosition {
  pool: string;
  id: string;
  ts: number;
}

export type JobStreamEvent = EntryPosition & Extract<StreamEventBody, { type: `job.${string}` }>;
export type StreamEvent =
  | (EntryPosition & StreamEventBody)
  | (EntryPosition & MachineStateEvent & { type: `machine.${string}` })
  /** an entry this code does not know (a newer library, or a corrupt one): kept so a reader can skip it knowingly */
  | (EntryPosition & { type: 'unknown'; raw: Record<string, string>; problem: string });

/** The event of one stream entry (`fields`: its field/value pairs, flat as XREAD gives them, or folded). */
export function parseStreamEntry(pool: string, id: string, fields: string[] | Record<string, string>): StreamEvent {
  const raw = Array.isArray(fields) ? fold(fields) : fields;
  const ts = Number(raw.ts ?? Number.parseInt(id, 10));
  const position = { pool, id, ts: Number.isFinite(ts) ? ts : 0 };
  const known = StreamEventBody.safeParse(raw);
  if (known.success) return { ...position, ...known.data } as StreamEvent;
  if (raw.type?.startsWith('machine.')) {
    const machine = MachineStateEvent.safeParse(raw);
    if (machine.success) return { ...position, ...machine.data } as StreamEvent;
  }
  const problem = known.error.issues.map((i) => `${i.path.join('.') || 'entry'}: ${i.message}`).join('; ');
  return { ...position, type: 'unknown', raw, problem };
}

export function isJobEvent(event: StreamEvent): event is JobStreamEvent {
  return event.type.startsWith('job.');
}

function fold(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}
