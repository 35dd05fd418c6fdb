import { randomFillSync } from 'node:crypto';
import type { ChainableCommander } from 'ioredis';
import type { SubmitResult } from '../api-protocol';
import { StreamId } from '../api-protocol';
import { idempotencyFingerprint } from '../canonical';
import { EmpError, NotFoundError, PayloadTooLargeError, UnknownServiceError, ValidationError, fromRedisError } from '../errors';
import { type StreamEvent, parseStreamEntry } from '../events';
import { DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_INFRA_ATTEMPTS, type Job, type JobState, type SubmitJob, SubmitJobInput } from '../job';
import { poolOfShard } from '../pool-shards';
import { requirementClassOfParsed } from '../requirements';
import { type Route, durationClass } from '../routing';
import { parseWith } from '../validation';
import { type BrokerContext, jsonOf } from './context';
import { execSubmitCalls, isDurable } from './durable';
import { type Arg, type ArgsOf, FUNCTIONS } from './functions';
import { type SubmitManyReply, type SubmitReply, foldHash, parseJobReply, parseTracedJobReply, type TracedJob } from './replies';
import { readEntries } from './streams';
import { JobListFilter, type JobListPage, type Lease } from './types';

/** Jobs per emp_submit_many call: big enough to amortise a call, small enough not to block Redis for long (about 2 ms). */
const SUBMIT_BATCH = 100;

/** Entries of the job index one list call looks at per pool before answering with a short page. */
const LIST_BUDGET = 2_000;

interface PreparedSubmit {
  /** the pool the job was routed to */
  pool: string;
  /** the shard of the pool it is placed on (the pool itself for an unsharded pool) */
  shard: string;
  id: string;
  args: ArgsOf<typeof FUNCTIONS.submit>;
}

function submitted(pool: string, reply: SubmitReply): SubmitResult {
  return { id: reply[0], pool, duplicate: reply[1] === 1, routable: reply[2] === 1 };
}

export async function submit(ctx: BrokerContext, input: SubmitJobInput, options: SubmitOptions = {}): Promise<SubmitResult> {
  return submitParsed(ctx, parseWith(SubmitJobInput, input, 'job'), options, { alone: true });
}

/**
 * Submits a job already parsed with SubmitJobInput. The submits of one event-loop turn (an API
 * answering many requests at once) share a round trip (execSubmitCalls); one sent `alone` (a
 * library caller's) goes out at once, as a durable one does: waiting for the end of the turn put
 * up to a loop iteration's work before it (submit-to-start p99 1.1-1.2 -> 1.5 ms).
 */
export async function submitParsed(ctx: BrokerContext, job: SubmitJob, options: SubmitOptions = {}, send: { alone?: boolean } = {}): Promise<SubmitResult> {
  const prepared = await prepareSubmit(ctx, job, options);
  await ctx.rememberPool(prepared.shard);
  const durable = isDurable(ctx, options.durable);
  if (send.alone && !durable) return submitted(prepared.pool, await ctx.calls.call(FUNCTIONS.submit, prepared.shard, prepared.args));
  const queueCall = (pipeline: ChainableCommander) => ctx.calls.queue(pipeline, FUNCTIONS.submit, prepared.shard, prepared.args);
  const { replies, notReplicated } = await execSubmitCalls(ctx, prepared.shard, durable, queueCall);
  const result = submitted(prepared.pool, ctx.calls.decode(FUNCTIONS.submit, replies[0]));
  const failure = notReplicated(`job ${result.id}`);
  if (failure) throw failure;
  return result;
}

/**
 * Submits a job and reads it back in the same round trip (one pipeline: the
 * submit, then the read of the id the submit will use). An idempotent repeat
 * reads the original job after.
 */
export async function submitAndRead(ctx: BrokerContext, job: SubmitJob, options: SubmitOptions = {}): Promise<{ submitted: SubmitResult; job: Job | null }> {
  const prepared = await prepareSubmit(ctx, job, options);
  await ctx.rememberPool(prepared.shard);
  const queueCalls = (pipeline: ChainableCommander) => {
    ctx.calls.queue(pipeline, FUNCTIONS.submit, prepared.shard, prepared.args);
    ctx.calls.queue(pipeline, FUNCTIONS.getJob, prepared.shard, [prepared.id]);
  };
  const { replies, notReplicated } = await execSubmitCalls(ctx, prepared.shard, isDurable(ctx, options.durable), queueCalls);
  const result = submitted(prepared.pool, ctx.calls.decode(FUNCTIONS.submit, replies[0]));
  const failure = notReplicated(`job ${result.id}`);
  if (failure) throw failure;
  if (result.id !== prepared.id) return { submitted: result, job: await getJob(ctx, result.id) };
  const read = await ctx.calls.decodeRead(FUNCTIONS.getJob, prepared.shard, [prepared.id], replies[1]);
  return { submitted: result, job: read ? parseJobReply(result.id, prepared.shard, read) : null };
}

/**
 * Submits many jobs with one round trip per pool; each result is a SubmitResult or the error for that job.
 * `options` apply to every job (the batch request's traceparent: each job continues its trace).
 */
export async function submitMany(ctx: BrokerContext, inputs: SubmitJobInput[], options: SubmitOptions = {}): Promise<Array<SubmitResult | EmpError>> {
  const results: Array<SubmitResult | EmpError> = new Array(inputs.length);
  // each job is routed on its own (estimates are cached per duration class), then grouped by the shard it got;
  // a job whose routing needs a read (the first of its class in a while) waits for it, the others do not
  const prepared: Array<PreparedSubmit | null> = new Array(inputs.length).fill(null);
  const waiting: Array<Promise<void>> = [];
  const refused = (index: number, error: unknown) => {
    if (!(error instanceof EmpError)) throw error;
    results[index] = error;
  };
  inputs.forEach((input, index) => {
    try {
      const now = prepareSubmitNow(ctx, parseWith(SubmitJobInput, input, 'job'), options);
      if (!(now instanceof Promise)) prepared[index] = now;
      else waiting.push(now.then((p) => void (prepared[index] = p), (error: unknown) => refused(index, error)));
    } catch (error) {
      if (error instanceof EmpError) refused(index, error);
      else waiting.push(Promise.reject(error));
    }
  });
  if (waiting.length > 0) await Promise.all(waiting);
  const byShard = new Map<string, number[]>();
  prepared.forEach((p, index) => {
    if (!p) return;
    const indexes = byShard.get(p.shard);
    if (indexes) indexes.push(index);
    else byShard.set(p.shard, [index]);
  });
  await Promise.all(
    [...byShard.entries()].map(async ([shard, indexes]) => {
      const pool = poolOfShard(shard);
      await ctx.rememberPool(shard);
      // batches of SUBMIT_BATCH jobs per function call, all batches in one pipeline
      const batches: number[][] = [];
      for (let start = 0; start < indexes.length; start += SUBMIT_BATCH) batches.push(indexes.slice(start, start + SUBMIT_BATCH));
      const queueCalls = (pipeline: ChainableCommander) => {
        for (const batch of batches) {
          ctx.calls.queue(pipeline, FUNCTIONS.submitMany, shard, submitManyArgs(ctx, batch.map((index) => prepared[index]!.args)));
        }
      };
      // a shard's share of at least one full call goes out at once, in a pipeline of its own: joined with
      // the turn's other calls, a caller's batches sent one after another (a bulk import) all went out
      // together at the turn's end and came back together, Redis idle while the next were made
      const alone = indexes.length >= SUBMIT_BATCH;
      const { replies, notReplicated } = await execSubmitCalls(ctx, shard, isDurable(ctx, options.durable), queueCalls, alone);
      const failure = notReplicated(`the batch's jobs of shard ${shard}`);
      batches.forEach((batch, b) => {
        let reply: SubmitManyReply | undefined;
        let error: unknown;
        try {
          reply = ctx.calls.decode(FUNCTIONS.submitMany, replies[b] ?? [new Error('no reply'), null]);
        } catch (caught) {
          error = caught;
        }
        batch.forEach((index, i) => {
          const entry = reply?.[i];
          if (error || !entry) {
            results[index] = error instanceof EmpError ? error : new EmpError('CORRUPT', String(error ?? 'no reply'));
          } else if (entry[0] === 'error') {
            const typed = fromRedisError(new Error(String(entry[1])));
            results[index] = typed instanceof EmpError ? typed : new EmpError('CORRUPT', String(entry[1]));
          } else {
            results[index] = failure ?? submitted(pool, entry as SubmitReply);
          }
        });
      });
    }),
  );
  return results;
}

export async function getJob(ctx: BrokerContext, id: string): Promise<Job | null> {
  const pool = ctx.poolOf(id);
  // the reads of one turn (an API answering many requests at once) share a round trip
  const reply = await ctx.calls.callInTurn(FUNCTIONS.getJob, pool, [id]);
  return reply && parseJobReply(id, pool, reply);
}

/**
 * Reads several jobs with one pipeline per pool (one round trip each, the pools' at once): per id,
 * the job (null: none), or why it could not be read (a malformed id or record: the error
 * `getJob` would throw). A failed connection rejects the whole read.
 */
export async function getJobsSettled(ctx: BrokerContext, ids: readonly string[]): Promise<Array<PromiseSettledResult<Job | null>>> {
  return (await getTracedJobsSettled(ctx, ids)).map((read) => (read.status === 'fulfilled' ? { status: 'fulfilled', value: read.value?.job ?? null } : read));
}

/** `getJobsSettled`, each job with its stored traceparent beside it (the webhook service carries it to deliveries). */
export async function getTracedJobsSettled(ctx: BrokerContext, ids: readonly string[]): Promise<Array<PromiseSettledResult<TracedJob | null>>> {
  const results: Array<PromiseSettledResult<TracedJob | null>> = new Array(ids.length);
  const byPool = new Map<string, number[]>();
  ids.forEach((id, index) => {
    try {
      const pool = ctx.poolOf(id);
      byPool.set(pool, [...(byPool.get(pool) ?? []), index]);
    } catch (error) {
      results[index] = { status: 'rejected', reason: error };
    }
  });
  await Promise.all(
    [...byPool].map(async ([pool, indexes]) => {
      const pipeline = ctx.redis.pipeline();
      for (const index of indexes) ctx.calls.queue(pipeline, FUNCTIONS.getJob, pool, [ids[index]!]);
      const replies = await pipeline.exec();
      if (!replies) throw new Error(`reading ${indexes.length} jobs of pool ${pool}: the pipeline was discarded`);
      await Promise.all(
        indexes.map(async (index, at) => {
          const id = ids[index]!;
          try {
            const reply = await ctx.calls.decodeRead(FUNCTIONS.getJob, pool, [id], replies[at]);
            results[index] = { status: 'fulfilled', value: reply && parseTracedJobReply(id, pool, reply) };
          } catch (error) {
            results[index] = { status: 'rejected', reason: error };
          }
        }),
      );
    }),
  );
  return results;
}

export async function cancel(ctx: BrokerContext, id: string, reason: string): Promise<{ state: JobState; changed: boolean }> {
  const [state, changed] = await ctx.calls.call(FUNCTIONS.cancel, ctx.poolOf(id), [id, reason.slice(0, 500)]);
  return { state, changed: changed === 1 };
}

export async function retry(ctx: BrokerContext, id: string): Promise<JobState> {
  return (await ctx.calls.call(FUNCTIONS.retry, ctx.poolOf(id), [id])) as JobState;
}

/**
 * Where an entry sits in the submission index (emp_list_jobs): `entry` is its stream entry
 * id `<ms>-<n>`, or its score `<ms>` in the sorted sets that keep the jobs kept long.
 */
interface ListPosition {
  entry: string;
  member: string;
  ms: number;
  /** the entry's place within its millisecond in its shard's stream; 0 for a sorted set's */
  n: number;
}

export async function listJobs(ctx: BrokerContext, filter: JobListFilter): Promise<JobListPage> {
  const f = parseWith(JobListFilter, filter, 'job list filter');
  const cursor = f.cursor === undefined ? undefined : decodeListCursor(f.cursor);
  // every shard of the pool (or of every pool): a page merges theirs
  const shards = f.pool ? (await ctx.poolShardNames(f.pool, 'all')) : await ctx.shards();
  const pages = await Promise.all(
    shards.map(async (shard) => {
      const pool = poolOfShard(shard);
      const [found, lastEntry, lastMember, exhausted] = await ctx.calls.call(FUNCTIONS.listJobs, shard, [
        f.tenant ?? '', f.until ?? '', f.since ?? '', cursor ? cursor.entry : '', cursor ? cursor.member : '',
        (f.states ?? []).join(','), (f.services ?? []).join(','), f.limit, LIST_BUDGET,
      ]);
      return {
        items: found.map(([id, entry, member, state, submittedAt]) => ({ id, pool, state: state as JobState, submitted_at: Number(submittedAt), position: listPosition(entry, member) })),
        boundary: exhausted === 1 || lastEntry === '' ? undefined : listPosition(lastEntry, lastMember),
      };
    }),
  );
  // A pool that stopped early has not looked below its boundary: only what lies
  // above the highest such boundary is known complete for this page.
  let boundary: ListPosition | undefined;
  for (const page of pages) if (page.boundary && (!boundary || comparePositions(page.boundary, boundary) > 0)) boundary = page.boundary;
  const items = pages
    .flatMap((page) => page.items)
    .filter((item) => !boundary || comparePositions(item.position, boundary) >= 0)
    .sort((a, b) => comparePositions(b.position, a.position));
  const taken = items.slice(0, f.limit);
  const last = items.length > f.limit ? taken[taken.length - 1]?.position : boundary;
  return {
    jobs: taken.map(({ position: _p, ...item }) => item),
    next_cursor: last ? encodeListCursor(last) : undefined,
  };
}

export async function jobEvents(ctx: BrokerContext, id: string, options: { after?: string; limit?: number }): Promise<{ events: StreamEvent[]; cursor: string }> {
  const pool = ctx.poolOf(id);
  const submittedAt = await ctx.redis.hget(ctx.keys.job(pool, id), 'submitted_at');
  if (submittedAt === null) throw new NotFoundError(`job ${id} does not exist (or its retention has passed)`);
  if (options.after !== undefined) parseWith(StreamId, options.after, 'event cursor');
  const limit = options.limit ?? 1_000;
  let cursor = options.after ?? `${Math.max(0, Number(submittedAt) - 1)}-0`;
  const events: StreamEvent[] = [];
  for (;;) {
    const batch = await readEntries(ctx, pool, cursor, { count: 1_000 });
    for (const [entry, flat] of batch) {
      cursor = entry;
      // only the job's own entries are parsed: the pool's others share the stream
      const raw = foldHash(flat);
      if (raw.job !== id) continue;
      events.push(parseStreamEntry(pool, entry, raw));
      if (events.length >= limit) return { events, cursor };
    }
    if (batch.length < 1_000) return { events, cursor };
  }
}

export async function currentAttempt(ctx: BrokerContext, id: string): Promise<Lease | null> {
  const pool = ctx.poolOf(id);
  // the attempt number is the attempt's fencing token
  const [state, token, worker] = await ctx.redis.hmget(ctx.keys.job(pool, id), 'state', 'attempts', 'worker');
  if (state === null) throw new NotFoundError(`job ${id} does not exist (or its retention has passed)`);
  if (!(state === 'starting' || state === 'running') || !token || !worker) return null;
  return { pool, jobId: id, token, workerId: worker };
}

/** The arguments of a submit of a parsed job: its pool is routed and its id made here. */
async function prepareSubmit(ctx: BrokerContext, job: SubmitJob, options: SubmitOptions = {}): Promise<PreparedSubmit> {
  const { payload, dclass } = checkSubmit(ctx, job);
  return prepareRouted(ctx, job, payload, dclass, options);
}

/**
 * `prepareSubmit` when the routing and placement it needs are cached (no read, no wait): the
 * prepared submit, else a promise of it. A bulk submit prepares most jobs so, where a promise
 * chain per job (five async frames) cost more than the rest of its preparation.
 */
function prepareSubmitNow(ctx: BrokerContext, job: SubmitJob, options: SubmitOptions): PreparedSubmit | Promise<PreparedSubmit> {
  const { payload, dclass } = checkSubmit(ctx, job);
  const route = ctx.router.routeNow(job, dclass);
  const shard = route && ctx.placeJobNow(route.pool, idempotencyPlacement(job));
  if (!route || shard === undefined) return prepareRouted(ctx, job, payload, dclass, options);
  return preparedOn(ctx, job, route, shard, payload, dclass, options);
}

/** A parsed job's service and payload checked: its payload as JSON and its duration class. */
function checkSubmit(ctx: BrokerContext, job: SubmitJob): { payload: string; dclass: string } {
  if (!ctx.services.has(job.service)) {
    throw new UnknownServiceError(`unknown service '${job.service}'; known services: ${[...ctx.services].sort().join(', ')}`);
  }
  const { config } = ctx;
  const payload = jsonOf(job.payload, 'job', 'payload');
  // UTF-8 takes at most 3 bytes per UTF-16 unit: a payload under a third of the limit in units needs no count
  if (payload.length * 3 > config.maxPayloadBytes) {
    const size = Buffer.byteLength(payload);
    if (size > config.maxPayloadBytes) throw new PayloadTooLargeError(`payload is ${size} bytes, over the ${config.maxPayloadBytes}-byte limit`);
  }
  return { payload, dclass: durationClass(job.service, job.requirements.models) };
}

async function prepareRouted(ctx: BrokerContext, job: SubmitJob, payload: string, dclass: string, options: SubmitOptions): Promise<PreparedSubmit> {
  const route = await ctx.router.route(job, dclass);
  return preparedOn(ctx, job, route, await ctx.placeJob(route.pool, idempotencyPlacement(job)), payload, dclass, options);
}

/** The submit of a routed job placed on `shard`, with its new id. */
function preparedOn(ctx: BrokerContext, job: SubmitJob, route: Route, shard: string, payload: string, dclass: string, options: SubmitOptions): PreparedSubmit {
  const id = newJobId(shard);
  return { pool: route.pool, shard, id, args: submitArgs(ctx, job, id, payload, dclass, route.fields, options) };
}

/** What places a job or workflow with an idempotency key on a shard (placeJob): its tenant's key; undefined without one. */
export function idempotencyPlacement(submission: { tenant: string; idempotency_key?: string }): string | undefined {
  return submission.idempotency_key === undefined ? undefined : `${submission.tenant}:${submission.idempotency_key}`;
}

/**
 * The arguments of emp_submit for a parsed job with its id, payload (JSON) and route fields
 * (a workflow prepares its steps' with an empty id and payload, which its Lua side fills in).
 */
export function submitArgs(ctx: BrokerContext, job: SubmitJob, id: string, payload: string, dclass: string, routeFields: Array<string | number>, options: SubmitOptions = {}): ArgsOf<typeof FUNCTIONS.submit> {
  const { config } = ctx;
  const cls = requirementClassOfParsed(job);
  const idempotencyKey = job.idempotency_key;
  const fingerprint = idempotencyFingerprint(job);
  const fields: Arg[] = ['tenant', job.tenant, 'service', job.service];
  // the defaults are not stored: a job hash's every field costs memory and Redis's reads of it time
  if (job.max_attempts !== DEFAULT_MAX_ATTEMPTS) fields.push('max_attempts', job.max_attempts);
  if (job.max_infra_attempts !== DEFAULT_MAX_INFRA_ATTEMPTS) fields.push('max_infra_attempts', job.max_infra_attempts);
  if (job.backoff) fields.push('backoff', JSON.stringify(job.backoff));
  if (job.deadlines?.execution_timeout_ms) fields.push('exec_timeout_ms', job.deadlines.execution_timeout_ms);
  if (job.webhook) fields.push('webhook', JSON.stringify(job.webhook));
  if (job.workflow_id) fields.push('workflow_id', job.workflow_id);
  if (job.step !== undefined) fields.push('step', job.step);
  // how the pool was chosen (short values: the hash stays compact); the duration class goes on the requirement class
  fields.push(...routeFields);
  if (job.expected_duration_s !== undefined) fields.push('expected_duration_s', job.expected_duration_s);
  // an optional field: a claim reads it only from a job marked `opt` (a job submitted with tracing off pays nothing)
  if (options.traceparent && TRACEPARENT.test(options.traceparent)) fields.push('traceparent', options.traceparent);
  return [
    id,
    cls.id,
    cls.definition,
    job.priority,
    idempotencyKey ? `${job.tenant}:${idempotencyKey}` : '',
    fingerprint,
    config.idempotencyTtlMs,
    job.delay_ms ?? 0,
    job.deadlines?.queue_ttl_ms ?? '',
    job.deadlines?.start_timeout_ms ?? '',
    payload,
    config.maxQueuedClasses,
    dclass,
    fields.length,
    ...fields,
  ];
}

/**
 * The arguments of one emp_submit_many call for jobs with their emp_submit arguments: what the
 * jobs share once (the idempotency ttl, the class limit, and each class's definition and
 * duration class), then each job's own, in emp_submit's order (submit_many.lua): a third
 * fewer arguments to encode, send and read than each job's in full. Pushed one by one:
 * flatMap and a spread copied them element by element, generically (1.9 us a job).
 */
function submitManyArgs(ctx: BrokerContext, jobs: ReadonlyArray<ArgsOf<typeof FUNCTIONS.submit>>): ArgsOf<typeof FUNCTIONS.submitMany> {
  const { config } = ctx;
  const args: ArgsOf<typeof FUNCTIONS.submitMany> = [jobs.length, config.idempotencyTtlMs, config.maxQueuedClasses, 0];
  const classes = new Set<string>();
  for (const job of jobs) {
    if (classes.has(job[1])) continue;
    classes.add(job[1]);
    // a class's id names its definition, which names its duration class (its service and models)
    args.push(job[1], job[2], job[12]);
  }
  args[3] = classes.size;
  for (const job of jobs) {
    // emp_submit's id, class, priority, idempotency key, fingerprint, delay, queue ttl, start timeout,
    // payload and field count (60-submit.lua, emp_submit_many's layout), then its fields
    args.push(job[0], job[1], job[3], job[4], job[5], job[7], job[8], job[9], job[10], job[13]);
    for (let i = SUBMIT_FIELDS_AT; i < job.length; i++) args.push(job[i]!);
  }
  return args;
}

/** Where a job's field/value pairs start among its emp_submit arguments (after their count). */
const SUBMIT_FIELDS_AT = 14;

/** What a submit carries beside the job itself. */
export interface SubmitOptions {
  /** the W3C trace context of the submit (the API request's span), kept on the job for its later spans */
  traceparent?: string;
  /**
   * answer only once a replica has the job (durable.ts; NotReplicatedError if none does in
   * `durableSubmitTimeoutMs`); default: the broker's `durableSubmit`
   */
  durable?: boolean;
}

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

function listPosition(entry: string, member: string): ListPosition {
  const [ms, n] = entry.split('-');
  return { entry, member, ms: Number(ms), n: Number(n ?? 0) };
}

/**
 * Index order, the one every shard's emp_list_jobs walks: by submission time, then place
 * within its millisecond, then member (byte order, as Redis sorts equal scores).
 */
function comparePositions(a: ListPosition, b: ListPosition): number {
  return a.ms - b.ms || a.n - b.n || (a.member < b.member ? -1 : a.member > b.member ? 1 : 0);
}

function encodeListCursor(position: ListPosition): string {
  return Buffer.from(`${position.entry}:${position.member}`).toString('base64url');
}

/** A cursor names an entry: `<ms>-<n>:<member>`, or `<ms>:<member>` for a sorted set's (as every cursor before 2026-12-07). */
function decodeListCursor(cursor: string): ListPosition {
  const match = /^(\d{1,16}(?:-\d{1,20})?):([A-Za-z0-9_.|-]{1,200})$/.exec(Buffer.from(cursor, 'base64url').toString());
  if (!match) throw new ValidationError('job list filter', [{ path: 'cursor', message: 'not a cursor this API handed out' }]);
  return listPosition(match[1]!, match[2]!);
}

/** A new job id on `shard`: the shard, then the time in ms and 48 random bits, both in base 36. */
export function newJobId(shard: string): string {
  const now = Date.now();
  // the submits of one ms share its text (a bulk submit makes dozens per ms)
  if (now !== idClock.ms) {
    idClock.ms = now;
    idClock.text = now.toString(36);
  }
  return `${shard}.${idClock.text}${randomIdPart()}`;
}
const idClock = { ms: -1, text: '' };

/** Base-36 digits, and every pair of them (36 x 36), so that a 5-digit group is three lookups. */
const DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz';
const DIGIT_PAIRS = Array.from({ length: 36 * 36 }, (_, i) => DIGITS[Math.floor(i / 36)]! + DIGITS[i % 36]!);
const FIVE_DIGITS = 36 ** 5;

/** `value` (under 36^5) as exactly 5 base-36 digits. */
function fiveDigits(value: number): string {
  const low = value % 1296;
  const rest = (value - low) / 1296;
  const middle = rest % 1296;
  return DIGITS[(rest - middle) / 1296]! + DIGIT_PAIRS[middle]! + DIGIT_PAIRS[low]!;
}

/**
 * 48 random bits as 10 base-36 digits; random bytes are drawn 6 KiB at a time (one syscall per 1,024 ids).
 * The digits are looked up in two groups of 5: Number#toString(36) of a 48-bit value took 0.85 us, most of a bulk submit's id.
 */
const randomPool = Buffer.alloc(6 * 1024);
let randomOffset = randomPool.length;
function randomIdPart(): string {
  if (randomOffset === randomPool.length) {
    randomFillSync(randomPool);
    randomOffset = 0;
  }
  const value = randomPool.readUInt16BE(randomOffset) * 0x1_0000_0000 + randomPool.readUInt32BE(randomOffset + 2);
  randomOffset += 6;
  const high = Math.floor(value / FIVE_DIGITS);
  return fiveDigits(high) + fiveDigits(value - high * FIVE_DIGITS);
}
