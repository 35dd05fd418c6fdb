import type { z } from 'zod';
import { EmpError } from '../errors';
import { type Job, type JobProgressView, JobRecord, type JobRouting, type JobState, TERMINAL_STATES, priorityOfScore } from '../job';
import { poolOfShard } from '../pool-shards';
import { StoredRoute, routeOf } from '../routing';
import { JobRequirements } from '../requirements';
import { parseWith } from '../validation';
import type {
  ClaimedWebhookMessage,
  TenantWebhookSecrets,
  WebhookEnqueueResult,
  WebhookResendResult,
  WebhookSettleResult,
} from '../webhook-outbox';
import type { ClaimResult, DropVerdict, Lease, MachineCommand, MachineLogEntry, WorkerSignal } from './types';

/**
 * One decoder per reply shape of the `emp` functions (the table in
 * functions.ts names which function answers which). A decoder checks the
 * shape cheaply and returns the reply typed, without copying it: the claim,
 * complete and heartbeat replies pass through one per job, so no zod here;
 * what the values mean is turned into public types by the parse* functions.
 */

/** A reply not of the shape this version of core expects: the library and core disagree. */
function unexpected(name: string, reply: unknown): never {
  const text = JSON.stringify(reply) ?? String(reply);
  throw new EmpError('CORRUPT', `${name} answered ${text.length > 200 ? `${text.slice(0, 200)}...` : text}, not the reply this version expects`);
}

function array(reply: unknown, name: string): unknown[] {
  return Array.isArray(reply) ? reply : unexpected(name, reply);
}

/** A reply that is an array: the Lua side builds it in one place, so its first element's type is checked and the rest trusted. */
function tuple<T extends readonly unknown[]>(first: 'string' | 'number' | 'object') {
  return (reply: unknown, name: string): T => {
    if (!Array.isArray(reply) || (reply.length > 0 && typeof reply[0] !== first)) unexpected(name, reply);
    return reply as unknown as T;
  };
}

export const ignore = (_reply: unknown, _name: string): void => undefined;

export function text(reply: unknown, name: string): string {
  return typeof reply === 'string' ? reply : unexpected(name, reply);
}

/** Functions that answer 1 or 0 for "it changed" / "it did not". */
export function flag(reply: unknown, name: string): boolean {
  return reply === 1 ? true : reply === 0 ? false : unexpected(name, reply);
}

export function count(reply: unknown, name: string): number {
  return typeof reply === 'number' ? reply : unexpected(name, reply);
}

export function numbers(reply: unknown, name: string): number[] {
  return array(reply, name) as number[];
}

export function strings(reply: unknown, name: string): string[] {
  return array(reply, name) as string[];
}

/** emp_submit: id, duplicate (1/0), routable (1/0). */
export type SubmitReply = readonly [id: string, duplicate: number, routable: number];
export const submitReply = tuple<SubmitReply>('string');

/** emp_submit_many: one entry per job, a SubmitReply or ['error', message]. */
export type SubmitManyReply = ReadonlyArray<SubmitReply | readonly ['error', string]>;
export const submitManyReply = tuple<SubmitManyReply>('object');

/** emp_get_job: the job hash (flat), class definition, routable, position, payload, lease_until; nil: no such job. */
export type JobReply = readonly [flat: string[], definition: string, routable: string, position: number, payload: string, leaseUntil: string];
export function jobReply(reply: unknown, name: string): JobReply | null {
  if (reply === null) return null;
  if (!Array.isArray(reply) || !Array.isArray(reply[0])) unexpected(name, reply);
  return reply as unknown as JobReply;
}

/** emp_cancel: the job's state, whether the call changed it (1/0). */
export type CancelReply = readonly [state: JobState, changed: number];
/** emp_workflow_submit: the workflow's state, its id (an idempotent repeat's: the first submit's) and duplicate (1/0). */
export type WorkflowSubmitReply = readonly [state: string, id: string, duplicate: number];
export const workflowSubmitReply = tuple<WorkflowSubmitReply>('string');
export const cancelReply = tuple<CancelReply>('string');

/** emp_list_jobs: [id, entry, member, state, submitted_at] per job found, the last index entry looked at and its member, exhausted (1/0). */
export type ListJobsReply = readonly [found: Array<[string, string, string, string, string]>, lastEntry: string, lastMember: string, exhausted: number];
export const listJobsReply = tuple<ListJobsReply>('object');

/** emp_register_worker: classes that became routable, the routable-scan cursor ('0': done), 'scan' when lanes must be filled. */
export type RegisterWorkerReply = readonly [becameRoutable: number, cursor: string, lanes: string];
export const registerWorkerReply = tuple<RegisterWorkerReply>('number');

/** emp_routable_scan: classes that became routable, the next cursor ('0': done). */
export type RoutableScanReply = readonly [became: number, next: string];
export const routableScanReply = tuple<RoutableScanReply>('number');

/** emp_lane_scan: 'classes' -> [next cursor, classes]; 'jobs' -> [after ('' when done)]; 'done' -> []. */
export type LaneScanReply = readonly [cursorOrAfter?: string, classes?: string[]];
export const laneScanReply = tuple<LaneScanReply>('string');

/**
 * emp_claim (and the claim that emp_complete and emp_fail make after their own
 * part): ['job', id, token, attempt, service, tenant, payload, definition,
 * priority, workflow, step, timeout, submitted_at] or ['none', retry_at,
 * worker_state, 'more' | 'unwoken' | ''].
 */
export type ClaimReply = readonly unknown[];
export const claimReply = tuple<ClaimReply>('string');

/** emp_claim_many: one ClaimReply per claim made, the jobs first. */
export type ClaimManyReply = ReadonlyArray<ClaimReply>;
export const claimManyReply = tuple<ClaimManyReply>('object');

/** emp_complete: one reply per completion: ['succeeded', ...ClaimReply when the call claims next]. */
export type CompleteReply = ReadonlyArray<unknown[]>;
export const completeReply = tuple<CompleteReply>('object');

/** emp_progress: one reply per report: [state] or ['error', '<CODE> <message>']. */
export type ProgressReply = ReadonlyArray<unknown[]>;
export const progressReply = tuple<ProgressReply>('object');

/** emp_fail: the outcome, then the ClaimReply when the call claims next. */
export type FailReply = readonly ['queued' | 'retrying' | 'failed', ...unknown[]];
export const failReply = tuple<FailReply>('string');

/** emp_heartbeat: job id, verdict, ... for the jobs the worker must drop. */
export type HeartbeatReply = readonly string[];
export const heartbeatReply = tuple<HeartbeatReply>('string');

/** emp_tick: jobs handled, ms until more is due ('' when nothing is scheduled). */
export type TickReply = readonly [handled: number, wait: string];
export const tickReply = tuple<TickReply>('number');

/** emp_queue_stats: a page of [class, definition, routable, depth, head job, head submitted_at], totals (with the first page), next cursor. */
export type QueueStatsRow = [string, string, string, number, string, string];
export type QueueStatsReply = readonly [rows: QueueStatsRow[], totals: number[], cursor: string];
export const queueStatsReply = tuple<QueueStatsReply>('object');

/** emp_job_counts: a page of [service, queued, delayed, starting, running, retrying], the next page ('' when done). */
export type JobCountsRow = [string, number, number, number, number, number];
export type JobCountsReply = readonly [rows: JobCountsRow[], page: string];
export const jobCountsReply = tuple<JobCountsReply>('object');

/**
 * emp_migrate: ['done', version] once the shard is current, ['more', version]
 * (call again), or ['classes', class id, stored definition, ...] (call again
 * with today's id and definition of each).
 */
export type MigrateReply = readonly ['done' | 'more', string] | readonly ['classes', ...string[]];
export function migrateReply(reply: unknown, name: string): MigrateReply {
  if (!Array.isArray(reply) || !['done', 'more', 'classes'].includes(reply[0] as string)) unexpected(name, reply);
  return reply as unknown as MigrateReply;
}

// ---------------------------------------------------------------- the webhook service's shard

/** A reply that is one of a few numbers, each with its meaning. */
function coded<T>(meanings: ReadonlyMap<unknown, T>) {
  return (reply: unknown, name: string): T => (meanings.has(reply) ? meanings.get(reply)! : unexpected(name, reply));
}

/** emp_webhook_enqueue: 1 queued, 2 merged into the pending progress message, 0 already known, -1 the target is disabled. */
export const webhookEnqueueReply = coded<WebhookEnqueueResult>(new Map([[1, 'queued'], [2, 'merged'], [0, 'known'], [-1, 'disabled']] as const));

/** emp_webhook_settle: 1 settled, 2 settled and the endpoint disabled by it, 0 a stale attempt (or an unknown message). */
export const webhookSettleReply = coded<WebhookSettleResult>(new Map([[1, 'settled'], [2, 'endpoint-disabled'], [0, 'stale']] as const));

/** emp_webhook_resend: 1 queued again, 0 unknown, -1 still pending or in flight, -2 its target is disabled. */
export const webhookResendReply = coded<WebhookResendResult>(new Map([[1, 'queued'], [0, 'unknown'], [-1, 'pending'], [-2, 'disabled']] as const));

/** emp_webhook_claim: [id, attempt, tenant, url, job, type, body, created_at, endpoint or '', traceparent or ''] per message taken. */
export function webhookClaimReply(reply: unknown, name: string): ClaimedWebhookMessage[] {
  return array(reply, name).map((entry) => {
    if (!Array.isArray(entry) || entry.length < 9) unexpected(name, reply);
    const [id, attempt, tenant, url, job, type, body, createdAt, endpoint, traceparent] = entry as string[];
    const message: ClaimedWebhookMessage = { id: id!, attempt: Number(attempt), tenant: tenant!, url: url!, job: job!, type: type!, body: body!, createdAt: Number(createdAt) };
    if (endpoint) message.endpoint = endpoint;
    if (traceparent) message.traceparent = traceparent;
    return message;
  });
}

/** emp_webhook_secret: [current, previous or '', previous valid until or '']. */
export function webhookSecretReply(reply: unknown, name: string): TenantWebhookSecrets {
  const [current, previous, until] = tuple<[string, string, string | number]>('string')(reply, name);
  return previous ? { current, previous, previousUntil: Number(until) } : { current };
}

/** emp_webhook_endpoint: true done, false no such endpoint (create: it exists); rotate: the new secret and until when the old one stays valid. */
export type WebhookEndpointReply = boolean | { secret: string; previousValidUntil: number };
export function webhookEndpointReply(reply: unknown, name: string): WebhookEndpointReply {
  if (Array.isArray(reply)) return { secret: String(reply[0]), previousValidUntil: Number(reply[1]) };
  return flag(reply, name);
}

/** emp_webhook_recover: messages queued again, failed messages left over the limit. */
export type WebhookRecoverReply = { queued: number; left: number };
export function webhookRecoverReply(reply: unknown, name: string): WebhookRecoverReply {
  const [queued, left] = tuple<[number, number]>('number')(reply, name);
  return { queued: Number(queued), left: Number(left) };
}

// ---------------------------------------------------------------- meanings

export function foldHash(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}

export function parseDrops(reply: HeartbeatReply): Array<{ jobId: string; verdict: DropVerdict }> {
  const drops: Array<{ jobId: string; verdict: DropVerdict }> = [];
  for (let i = 0; i < reply.length; i += 2) drops.push({ jobId: reply[i]!, verdict: reply[i + 1] as DropVerdict });
  return drops;
}

export function machineLogEntry(id: string, flat: string[]): MachineLogEntry {
  const f = foldHash(flat);
  return { id, process: f.process ?? '', stream: f.stream === 'stderr' ? 'stderr' : 'stdout', line: f.line ?? '', ts: Number(f.ts ?? 0) };
}

export function machineCommand(id: string, flat: string[]): MachineCommand {
  const f = foldHash(flat);
  return {
    id,
    action: f.action ?? '',
    service: f.service || undefined,
    model: f.model || undefined,
    by: f.by || undefined,
    reason: f.reason || undefined,
    ts: Number(f.ts ?? 0),
  };
}

/**
 * A lease this process's claims handed out: well-formed by construction (and
 * frozen), so not parsed again. Told apart by a private field, which a copy
 * (`{ ...lease }`) does not carry: a WeakSet did the same for 0.6 us a claim
 * and left every lease in its table until a full GC.
 */
class IssuedLease implements Lease {
  readonly #issued = true;

  constructor(
    readonly pool: string,
    readonly jobId: string,
    readonly token: string,
    readonly workerId: string,
  ) {
    Object.freeze(this);
  }

  static has(lease: Lease): boolean {
    return #issued in lease;
  }
}

/** Whether this process's claims handed `lease` out (see IssuedLease). */
export function isIssuedLease(lease: Lease): boolean {
  return IssuedLease.has(lease);
}

// Classes are few and immutable, and every claim hands one out: parse each once (per pool, by definition).
const parsedRequirements = new Map<string, Map<string, JobRequirements>>();
let parsedCount = 0;

export function requirementsOf(definition: string, pool: string): JobRequirements {
  let ofPool = parsedRequirements.get(pool);
  let requirements = ofPool?.get(definition);
  if (!requirements) {
    const { service: _s, tenant: _t, workflow_id: _w, ...stored } = JSON.parse(definition) as Record<string, unknown>;
    requirements = deepFreeze(parseWith(JobRequirements, { ...stored, pool }, 'stored requirement class'));
    if (parsedCount >= 10_000) {
      parsedRequirements.clear();
      parsedCount = 0;
      ofPool = undefined;
    }
    if (!ofPool) parsedRequirements.set(pool, (ofPool = new Map()));
    ofPool.set(definition, requirements);
    parsedCount++;
  }
  return requirements;
}

/** Shared between every job of a class, so nobody may change it. */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/** A claim reply of `shard` (the lease names the shard; the job's requirements its pool). */
export function parseClaim(shard: string, workerId: string, reply: ClaimReply): ClaimResult {
  if (reply[0] !== 'job') {
    const retryAt = reply[1] ? Number(reply[1]) : undefined;
    return { job: null, workerState: String(reply[2] ?? ''), retryAt: retryAt || undefined };
  }
  const [, id, token, attempt, service, tenant, payload, definition, priority, workflowId, step, timeout, submittedAt, traceparent] =
    reply as [string, string, string, number, string, string, string, string, number, string, string, string, string, string | undefined];
  const lease: Lease = new IssuedLease(shard, id, token, workerId);
  return {
    job: {
      lease,
      id,
      attempt: Number(attempt),
      service,
      tenant,
      payload: payload === '' ? {} : (JSON.parse(payload) as unknown),
      requirements: requirementsOf(definition, poolOfShard(shard)),
      priority: Number(priority),
      workflowId: workflowId || undefined,
      step: step ? Number(step) : undefined,
      executionTimeoutMs: timeout ? Number(timeout) : undefined,
      submittedAt: Number(submittedAt),
      traceparent: traceparent || undefined,
    },
  };
}

export function parseSignal(text: string): WorkerSignal | null {
  const colon = text.indexOf(':');
  const kind = text.slice(0, colon);
  const value = text.slice(colon + 1);
  if (kind === 'wake') return { type: 'wake', requirementClass: value };
  if (kind === 'cancel' || kind === 'expired' || kind === 'timeout') return { type: kind, jobId: value };
  if (kind === 'shards') return { type: 'shards' };
  return null;
}

/** A job read from `shard`: its `pool` is the shard's pool. */
export function parseJobReply(id: string, shard: string, reply: JobReply): Job {
  return parseTracedJobReply(id, shard, reply).job;
}

/** `parseJobReply`, with the job's stored traceparent (not part of the client-facing Job). */
export function parseTracedJobReply(id: string, shard: string, reply: JobReply): TracedJob {
  const pool = poolOfShard(shard);
  const [flat, definition, routable, position, payload, leaseUntil] = reply;
  const record = parseWith(JobRecord, foldHash(flat), `job record ${id} in Redis`);
  const job = toJob(id, pool, record, {
    definition,
    routable: routable === '1',
    position,
    payload: payload === '' ? undefined : (JSON.parse(payload) as unknown),
    leaseUntil: leaseUntil === '' ? undefined : Number(leaseUntil),
  });
  return record.traceparent ? { job, traceparent: record.traceparent } : { job };
}

/** A job and, beside it, the W3C traceparent of its submit (docs/tracing.md), when it has one. */
export interface TracedJob {
  job: Job;
  traceparent?: string;
}

/** How the job's pool was chosen, as submit stored it (absent on jobs submitted before routing). */
function routingOf(pool: string, r: z.output<typeof JobRecord>): JobRouting | undefined {
  // a job routed to the default pool stores no route_source (routing.ts); one without dclass predates routing
  if (!r.route_source && !r.dclass) return undefined;
  const stored = StoredRoute.safeParse(stripUndefined({
    pool,
    source: r.route_source ?? 'default',
    estimate_s: r.route_source === 'hint' ? r.expected_duration_s : r.route_estimate_s,
    samples: r.route_samples,
    level: r.route_level,
    skipped: r.route_skipped,
  }));
  return stored.success ? routeOf(stored.data) : undefined;
}

interface JobExtras {
  definition: string;
  routable: boolean;
  position: number;
  payload: unknown;
  leaseUntil: number | undefined;
}

function toJob(id: string, pool: string, r: z.output<typeof JobRecord>, extras: JobExtras): Job {
  const job: Job = {
    id,
    pool,
    tenant: r.tenant,
    service: r.service,
    state: r.state,
    payload: extras.payload,
    requirements: requirementsOf(extras.definition, pool),
    requirement_class: r.class,
    routable: extras.routable,
    priority: priorityOfScore(r.score),
    attempts: r.attempts,
    failures: r.failures,
    infra_failures: r.infra_failures,
    max_attempts: r.max_attempts,
    max_infra_attempts: r.max_infra_attempts,
    manual_retries: r.manual_retries,
    timestamps: stripUndefined({
      submitted_at: r.submitted_at,
      updated_at: lastUpdate(r),
      claimed_at: r.claimed_at,
      started_at: r.started_at,
      finished_at: r.finished_at,
      retry_at: r.retry_at,
      run_at: r.run_at,
    }),
    deadlines: stripUndefined({
      queue_deadline: r.queue_deadline,
      start_deadline: r.start_deadline,
      execution_timeout_ms: r.exec_timeout_ms,
      lease_until: extras.leaseUntil,
    }),
  };
  if (extras.position >= 0) job.position = extras.position;
  const optional = {
    progress: progressView(r), result: r.result, error: r.error, worker: r.worker ?? r.last_worker, machine: r.machine,
    idempotency_key: r.idempotency_key?.replace(/^[^:]*:/, ''), webhook: r.webhook, workflow_id: r.workflow_id,
    step: r.step, cancel_reason: r.cancel_reason || undefined, expire_reason: r.expire_reason,
    expected_duration_s: r.expected_duration_s, routing: routingOf(pool, r),
  };
  return Object.assign(job, stripUndefined(optional));
}

/** A finished job's progress says how it ended, never a stage it has left; value/max/message keep the last report. */
function progressView(r: z.output<typeof JobRecord>): JobProgressView | undefined {
  return TERMINAL_STATES.includes(r.state) ? { ...r.progress, stage: r.state as JobProgressView['stage'] } : r.progress;
}

/**
 * When the job last changed. Transitions that record their own time (claimed_at,
 * started_at, finished_at, retried_at) do not write `updated_at` too, so the
 * latest of them all is the answer.
 */
function lastUpdate(r: z.output<typeof JobRecord>): number {
  return Math.max(r.submitted_at, r.updated_at ?? 0, r.claimed_at ?? 0, r.started_at ?? 0, r.finished_at ?? 0, r.retried_at ?? 0);
}

/**
 * `value` without its undefined fields, in order. A loop, not Object.fromEntries over the
 * filtered entries: that took 40% of a job read (four calls per job) and made objects that
 * were slower still to spread and to write as JSON in the API's answer.
 */
function stripUndefined<T extends Record<string, unknown>>(value: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  const out: Record<string, unknown> = {};
  for (const key in value) if (value[key] !== undefined) out[key] = value[key];
  return out as { [K in keyof T]: Exclude<T[K], undefined> };
}

