import { ApiErrorBody, EventTypeFilter, StreamId, JobErrorInfo, JobId, JobState, MachineAction, MachineId, ModelName, NodeAddress, PoolName, QUEUE_HISTORY_RANGES, ServiceName, ShardCount, SubmitJobInput, SubmitWorkflowInput, TenantId } from '@emp/core';
import { z } from 'zod';
import { ApiError } from './errors';

/**
 * Request schemas of every route, derived from @emp/core's zod schemas (the one
 * definition of each shape); fastify validates with them and the OpenAPI
 * document is generated from them. Response schemas are @emp/core's wire shapes
 * (api-protocol.ts), shared with the SDK.
 */

/** A route's answers for the OpenAPI document: its own, and the error body for every 4xx and 5xx. */
export function answers<T extends Record<number, z.ZodType>>(ok: T): T & { '4xx': typeof ApiErrorBody; '5xx': typeof ApiErrorBody } {
  return { ...ok, '4xx': ApiErrorBody, '5xx': ApiErrorBody };
}

/** The longest a request may hold for a job's result, like RunPod's /runsync. */
export const MAX_WAIT_SECONDS = 90;

export const JobParams = z.object({ id: JobId }).strict();

/** A submit as the core takes it, but the tenant may be left to the API key. */
export const SubmitBody = SubmitJobInput.extend({ tenant: TenantId.optional() });

export const SubmitQuery = z
  .object({
    /** hold the request up to this many seconds for the job to finish */
    wait: z.coerce.number().int().min(0).max(MAX_WAIT_SECONDS).optional(),
    api_key: z.string().optional(),
  })
  .strict();

/**
 * `?durable=1`: answer only once a Redis replica has the job (docs/scale-out.md); `?durable=0`
 * does not wait even where the server's EMP_DURABLE_SUBMIT says to; absent: the server's setting
 */
const DurableFlag = z
  .enum(['1', '0', 'true', 'false'], { error: 'durable is 1 or 0 (true or false)' })
  .transform((flag) => flag === '1' || flag === 'true')
  .optional();

/** The query of a submit: SubmitQuery's, and `durable`. */
export const SubmitJobQuery = SubmitQuery.extend({ durable: DurableFlag }).strict();

/** The query of a batch submit. */
export const BatchQuery = z.object({ durable: DurableFlag, api_key: z.string().optional() }).strict();

/** The headers of a workflow submit: its Idempotency-Key. */
export const IdempotencyHeaders = z.object({ 'idempotency-key': z.string().min(1).max(255).optional() }).loose();

/** The headers of a job submit: its Idempotency-Key, and `Prefer: wait=<seconds>` (as Replicate): the same as ?wait. */
export const SubmitHeaders = IdempotencyHeaders.extend({ prefer: z.string().max(200).optional() }).loose();

/** The idempotency key of a request that may give it as a header or in its body: they must agree. */
export function idempotencyKey(header: string | undefined, body: string | undefined): string | undefined {
  if (header !== undefined && body !== undefined && header !== body) {
    throw new ApiError(400, 'VALIDATION', 'the Idempotency-Key header and the body\'s idempotency_key differ');
  }
  return header ?? body;
}

export const BatchBody = z.object({ jobs: z.array(SubmitBody).min(1).max(100) }).strict();

const csv = <T extends z.ZodType<string, string>>(item: T, max: number) =>
  z
    .string()
    .max(2_000)
    .transform((text) => text.split(',').map((part) => part.trim()).filter(Boolean))
    .pipe(z.array(item).min(1).max(max));

/** ms since the epoch, or an ISO 8601 time (a query string's or a body's text) */
export const Instant = z
  .string()
  .max(40)
  .transform((text, ctx) => {
    const ms = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
    if (!Number.isSafeInteger(ms) || ms < 0) {
      ctx.addIssue({ code: 'custom', message: 'expected ms since the epoch or an ISO 8601 time' });
      return z.NEVER;
    }
    return ms;
  });

export const ListQuery = z
  .object({
    state: csv(JobState, 8).optional(),
    service: csv(ServiceName, 32).optional(),
    tenant: TenantId.optional(),
    pool: PoolName.optional(),
    since: Instant.optional(),
    until: Instant.optional(),
    cursor: z.string().max(400).optional(),
    limit: z.coerce.number().int().min(1).max(100).default(50),
    api_key: z.string().optional(),
  })
  .strict();

export const EventsQuery = z
  .object({
    after: StreamId.optional(),
    limit: z.coerce.number().int().min(1).max(1_000).default(500),
    api_key: z.string().optional(),
  })
  .strict();

export const StreamQuery = z
  .object({
    after: StreamId.optional(),
    /** only these event types and families, comma-separated (`job.progress,job.succeeded`, `job.*`); the stream still ends after the terminal event */
    events: EventTypeFilter.optional(),
    api_key: z.string().optional(),
  })
  .strict();

/** Optional bodies: a request without one (fastify passes null) is the empty object. */
const optionalBody = <T extends z.ZodObject>(schema: T) => schema.nullish().transform((body): z.output<T> => body ?? ({} as z.output<T>));

export const CancelBody = optionalBody(z.object({ reason: z.string().max(500).optional() }).strict());

/** The attempt a delegated call acts for: its fencing token, or the current attempt when left out. */
const FencingToken = z.string().regex(/^\d{1,20}$/, 'a fencing token is a decimal number');

export const CompleteBody = z.object({ token: FencingToken.optional(), result: z.unknown() }).strict();
export const FailBody = z.object({ token: FencingToken.optional(), error: JobErrorInfo }).strict();

export const PoolQuery = z.object({ pool: PoolName.optional(), api_key: z.string().optional() }).strict();

export const ServiceParams = z.object({ service: ServiceName }).strict();

export const PoolParams = z.object({ pool: PoolName }).strict();
/** PUT /v1/pools/:pool/shards: how many shards the pool's submits go to (1..64); `onto`: the masters a grow's added shards are put on */
export const ShardCountBody = z.object({ count: ShardCount, onto: z.array(NodeAddress).min(1).max(64).optional() }).strict();
export const PauseBody = optionalBody(z.object({ pool: PoolName.optional(), reason: z.string().max(500).optional() }).strict());

export const MachineParams = z.object({ id: MachineId, action: MachineAction }).strict();
export const MachineCommandBody = optionalBody(
  z
    .object({
      pool: PoolName.optional(),
      service: ServiceName.optional(),
      /** prefetch, evict and load: the model (required for them, refused for the other actions) */
      model: ModelName.optional(),
      reason: z.string().max(500).optional(),
    })
    .strict(),
);

export const MachineLogParams = z.object({ id: MachineId }).strict();
export const MachineLogQuery = z
  .object({
    /** the machine's pool; found by looking when left out */
    pool: PoolName.optional(),
    /** one process only: `<service>-<slot>` or `worker-<primary>-<slot>` */
    process: z.string().regex(/^[a-z0-9][a-z0-9.-]{0,99}$/, 'a process name is lowercase letters, digits, dots and dashes').optional(),
    /** lines after this stream id (a page's `cursor`); without it, the newest `limit` lines */
    after: StreamId.optional(),
    limit: z.coerce.number().int().min(1).max(1_000).default(100),
    /** 1: Server-Sent Events, one `log` event per line, kept open for new lines */
    follow: z.enum(['0', '1', 'true', 'false']).transform((v) => v === '1' || v === 'true').default(false),
    api_key: z.string().optional(),
  })
  .strict();

export const QueueHistoryQuery = PoolQuery.extend({
  /** samples from this time on (ms since the epoch or ISO 8601); the whole range when left out */
  since: Instant.optional(),
  /** the last hour sample by sample, or the last day in coarser slots */
  range: z.enum(QUEUE_HISTORY_RANGES).default('hour'),
}).strict();

export const MachineEventsQuery = z
  .object({
    /** the machine's pool; found by looking when left out */
    pool: PoolName.optional(),
    limit: z.coerce.number().int().min(1).max(1_000).default(200),
    api_key: z.string().optional(),
  })
  .strict();

/** A workflow as the core takes it, but the tenant may be left to the API key. */
export const WorkflowBody = SubmitWorkflowInput.extend({ tenant: TenantId.optional() }).strict();

export const WorkflowListQuery = z
  .object({
    tenant: TenantId.optional(),
    limit: z.coerce.number().int().min(1).max(100).default(20),
    api_key: z.string().optional(),
  })
  .strict();
