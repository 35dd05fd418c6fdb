import { z } from 'zod';
import type { EventView } from './api-protocol';
import { JobProgress } from './job';
import { PLANNER_ACTIONS } from './planner';
import { poolOfShard } from './pool-shards';
import { MACHINE_STATES } from './registry';

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
/** a yes/no field, written '1' or '0', read as a boolean */
const flag = z.enum(['0', '1']).transform((value) => value === '1');

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
  /** a cross-pool fallback claim: why the job left its pool (see claim_fallback.lua), and the worker's own pool */
  fallback: optionalText,
  home_pool: optionalText,
  /** model affinity of the claim: the worker held the class's models loaded, on disk, or not (absent: the class names no models) */
  affinity: z.enum(['warm', 'disk', 'cold']).optional(),
});
export const JobRunningEvent = z.object({ type: z.literal('job.running'), ...jobBase, worker: optionalText });
export const JobProgressEvent = z.object({ type: z.literal('job.progress'), ...jobBase, progress: jsonProgress });
export const JobRetryingEvent = z.object({ type: z.literal('job.retrying'), ...jobBase, reason: text, retry_at: ms });
export const JobFinishedEvent = z.object({
  type: z.literal(['job.succeeded', 'job.failed', 'job.canceled', 'job.expired']),
  ...jobBase,
  worker: optionalText,
  /** job.failed: the failure kind that ended it (absent in events written before it was recorded) */
  reason: optionalText,
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
  /** prefetch and evict: the model (absent for the other actions, and in events written before models came) */
  model: optionalText,
  command: text,
  by: optionalText,
});
export const MachineCommandDoneEvent = z.object({
  type: z.literal('machine.command.done'),
  machine: text,
  command: text,
  action: optionalText,
  service: optionalText,
  model: optionalText,
  outcome: text,
  message: optionalText,
});
/** the planner told a machine to prefetch or evict a model (planner_decision); forecast: the model's forecast jobs per 5-minute bucket */
export const PlannerDecisionEvent = z.object({
  type: z.literal('planner.decision'),
  machine: text,
  action: z.enum(PLANNER_ACTIONS),
  model: text,
  reason: text,
  forecast: z.string().regex(/^-?\d+(?:\.\d+)?$/, 'a decimal number').transform(Number),
});
/** a process the machine agent supervises changed (its other fields: restarts, exit_code, signal, pid, delay_ms, ...) */
export const MachineProcessEvent = z.looseObject({ type: z.literal('machine.process'), machine: text, process: text, state: text });
export const ClassRoutableEvent = z.object({ type: z.literal('class.routable'), class: text });
export const ServicePausedEvent = z.object({ type: z.literal('service.paused'), service: text, by: optionalText, reason: optionalText });
export const ServiceResumedEvent = z.object({ type: z.literal('service.resumed'), service: text, by: optionalText });
export const ClockUnwatchedEvent = z.object({ type: z.literal('clock.unwatched'), from: ms, gap_ms: ms, grace_until: ms });

/**
 * A workflow's progress (functions/includes/65-workflows.lua): submitted, a step
 * succeeded or failed (`step`), and its end; workflow.failed names the step that failed it and why.
 */
const workflowBase = { workflow: text, state: text, tenant: text };
export const WorkflowSubmittedEvent = z.object({ type: z.literal('workflow.submitted'), ...workflowBase });
export const WorkflowStepSucceededEvent = z.object({ type: z.literal('workflow.step_succeeded'), ...workflowBase, step: text });
/** a step failed (`error` says why); `optional` (stored '1' / '0', read as a boolean): the workflow goes on without its result */
export const WorkflowStepFailedEvent = z.object({ type: z.literal('workflow.step_failed'), ...workflowBase, step: text, error: text, optional: flag });
export const WorkflowSucceededEvent = z.object({ type: z.literal('workflow.succeeded'), ...workflowBase });
export const WorkflowFailedEvent = z.object({ type: z.literal('workflow.failed'), ...workflowBase, step: text, error: text });
export const WorkflowCanceledEvent = z.object({ type: z.literal('workflow.canceled'), ...workflowBase });

/** The machine's state changed (register_machine: the agent's state; tick: offline, then gone). */
export const MACHINE_EVENT_STATES = [...MACHINE_STATES, 'gone'] as const;
export const MachineStateEvent = z.object({
  type: z.literal(MACHINE_EVENT_STATES.map((s) => `machine.${s}` as const)),
  machine: text,
  state: z.enum(MACHINE_EVENT_STATES),
});

/** Every event the Lua library appends. */
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
  MachineStateEvent,
  ClassRoutableEvent,
  ServicePausedEvent,
  ServiceResumedEvent,
  ClockUnwatchedEvent,
  PlannerDecisionEvent,
  WorkflowSubmittedEvent,
  WorkflowStepSucceededEvent,
  WorkflowStepFailedEvent,
  WorkflowSucceededEvent,
  WorkflowFailedEvent,
  WorkflowCanceledEvent,
]);
export type StreamEventBody = z.output<typeof StreamEventBody>;

export type StreamEventType = StreamEventBody['type'];

/** Every event type, from the union: the list filters and flags are checked against. */
export const STREAM_EVENT_TYPES: readonly StreamEventType[] = StreamEventBody.options.flatMap((variant) => [...variant.shape.type.values]);

/** The families of event types (`job.*`, `worker.*`, ...), for filters that take a whole family. */
export const EVENT_FAMILIES = [...new Set(STREAM_EVENT_TYPES.map((type) => type.slice(0, type.indexOf('.'))))];

/**
 * Where an entry sits: its pool; the shard of the pool whose stream holds it
 * (the pool's own name for shard 0, `<pool>_<k>` for shard k); its stream id,
 * a cursor within that shard's stream; its time (ms, Redis's clock).
 */
interface EntryPosition {
  pool: string;
  shard: string;
  id: string;
  ts: number;
}

export type JobStreamEvent = EntryPosition & Extract<StreamEventBody, { type: `job.${string}` }>;
/** an entry this code does not know (a newer library, or a corrupt one): kept so a reader can skip it knowingly */
export type UnknownStreamEvent = EntryPosition & { type: 'unknown'; raw: Record<string, string>; problem: string };
export type KnownStreamEvent = EntryPosition & StreamEventBody;
export type StreamEvent = KnownStreamEvent | UnknownStreamEvent;
/** The events of some types (`StreamEventOf<'machine.process'>`). */
export type StreamEventOf<T extends StreamEventType> = KnownStreamEvent & { type: T };

/**
 * The event of one entry of `shard`'s stream (`fields`: its field/value pairs,
 * flat as XREAD gives them, or folded): the one parse every reader of the
 * stream goes through (the broker's reads call it). An entry in the form the
 * Lua library writes takes the fast path below; anything else gets zod's verdict.
 */
export function parseStreamEntry(shard: string, id: string, fields: string[] | Record<string, string>): StreamEvent {
  const raw = Array.isArray(fields) ? fold(fields) : fields;
  const ts = Number(raw.ts ?? Number.parseInt(id, 10));
  const pool = poolOfShard(shard);
  const fast = fastParse(raw);
  if (fast) {
    fast.pool = pool;
    fast.shard = shard;
    fast.id = id;
    fast.ts = Number.isFinite(ts) ? ts : 0;
    return fast as unknown as StreamEvent;
  }
  const position = { pool, shard, id, ts: Number.isFinite(ts) ? ts : 0 };
  const known = StreamEventBody.safeParse(raw);
  if (known.success) return { ...known.data, ...position };
  const problem = known.error.issues.map((i) => `${i.path.join('.') || 'entry'}: ${i.message}`).join('; ');
  return { ...position, type: 'unknown', raw, problem };
}

// ---------------------------------------------------------------- the fast path
//
// The API's hub reads up to 1,000 entries per XREAD; zod takes about 6 µs an
// entry, a check by hand about a tenth of that. The checks are derived from the
// union (each field's schema is one of the building blocks above), so nothing
// is declared twice. A reader only accepts what zod would accept with the same
// output, and only in the canonical form Lua writes (numbers as plain decimals);
// anything else (an unknown type, a loose variant, a malformed field, "1e3")
// returns undefined and goes to zod, which has the last word and the message.

const REJECT = Symbol('reject');
type FieldReader = (value: string) => unknown;
type VariantReader = Array<[name: string, read: FieldReader, optional: boolean]>;

const DECIMAL = /^(?:0|-?[1-9][0-9]*)$/;
function readInteger(value: string): unknown {
  if (!DECIMAL.test(value)) return REJECT;
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : REJECT;
}

function readProgress(value: string): unknown {
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch {
    return REJECT;
  }
  const parsed = JobProgress.safeParse(json);
  return parsed.success ? parsed.data : REJECT;
}

/** The reader of one field's schema, or undefined when it is not one of the building blocks. */
function fieldReader(schema: z.ZodType): [FieldReader, boolean] | undefined {
  if (schema === text) return [(value) => value, false];
  if (schema === optionalText) return [(value) => (value === '' ? undefined : value), true];
  if (schema === ms) return [readInteger, false];
  if (schema === jsonProgress) return [readProgress, false];
  if (schema === flag) return [(value) => (value === '1' ? true : value === '0' ? false : REJECT), false];
  if (schema instanceof z.ZodOptional && schema.unwrap() === ms) return [readInteger, true];
  if (schema instanceof z.ZodEnum) {
    const allowed = new Set<unknown>(schema.options);
    return [(value) => (allowed.has(value) ? value : REJECT), false];
  }
  return undefined;
}

const FAST_READERS = new Map<string, VariantReader>();
for (const variant of StreamEventBody.options) {
  if (variant.def.catchall !== undefined && !(variant.def.catchall instanceof z.ZodNever)) continue; // loose: zod keeps the rest
  const reader: VariantReader = [];
  let complete = true;
  for (const [name, schema] of Object.entries(variant.shape as Record<string, z.ZodType>)) {
    if (name === 'type') continue;
    const field = fieldReader(schema);
    if (!field) complete = false;
    else reader.push([name, field[0], field[1]]);
  }
  if (complete) for (const type of variant.shape.type.values) FAST_READERS.set(type, reader);
}

/** The event body of a well-formed entry, exactly as zod would give it (declared fields only); undefined: ask zod. */
function fastParse(raw: Record<string, string>): Record<string, unknown> | undefined {
  const reader = FAST_READERS.get(raw.type!);
  if (!reader) return undefined;
  const out: Record<string, unknown> = { type: raw.type };
  for (const [name, read, optional] of reader) {
    const value = raw[name];
    if (value === undefined) {
      if (optional) continue;
      return undefined;
    }
    const parsed = read(value);
    if (parsed === REJECT) return undefined;
    out[name] = parsed;
  }
  return out;
}

/**
 * Why a stream entry is not exactly what the union declares: an unknown type,
 * a field missing or malformed, or a field the union does not name (the parse
 * itself ignores extra fields, so that a newer library's additions do not stop
 * an older reader). Empty when it is. For tests of the Lua side.
 */
export function streamEntryProblems(fields: string[] | Record<string, string>): string[] {
  const raw = Array.isArray(fields) ? fold(fields) : fields;
  const parsed = StreamEventBody.safeParse(raw);
  if (!parsed.success) return parsed.error.issues.map((i) => `${raw.type ?? '(no type)'}: ${i.path.join('.') || 'entry'}: ${i.message}`);
  const variant = StreamEventBody.options.find((v) => v.shape.type.values.has(raw.type as never))!;
  if (variant.def.catchall !== undefined && !(variant.def.catchall instanceof z.ZodNever)) return [];
  const declared = new Set([...Object.keys(variant.shape), 'ts']);
  return Object.keys(raw)
    .filter((name) => !declared.has(name))
    .map((name) => `${raw.type}: field ${name} is not declared in core/events.ts`);
}

export function isJobEvent(event: StreamEvent): event is JobStreamEvent {
  return event.type.startsWith('job.');
}

export type WorkflowStreamEvent = EntryPosition & Extract<StreamEventBody, { type: `workflow.${string}` }>;
export function isWorkflowEvent(event: StreamEvent): event is WorkflowStreamEvent {
  return event.type.startsWith('workflow.');
}

/** The workflow an event is about: a workflow.* event's, or a step job's (its id starts with the workflow's: 65-workflows.lua). */
export function workflowOfEvent(event: StreamEvent): string | undefined {
  if (event.type === 'unknown') return event.raw.workflow || undefined;
  return isWorkflowEvent(event) ? event.workflow : undefined;
}

/** The job an event is about (also of an entry this code does not know, so that its subscribers still get it). */
export function jobOfEvent(event: StreamEvent): string | undefined {
  if (event.type === 'unknown') return event.raw.job || undefined;
  return isJobEvent(event) ? event.job : undefined;
}

export const TERMINAL_EVENT_TYPES = ['job.succeeded', 'job.failed', 'job.canceled', 'job.expired'] as const satisfies readonly StreamEventType[];
export function isTerminalEvent<E extends { type: string }>(event: E): event is E & { type: (typeof TERMINAL_EVENT_TYPES)[number] } {
  return (TERMINAL_EVENT_TYPES as readonly string[]).includes(event.type);
}

/**
 * A filter on event types, as `?events=` and `--events` take it: a comma-separated
 * list of types (`job.succeeded`) and families (`job.*`). An unknown one is refused
 * with the list of known ones.
 */
export const EventTypeFilter = z
  .string()
  .transform((value) => value.split(',').map((part) => part.trim()).filter(Boolean))
  .superRefine((parts, ctx) => {
    if (parts.length === 0) ctx.addIssue({ code: 'custom', message: 'name at least one event type or family (job.*)' });
    for (const part of parts) {
      if ((STREAM_EVENT_TYPES as readonly string[]).includes(part)) continue;
      if (part.endsWith('.*') && EVENT_FAMILIES.includes(part.slice(0, -2))) continue;
      ctx.addIssue({
        code: 'custom',
        message: `unknown event type '${part}': expected one of ${STREAM_EVENT_TYPES.join(', ')}, or a family: ${EVENT_FAMILIES.map((f) => `${f}.*`).join(', ')}`,
      });
    }
  });
export type EventTypeFilter = z.output<typeof EventTypeFilter>;

/** Whether an event passes a filter (no filter: every event). */
export function eventTypeMatches(filter: EventTypeFilter | undefined, type: string): boolean {
  if (!filter) return true;
  return filter.some((part) => part === type || (part.endsWith('.*') && type.startsWith(part.slice(0, -1))));
}

/**
 * An event as the API sends it (history, SSE, WebSocket, webhooks): its fields
 * as parsed, `routable` as a boolean, `shard` only when the event is in a shard
 * other than the pool's first (a feed's cursors are per `shard ?? pool`). An
 * entry this code does not know goes out as stored, with its own type, so a
 * client that knows it still can use it.
 */
export function eventView(event: StreamEvent): EventView {
  if (event.type === 'unknown') {
    const { type = 'unknown', ts: _ts, ...fields } = event.raw;
    const view: EventView = { id: event.id, pool: event.pool, ...(event.shard === event.pool ? {} : { shard: event.shard }), ts: event.ts, type };
    for (const [key, value] of Object.entries(fields)) if (value !== '') view[key] = value;
    return view;
  }
  const view: EventView = { ...event };
  if (event.shard === event.pool) delete view.shard;
  for (const [key, value] of Object.entries(view)) if (value === undefined) delete view[key];
  if (event.type === 'job.queued' && event.routable !== undefined) view.routable = event.routable === '1';
  return view;
}

/** What eventView gives for a known event, typed: what the monitor and other readers of the API's feeds switch on. */
export type StreamEventView = KnownStreamEvent extends infer E
  ? E extends { type: 'job.queued' }
    ? Without<E, 'routable' | 'shard'> & { routable?: boolean; shard?: string }
    : Without<E, 'shard'> & { shard?: string }
  : never;

/** `T` less the keys `K`; unlike Omit, it keeps T's known keys when T also has an index signature (catch-all events). */
type Without<T, K extends PropertyKey> = { [P in keyof T as P extends K ? never : P]: T[P] };

/** For exhaustive switches over event types: a type added to the union without a case is a compile error here. */
export function assertNever(value: never): never {
  throw new Error(`unhandled event: ${JSON.stringify(value)}`);
}

function fold(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}
