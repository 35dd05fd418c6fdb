import { z } from 'zod';
import { JobRequirements, PoolName, ServiceName, TenantId } from './requirements';
import { webhookTargetProblem } from './webhook-target';

/** One vocabulary everywhere: Redis, API, SDK, monitor, webhooks. */
export const JOB_STATES = ['queued', 'starting', 'running', 'retrying', 'succeeded', 'failed', 'canceled', 'expired'] as const;
export const JobState = z.enum(JOB_STATES);
export type JobState = z.infer<typeof JobState>;
const TERMINAL = ['succeeded', 'failed', 'canceled', 'expired'] as const satisfies readonly JobState[];
export const TERMINAL_STATES: readonly JobState[] = TERMINAL;

/**
 * How a failed attempt is treated: `retryable` and `timeout` use up the user's
 * attempts and back off; `worker_lost` and `infrastructure` (spot interruption)
 * are retried at once without touching them; `non_retryable` fails the job.
 */
export const FAILURE_KINDS = ['retryable', 'non_retryable', 'timeout', 'worker_lost', 'infrastructure'] as const;
export const FailureKind = z.enum(FAILURE_KINDS);
export type FailureKind = z.infer<typeof FailureKind>;

export const JobErrorInfo = z
  .object({
    kind: FailureKind,
    message: z.string().max(10_000),
    type: z.string().max(200).optional(),
    details: z.unknown().optional(),
  })
  .strict();
export type JobErrorInfo = z.infer<typeof JobErrorInfo>;

export const PROGRESS_STAGES = ['queued', 'downloading_model', 'loading_model', 'running', 'uploading'] as const;
export const JobProgress = z
  .object({
    stage: z.enum(PROGRESS_STAGES),
    value: z.number().finite().nonnegative().optional(),
    max: z.number().finite().positive().optional(),
    message: z.string().max(1_000).optional(),
    node: z.string().max(200).optional(),
    preview: z.string().max(2_000).optional(),
  })
  .strict();
export type JobProgress = z.infer<typeof JobProgress>;

/**
 * A job's progress as readers see it: the worker's last report while the job
 * runs; once it has ended, stage is its terminal state (the stage vocabulary:
 * docs/api.md#progress).
 */
export const PROGRESS_VIEW_STAGES = [...PROGRESS_STAGES, ...TERMINAL] as const;
export const JobProgressView = JobProgress.extend({ stage: z.enum(PROGRESS_VIEW_STAGES) });
export type JobProgressView = z.infer<typeof JobProgressView>;

export const Backoff = z
  .object({
    type: z.enum(['exponential', 'fixed']).default('exponential'),
    delay_ms: z.number().int().min(0).max(86_400_000).default(1_000),
    max_delay_ms: z.number().int().min(0).max(86_400_000).default(300_000),
    /** fraction of each delay that is randomised away (0 = none, 1 = full jitter) */
    jitter: z.number().min(0).max(1).default(0.5),
  })
  .strict();
export type Backoff = z.infer<typeof Backoff>;

export const Deadlines = z
  .object({
    /** time allowed in the queue before the job is claimed; then `expired` */
    queue_ttl_ms: z.number().int().positive().max(30 * 86_400_000).optional(),
    /** time allowed until the job is running (claimed and its model loaded); then `expired` */
    start_timeout_ms: z.number().int().positive().max(30 * 86_400_000).optional(),
    /** time allowed to run once started; then the attempt fails with kind `timeout` */
    execution_timeout_ms: z.number().int().positive().max(7 * 86_400_000).optional(),
  })
  .strict();

/** What a webhook receives (docs/webhooks.md): the job vocabulary. */
export const WEBHOOK_EVENT_TYPES = [
  'job.queued',
  'job.started',
  'job.progress',
  'job.succeeded',
  'job.failed',
  'job.canceled',
  'job.expired',
  'job.retrying',
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/** Replicate's per-prediction filter words, accepted in a job's `webhook.events` as these event types. */
export const WEBHOOK_EVENT_ALIASES = {
  start: ['job.started'],
  output: ['job.progress'],
  logs: ['job.progress'],
  completed: ['job.succeeded', 'job.failed', 'job.canceled', 'job.expired'],
} as const satisfies Record<string, readonly WebhookEventType[]>;

export const WebhookSpec = z
  .object({
    url: z.string().url().max(2_000),
    /** event types to deliver (or Replicate's aliases); absent: every one */
    events: z.array(z.enum([...WEBHOOK_EVENT_TYPES, 'start', 'output', 'logs', 'completed'])).optional(),
  })
  .strict();

/** Whether a job's webhook wants `type`: no filter takes every event type. */
export function webhookWants(spec: z.infer<typeof WebhookSpec>, type: WebhookEventType): boolean {
  if (!spec.events) return true;
  return spec.events.some((name) => name === type || (WEBHOOK_EVENT_ALIASES[name as keyof typeof WEBHOOK_EVENT_ALIASES] as readonly string[] | undefined)?.includes(type));
}

/**
 * A webhook as a submit gives it: http or https only. Whether its host may be
 * private is the submitting server's setting (the API checks it with
 * webhookTargetProblem); stored jobs keep the plain WebhookSpec.
 */
export const WebhookRequest = WebhookSpec.superRefine((spec, ctx) => {
  const problem = webhookTargetProblem(spec.url, { allowPrivate: true });
  if (problem) ctx.addIssue({ code: 'custom', path: ['url'], message: problem });
});

export const JobId = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,31}(_[1-9][0-9]?)?\.[0-9a-z]{12,40}$/, 'a job id looks like <shard>.<id>, e.g. standard.m3kx9a0b1c2d3e4f or standard_2.m3kx9a0b1c2d3e4f');

/**
 * Attempt budgets of a job submitted without them. A job hash stores a budget
 * only when it differs; the Lua side (apply_failure) falls back to the same numbers.
 */
export const DEFAULT_MAX_ATTEMPTS = 3;
export const DEFAULT_MAX_INFRA_ATTEMPTS = 10;

/** The tenant of a job submitted without one. */
export const DEFAULT_TENANT = 'default';

export const SubmitJobInput = z
  .object({
    service: ServiceName,
    tenant: TenantId.default(DEFAULT_TENANT),
    payload: z.unknown().default({}),
    requirements: JobRequirements.default({}),
    /** -1000..1000, higher runs first; equal priorities run in submission order */
    priority: z.number().int().min(-1000).max(1000).default(0),
    max_attempts: z.number().int().min(1).max(100).default(DEFAULT_MAX_ATTEMPTS),
    /** infrastructure failures (lost workers, spot interruptions) allowed before the job fails */
    max_infra_attempts: z.number().int().min(1).max(100).default(DEFAULT_MAX_INFRA_ATTEMPTS),
    backoff: Backoff.optional(),
    deadlines: Deadlines.optional(),
    delay_ms: z.number().int().min(0).max(30 * 86_400_000).optional(),
    idempotency_key: z.string().min(1).max(255).optional(),
    webhook: WebhookRequest.optional(),
    workflow_id: z.string().min(1).max(200).optional(),
    step: z.number().int().min(0).max(10_000).optional(),
    /** how long the job is expected to run (s): routes it to the pool of that duration when it names none (docs/pools.md) */
    expected_duration_s: z
      .number({ error: 'expected_duration_s is a number of seconds' })
      .positive('expected_duration_s must be more than 0 seconds')
      .max(86_400, 'expected_duration_s is at most 86400 (one day)')
      .optional(),
  })
  .strict();
export type SubmitJobInput = z.input<typeof SubmitJobInput>;
export type SubmitJob = z.output<typeof SubmitJobInput>;

const ms = z.coerce.number().int();
const json = <T extends z.ZodType>(schema: T) =>
  z.string().transform((text, ctx) => {
    try {
      return schema.parse(JSON.parse(text)) as z.output<T>;
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: `not valid JSON of the expected shape: ${(error as Error).message}` });
      return z.NEVER;
    }
  });

/** A job hash as stored in Redis; parsed on every read so a corrupt record is reported, not passed on. */
export const JobRecord = z.object({
  state: JobState,
  class: z.string(),
  tenant: TenantId,
  service: ServiceName,
  /** priority and submission order in one sorted-set score: (1000 - priority) * 2^42 + sequence */
  score: ms,
  attempts: ms.default(0),
  failures: ms.default(0),
  infra_failures: ms.default(0),
  max_attempts: ms.default(DEFAULT_MAX_ATTEMPTS),
  max_infra_attempts: ms.default(DEFAULT_MAX_INFRA_ATTEMPTS),
  manual_retries: ms.default(0),
  submitted_at: ms,
  updated_at: ms.optional(),
  claimed_at: ms.optional(),
  started_at: ms.optional(),
  finished_at: ms.optional(),
  retry_at: ms.optional(),
  run_at: ms.optional(),
  retried_at: ms.optional(),
  queue_deadline: ms.optional(),
  start_deadline: ms.optional(),
  exec_timeout_ms: ms.optional(),
  worker: z.string().optional(),
  machine: z.string().optional(),
  last_worker: z.string().optional(),
  progress: json(JobProgress).optional(),
  result: json(z.unknown()).optional(),
  error: json(JobErrorInfo).optional(),
  idempotency_key: z.string().optional(),
  webhook: json(WebhookSpec).optional(),
  workflow_id: z.string().optional(),
  step: ms.optional(),
  cancel_reason: z.string().optional(),
  expire_reason: z.string().optional(),
  /** the W3C trace context of the submit, when tracing was on (docs/tracing.md) */
  traceparent: z.string().optional(),
  /** the job's duration class (routing.ts), whose execution times a success records */
  dclass: z.string().optional(),
  expected_duration_s: z.coerce.number().optional(),
  /** how the job's pool was chosen (routing.ts, docs/pools.md); absent on jobs submitted before routing */
  route_source: z.string().optional(),
  route_estimate_s: z.coerce.number().optional(),
  route_samples: z.coerce.number().int().optional(),
  route_level: z.string().optional(),
  route_skipped: z.string().optional(),
});

const Ms = z.number().int();
const Count = z.number().int().nonnegative();

export const ROUTE_SOURCES = ['named', 'hint', 'history', 'default'] as const;
export const RouteSource = z.enum(ROUTE_SOURCES);
export type RouteSource = z.infer<typeof RouteSource>;

/** Where routing put a job and why (routing.ts). */
export const JobRouting = z
  .object({
    pool: PoolName,
    source: RouteSource,
    /** the expected duration routing went by (s): the hint, or the p90 of similar jobs */
    estimate_s: z.number().nonnegative().optional(),
    /** how many past executions the estimate rests on (source history) */
    samples: Count.optional(),
    /** e.g. "routed to fast: p90 of 212 similar jobs = 8 s" */
    reason: z.string(),
  })
  .strict();
export type JobRouting = z.infer<typeof JobRouting>;

/** A job as clients see it: the one definition of its shape (the API's responses and the SDK's types derive from it). */
export const Job = z
  .object({
    id: JobId,
    pool: PoolName,
    tenant: TenantId,
    service: ServiceName,
    state: JobState,
    payload: z.unknown(),
    requirements: JobRequirements,
    /** content hash of everything matching looks at (see docs/broker.md) */
    requirement_class: z.string(),
    /** false while no worker that ever registered could run this job */
    routable: z.boolean(),
    /** jobs ahead of this one in its requirement class, while queued */
    position: Count.optional(),
    priority: z.number().int().min(-1000).max(1000),
    attempts: Count,
    failures: Count,
    infra_failures: Count,
    max_attempts: Count,
    max_infra_attempts: Count,
    manual_retries: Count,
    progress: JobProgressView.optional(),
    result: z.unknown().optional(),
    error: JobErrorInfo.optional(),
    /** the worker (and machine) of the current attempt, or of the last one once it ended */
    worker: z.string().optional(),
    machine: z.string().optional(),
    idempotency_key: z.string().optional(),
    webhook: WebhookSpec.optional(),
    workflow_id: z.string().optional(),
    step: Count.optional(),
    cancel_reason: z.string().optional(),
    expire_reason: z.string().optional(),
    /** the duration the submit gave (s) */
    expected_duration_s: z.number().positive().optional(),
    /** how its pool was chosen: named in its requirements, from the submit's hint, from learned durations, or the default */
    routing: JobRouting.optional(),
    /** ms since the epoch, by Redis's clock */
    timestamps: z
      .object({
        submitted_at: Ms,
        updated_at: Ms,
        claimed_at: Ms.optional(),
        started_at: Ms.optional(),
        finished_at: Ms.optional(),
        retry_at: Ms.optional(),
        run_at: Ms.optional(),
      })
      .strict(),
    deadlines: z
      .object({
        queue_deadline: Ms.optional(),
        start_deadline: Ms.optional(),
        execution_timeout_ms: Ms.optional(),
        lease_until: Ms.optional(),
      })
      .strict(),
  })
  .strict();
export type Job = z.infer<typeof Job>;

export const PRIORITY_SPAN = 2 ** 42;

export function priorityOfScore(score: number): number {
  return 1000 - Math.floor(score / PRIORITY_SPAN);
}

/** The shard a job lives in (its id's first part): the pool itself, or `<pool>_<k>` for shard k of a sharded pool (pool-shards.ts). */
export function poolOfJobId(id: string): string {
  const dot = id.indexOf('.');
  return dot > 0 ? id.slice(0, dot) : '';
}

export { PoolName };
