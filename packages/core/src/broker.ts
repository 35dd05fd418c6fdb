import { createHash, randomFillSync } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { canonicalJson } from './canonical';
import { MachineId, WorkerRegistration, capabilityProfile } from './capabilities';
import { type BrokerConfig, type BrokerConfigInput, brokerConfig } from './config';
import { CompletionBatcher } from './completion-batch';
import {
  EmpError,
  NotFoundError,
  PayloadTooLargeError,
  UnknownServiceError,
  ValidationError,
  fromRedisError,
} from './errors';
import {
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_MAX_INFRA_ATTEMPTS,
  FailureKind,
  type Job,
  JOB_STATES,
  JobErrorInfo,
  JobId,
  JobProgress,
  type JobProgressView,
  JobRecord,
  JobState,
  SubmitJobInput,
  type SubmitJob,
  TERMINAL_STATES,
  poolOfJobId,
  priorityOfScore,
} from './job';
import { KeyLayout } from './keys';
import { parseStreamEntry, type StreamEvent } from './events';
import { StreamId, type SubmitResult } from './api-protocol';
import { ensureFunctionLibrary } from './library';
import { JobRequirements, PoolName, ServiceName, TenantId, requirementClass } from './requirements';
import { parseWith } from './validation';
import { z } from 'zod';

export type RedisClient = Redis | Cluster;

/** What a worker holds while it runs an attempt; every call about the job carries it. */
export interface Lease {
  pool: string;
  jobId: string;
  /** the attempt's fencing token: calls with an older token are refused */
  token: string;
  workerId: string;
}

export interface ClaimedJob {
  lease: Lease;
  id: string;
  attempt: number;
  service: string;
  tenant: string;
  payload: unknown;
  requirements: JobRequirements;
  priority: number;
  workflowId?: string;
  step?: number;
  executionTimeoutMs?: number;
  submittedAt: number;
}

export type ClaimResult =
  | { job: ClaimedJob }
  | {
      job: null;
      /** when a job this worker skipped (it just failed here) becomes its to take */
      retryAt?: number;
      workerState: string;
    };

export type WorkerSignal =
  | { type: 'wake'; requirementClass: string }
  | { type: 'cancel' | 'expired' | 'timeout'; jobId: string };

export type DropVerdict = 'canceled' | 'expired' | 'lost';

export interface BrokerEvent {
  /** stream entry id: pass it back as the cursor to resume after this event */
  id: string;
  pool: string;
  type: string;
  ts: number;
  fields: Record<string, string>;
}

export interface ClassStats {
  requirementClass: string;
  definition: Record<string, unknown>;
  routable: boolean;
  depth: number;
  headJob?: string;
  headSubmittedAt?: number;
}

export interface QueueStats {
  pool: string;
  classes: ClassStats[];
  /** delayed, retrying and leased jobs with a timer */
  timers: number;
  idleWorkers: number;
  onlineWorkers: number;
  offlineWorkers: number;
}

/** Live jobs of one service in one pool, per state. */
export interface ServiceJobCounts {
  service: string;
  /** waiting to be claimed, delayed ones included */
  queued: number;
  /** queued jobs whose run_at has not come yet */
  delayed: number;
  starting: number;
  running: number;
  retrying: number;
}

/** A worker or machine hash as the registry holds it: field -> value as stored. */
export type RegistryEntry = { id: string } & Record<string, string>;

export interface BrokerOptions {
  redis: RedisClient;
  config?: BrokerConfigInput;
  /** a virtual clock (the fleet simulator); by default every function uses Redis TIME */
  clock?: () => number;
  /** skip loading the function library (someone else already did) */
  skipLibraryLoad?: boolean;
}

/** Jobs per emp_submit_many call: big enough to amortise a call, small enough not to block Redis for long (about 2 ms). */
const SUBMIT_BATCH = 100;

const LeaseSchema = z
  .object({
    pool: PoolName,
    jobId: JobId,
    token: z.string().regex(/^\d+$/, 'a fencing token is a decimal number'),
    workerId: z.string().min(1).max(128),
  })
  .refine((lease) => poolOfJobId(lease.jobId) === lease.pool, {
    path: ['pool'],
    message: "not the pool of the lease's job",
  });

const WorkerStateInput = z.enum(['draining', 'idle', 'offline']);

/** Filters of `Broker.listJobs`; every one is optional. */
export const JobListFilter = z
  .object({
    pool: PoolName.optional(),
    tenant: TenantId.optional(),
    states: z.array(JobState).max(JOB_STATES.length).optional(),
    services: z.array(ServiceName).max(32).optional(),
    /** submitted at or after (ms) */
    since: z.number().int().nonnegative().optional(),
    /** submitted at or before (ms) */
    until: z.number().int().nonnegative().optional(),
    /** from the previous page's `next_cursor` */
    cursor: z.string().max(400).optional(),
    limit: z.number().int().min(1).max(500).default(50),
  })
  .strict();
export type JobListFilter = z.input<typeof JobListFilter>;

export interface JobListItem {
  id: string;
  pool: string;
  state: JobState;
  submitted_at: number;
}

export interface JobListPage {
  /** newest first */
  jobs: JobListItem[];
  /** pass it back for the next page; absent on the last one */
  next_cursor?: string;
}

export const MACHINE_ACTIONS = ['drain', 'restart', 'shutdown'] as const;
export const MachineAction = z.enum(MACHINE_ACTIONS);
export type MachineAction = z.infer<typeof MachineAction>;

export const MachineCommandOutcome = z.enum(['ok', 'failed']);
export type MachineCommandOutcome = z.infer<typeof MachineCommandOutcome>;

/** An operator's command as its machine agent reads it from the machine's command stream. */
export interface MachineCommand {
  /** stream id: acknowledged with machineCommandDone, resumed after */
  id: string;
  /** one of MACHINE_ACTIONS; anything else is acknowledged as failed */
  action: string;
  service?: string;
  by?: string;
  reason?: string;
  ts: number;
}

/** One output line of a supervised process, as the machine agent writes it to `machine-logs:<machine>`. */
export interface MachineLogEntry {
  id: string;
  process: string;
  stream: 'stdout' | 'stderr';
  line: string;
  ts: number;
}

export interface PausedService {
  service: string;
  since: number;
  by?: string;
  reason?: string;
}

/** Entries of the job index one list call looks at per pool before answering with a short page. */
const LIST_BUDGET = 2_000;

/**
 * The typed face of the `emp` Redis Function library: every state change of a
 * job is one atomic function call; this class validates input, shapes arguments
 * and turns replies and error codes into typed values.
 */
export class Broker {
  readonly config: BrokerConfig;
  readonly keys: KeyLayout;
  private readonly knownPools = new Set<string>();
  private readonly services: Set<string>;
  private readonly completions = new CompletionBatcher((pool, claimFor, completions) =>
    this.fcall('emp_complete', pool, [claimFor, ...completions.flatMap((c) => [c.jobId, c.token, c.result])]) as Promise<unknown[]>,
  );

  private constructor(
    readonly redis: RedisClient,
    config: BrokerConfig,
    /** the virtual clock, when one replaces Redis TIME */
    readonly clock: (() => number) | undefined,
  ) {
    this.config = config;
    this.keys = new KeyLayout(config.namespace);
    this.services = new Set(config.services);
  }

  static async connect(options: BrokerOptions): Promise<Broker> {
    const broker = new Broker(options.redis, brokerConfig(options.config), options.clock);
    if (!options.skipLibraryLoad) await ensureFunctionLibrary(options.redis, broker.keys);
    return broker;
  }

  // ---------------------------------------------------------------- clients

  async submit(input: SubmitJobInput): Promise<SubmitResult> {
    const prepared = this.prepareSubmit(parseWith(SubmitJobInput, input, 'job'));
    await this.rememberPool(prepared.pool);
    const reply = (await this.fcall('emp_submit', prepared.pool, prepared.args)) as [string, number, number];
    return { id: reply[0], pool: prepared.pool, duplicate: reply[1] === 1, routable: reply[2] === 1 };
  }

  /**
   * Submits a job and reads it back in the same round trip (one pipeline: the
   * submit, then the read of the id the submit will use), for a caller that
   * answers with the job. `job` is a submission already parsed with
   * SubmitJobInput (or a schema extending it, as the API's request body), so it
   * is not parsed again. An idempotent repeat reads the original job after.
   */
  async submitAndRead(job: SubmitJob): Promise<{ submitted: SubmitResult; job: Job | null }> {
    const prepared = this.prepareSubmit(job);
    await this.rememberPool(prepared.pool);
    const anchor = this.keys.anchor(prepared.pool);
    const replies = await this.redis
      .pipeline()
      .call('FCALL', 'emp_submit', 1, anchor, ...this.prelude(), ...prepared.args)
      .call('FCALL_RO', 'emp_get_job', 1, anchor, prepared.id)
      .exec();
    const [submitError, reply] = replies?.[0] ?? [new Error('no reply to the submit'), null];
    const [readError, read] = replies?.[1] ?? [new Error('no reply to the read'), null];
    if (submitError) throw fromRedisError(submitError);
    const [id, duplicate, routable] = reply as [string, number, number];
    const submitted = { id, pool: prepared.pool, duplicate: duplicate === 1, routable: routable === 1 };
    if (id !== prepared.id) return { submitted, job: await this.getJob(id) };
    if (readError) throw fromRedisError(readError);
    return { submitted, job: read ? parseJobReply(id, prepared.pool, read as JobReply) : null };
  }

  /** Submits many jobs with one round trip per pool; each result is a SubmitResult or the error for that job. */
  async submitMany(inputs: SubmitJobInput[]): Promise<Array<SubmitResult | EmpError>> {
    const results: Array<SubmitResult | EmpError> = new Array(inputs.length);
    const prepared = inputs.map((input, index) => {
      try {
        return this.prepareSubmit(parseWith(SubmitJobInput, input, 'job'));
      } catch (error) {
        if (!(error instanceof EmpError)) throw error;
        results[index] = error;
        return null;
      }
    });
    const byPool = new Map<string, number[]>();
    prepared.forEach((p, index) => {
      if (!p) return;
      const indexes = byPool.get(p.pool);
      if (indexes) indexes.push(index);
      else byPool.set(p.pool, [index]);
    });
    await Promise.all(
      [...byPool.entries()].map(async ([pool, indexes]) => {
        await this.rememberPool(pool);
        // batches of SUBMIT_BATCH jobs per function call, all batches in one pipeline
        const pipeline = this.redis.pipeline();
        const head = ['emp_submit_many', 1, this.keys.anchor(pool), ...this.prelude()];
        const batches: number[][] = [];
        for (let start = 0; start < indexes.length; start += SUBMIT_BATCH) {
          const batch = indexes.slice(start, start + SUBMIT_BATCH);
          batches.push(batch);
          pipeline.call('FCALL', ...head, batch.length, ...batch.flatMap((index) => prepared[index]!.args));
        }
        const replies = (await pipeline.exec()) ?? [];
        batches.forEach((batch, b) => {
          const [error, reply] = replies[b] ?? [new Error('no reply'), null];
          batch.forEach((index, i) => {
            const entry = (reply as unknown[] | null)?.[i] as [string, number | string, number] | undefined;
            if (error || !entry) {
              const typed = fromRedisError(error);
              results[index] = typed instanceof EmpError ? typed : new EmpError('CORRUPT', String(error ?? 'no reply'));
            } else if (entry[0] === 'error') {
              const typed = fromRedisError(new Error(String(entry[1])));
              results[index] = typed instanceof EmpError ? typed : new EmpError('CORRUPT', String(entry[1]));
            } else {
              results[index] = { id: entry[0], pool, duplicate: entry[1] === 1, routable: entry[2] === 1 };
            }
          });
        });
      }),
    );
    return results;
  }

  async getJob(id: string): Promise<Job | null> {
    const pool = this.poolOf(id);
    const reply = (await this.fcallReadOnly('emp_get_job', pool, [id])) as JobReply | null;
    return reply && parseJobReply(id, pool, reply);
  }

  /** Cancels a job; idempotent: a finished job is returned unchanged. */
  async cancel(id: string, reason = ''): Promise<{ state: JobState; changed: boolean }> {
    const pool = this.poolOf(id);
    const [state, changed] = (await this.fcall('emp_cancel', pool, [id, reason.slice(0, 500)])) as [JobState, number];
    return { state, changed: changed === 1 };
  }

  /** Puts a failed, canceled or expired job back in the queue under the same id. */
  async retry(id: string): Promise<JobState> {
    return (await this.fcall('emp_retry', this.poolOf(id), [id])) as JobState;
  }

  /**
   * A page of jobs, newest first, across pools (or one), by tenant, state,
   * service and submission time. Pages are cut by a cursor, never by an offset,
   * so jobs submitted meanwhile do not shift them; a page may hold fewer than
   * `limit` jobs when the filter is sparse, and still carry a cursor.
   */
  async listJobs(filter: JobListFilter = {}): Promise<JobListPage> {
    const f = parseWith(JobListFilter, filter, 'job list filter');
    const cursor = f.cursor === undefined ? undefined : decodeListCursor(f.cursor);
    const pools = f.pool ? [f.pool] : await this.pools();
    const pages = await Promise.all(
      pools.map(async (pool) => {
        const [found, lastScore, lastMember, exhausted] = (await this.fcallReadOnly('emp_list_jobs', pool, [
          f.tenant ?? '', f.until ?? '', f.since ?? '', cursor ? cursor.score : '', cursor ? cursor.member : '',
          (f.states ?? []).join(','), (f.services ?? []).join(','), f.limit, LIST_BUDGET,
        ])) as [Array<[string, string, string, string]>, string, string, number];
        return {
          items: found.map(([id, score, member, state]) => ({ id, pool, state: state as JobState, submitted_at: Number(score), position: { score: Number(score), member } })),
          boundary: exhausted === 1 || lastScore === '' ? undefined : { score: Number(lastScore), member: lastMember },
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
      ...(last ? { next_cursor: encodeListCursor(last) } : {}),
    };
  }

  /**
   * A job's events, oldest first, after `after` (a stream id) or from its
   * submission: the pool's stream read from the job's submission time on.
   * `cursor` is the last stream entry looked at, to continue from.
   */
  async jobEvents(id: string, options: { after?: string; limit?: number } = {}): Promise<{ events: BrokerEvent[]; cursor: string }> {
    const pool = this.poolOf(id);
    const submittedAt = await this.redis.hget(`${this.keys.prefix(pool)}job:${id}`, 'submitted_at');
    if (submittedAt === null) throw new NotFoundError(`job ${id} does not exist (or its retention has passed)`);
    if (options.after !== undefined) parseWith(StreamId, options.after, 'event cursor');
    const limit = options.limit ?? 1_000;
    let cursor = options.after ?? `${Math.max(0, Number(submittedAt) - 1)}-0`;
    const events: BrokerEvent[] = [];
    for (;;) {
      const batch = await this.readEvents(pool, cursor, { count: 1_000 });
      for (const event of batch) {
        cursor = event.id;
        if (event.fields.job !== id) continue;
        events.push(event);
        if (events.length >= limit) return { events, cursor };
      }
      if (batch.length < 1_000) return { events, cursor };
    }
  }

  /** The fencing token and worker of a job's current attempt, for delegated completion; null when nobody holds it. */
  async currentAttempt(id: string): Promise<Lease | null> {
    const pool = this.poolOf(id);
    // the attempt number is the attempt's fencing token
    const [state, token, worker] = await this.redis.hmget(`${this.keys.prefix(pool)}job:${id}`, 'state', 'attempts', 'worker');
    if (state === null) throw new NotFoundError(`job ${id} does not exist (or its retention has passed)`);
    if (!(state === 'starting' || state === 'running') || !token || !worker) return null;
    return { pool, jobId: id, token, workerId: worker };
  }

  // ---------------------------------------------------------------- workers

  /**
   * Registers a worker or updates its capabilities. `freshStart` says this is a
   * new process under that id: jobs an earlier process held go back at once.
   */
  async registerWorker(input: WorkerRegistration, options: { freshStart?: boolean } = {}): Promise<{ profile: string; becameRoutable: number }> {
    const registration = parseWith(WorkerRegistration, input, 'worker registration');
    const profile = capabilityProfile(registration.capabilities);
    await this.rememberPool(registration.pool);
    const fields: Array<string | number> = ['pool', registration.pool, 'concurrency', registration.concurrency];
    if (registration.version) fields.push('version', registration.version);
    if (registration.hostname) fields.push('hostname', registration.hostname);
    fields.push('capabilities', profile.definition);
    let [becameRoutable, cursor, lanes] = (await this.fcall('emp_register_worker', registration.pool, [
      registration.id,
      registration.machine_id,
      profile.id,
      profile.definition,
      options.freshStart ? '1' : '0',
      ...fields,
    ])) as [number, string, string];
    // a new profile is checked against the classes nobody could run so far, a bounded page per call
    while (cursor !== '0') {
      const [became, next] = (await this.fcall('emp_routable_scan', registration.pool, [profile.id, cursor])) as [number, string];
      becameRoutable += became;
      cursor = next;
    }
    if (lanes === 'scan') await this.putQueuedJobsInLanes(registration.pool);
    return { profile: profile.id, becameRoutable };
  }

  /**
   * The first worker restricted to tenants or a workflow turns lanes on in its
   * shard (see docs/broker.md, "Tenants and workflows do not make classes"): the
   * jobs already queued go into them, a bounded page per call, before it claims.
   */
  private async putQueuedJobsInLanes(pool: string): Promise<void> {
    let cursor = '0';
    do {
      const [next, classes] = (await this.fcall('emp_lane_scan', pool, ['classes', cursor])) as [string, string[]];
      for (const cls of classes) {
        let after = '';
        do {
          [after] = (await this.fcall('emp_lane_scan', pool, ['jobs', cls, after])) as [string];
        } while (after !== '');
      }
      cursor = next;
    } while (cursor !== '0');
    await this.fcall('emp_lane_scan', pool, ['done']);
  }

  async setWorkerState(pool: string, workerId: string, state: z.input<typeof WorkerStateInput>): Promise<string> {
    const parsed = parseWith(WorkerStateInput, state, 'worker state');
    return (await this.fcall('emp_set_worker_state', checkedPool(pool), [workerId, parsed])) as string;
  }

  async registerMachine(pool: string, machineId: string, state: string, fields: Record<string, string> = {}): Promise<boolean> {
    parseWith(MachineId, machineId, 'machine id');
    await this.rememberPool(checkedPool(pool));
    const pairs = Object.entries(fields).flat();
    return ((await this.fcall('emp_register_machine', pool, [machineId, state, ...pairs])) as number) === 1;
  }

  /** Takes the best job this worker can run, or records it idle so that the next capable submit wakes it. */
  async claim(pool: string, workerId: string, wokenFor = ''): Promise<ClaimResult> {
    const reply = (await this.fcall('emp_claim', checkedPool(pool), [workerId, wokenFor])) as unknown[];
    return this.claimed(pool, workerId, reply);
  }

  /**
   * The result of a claim reply. A claim call looks at a bounded number of
   * requirement classes; one that ran out of them before it found a job or
   * reached the end answers 'more', and the walk goes on in further calls (each
   * short, so other clients are served in between) until it ends.
   */
  private claimed(pool: string, workerId: string, first: unknown[]): ClaimResult | Promise<ClaimResult> {
    // most claims end in their first call: answered in the same turn, as before walks could pause
    if (first[3] !== 'more') return parseClaim(pool, workerId, first);
    return this.claimedAfterMore(pool, workerId, first);
  }

  private async claimedAfterMore(pool: string, workerId: string, first: unknown[]): Promise<ClaimResult> {
    let reply = first;
    let retryAt: number | undefined;
    while (reply[0] === 'none' && reply[3] === 'more') {
      if (reply[1]) retryAt = Math.min(retryAt ?? Infinity, Number(reply[1]));
      reply = (await this.fcall('emp_claim', pool, [workerId, ''])) as unknown[];
    }
    const result = parseClaim(pool, workerId, reply);
    if (result.job || retryAt === undefined) return result;
    return { ...result, retryAt: Math.min(retryAt, result.retryAt ?? Infinity) };
  }

  /**
   * A claim for an idle worker to send on its signal connection while it waits
   * there (`waitForSignals`): Redis runs it right after the wait ends, so a
   * wake-up and the claim it calls for cost no round trip in between. It takes
   * a job only when the wait ended in a wake-up for this worker; otherwise it
   * changes nothing and resolves `null` (queue another behind the next wait).
   */
  async claimWhenWoken(connection: RedisClient, pool: string, workerId: string): Promise<ClaimResult | null> {
    const reply = (await this.fcall('emp_claim', checkedPool(pool), [workerId, '', 'if-woken'], connection)) as unknown[];
    return reply[3] === 'unwoken' ? null : this.claimed(pool, workerId, reply);
  }

  /** The attempt has what it needs (model loaded) and begins executing. */
  async start(lease: Lease): Promise<void> {
    const l = this.lease(lease);
    await this.fcall('emp_start', l.pool, [l.jobId, l.token]);
  }

  /** Records progress and renews the lease. */
  async progress(lease: Lease, progress: z.input<typeof JobProgress>): Promise<void> {
    const l = this.lease(lease);
    const parsed = parseWith(JobProgress, progress, 'progress');
    await this.fcall('emp_progress', l.pool, [l.jobId, l.token, JSON.stringify(parsed)]);
  }

  /**
   * Records the attempt's result. With `claimNext`, the same call claims the
   * worker's next job (one round trip per job for a busy worker; completions
   * of one worker made in the same turn of the event loop share one).
   */
  async complete(lease: Lease, result: unknown, options: { claimNext?: boolean } = {}): Promise<ClaimResult | null> {
    const l = this.lease(lease);
    const text = jsonOf(result ?? null, 'result', '');
    if (Buffer.byteLength(text) > this.config.maxResultBytes) {
      throw new PayloadTooLargeError(
        `result of job ${l.jobId} is ${Buffer.byteLength(text)} bytes, over the ${this.config.maxResultBytes}-byte limit; store large outputs in the asset store and return their URLs`,
      );
    }
    const reply = await this.completions.add(l.pool, options.claimNext ? l.workerId : '', { jobId: l.jobId, token: l.token, result: text });
    return options.claimNext ? this.claimed(l.pool, l.workerId, reply.slice(1)) : null;
  }

  /** Records a classified failure of the attempt; returns what became of the job. */
  async fail(
    lease: Lease,
    error: z.input<typeof JobErrorInfo>,
    options: { claimNext?: boolean } = {},
  ): Promise<{ outcome: 'queued' | 'retrying' | 'failed'; next: ClaimResult | null }> {
    const l = this.lease(lease);
    const info = parseWith(JobErrorInfo, error, 'job error');
    const reply = (await this.fcall('emp_fail', l.pool, [
      l.jobId,
      l.token,
      info.kind,
      jsonOf(info, 'job error', 'details'),
      options.claimNext ? l.workerId : '',
    ])) as unknown[];
    const outcome = reply[0] as 'queued' | 'retrying' | 'failed';
    return { outcome, next: options.claimNext ? await this.claimed(l.pool, l.workerId, reply.slice(1)) : null };
  }

  /** Renews the worker's leases; returns the jobs it must stop working on. */
  async heartbeat(
    pool: string,
    workerId: string,
    leases: Array<Pick<Lease, 'jobId' | 'token'>>,
  ): Promise<Array<{ jobId: string; verdict: DropVerdict }>> {
    const pairs = leases.flatMap((l) => [l.jobId, l.token]);
    const reply = (await this.fcall('emp_heartbeat', checkedPool(pool), [workerId, ...pairs])) as string[];
    const drops: Array<{ jobId: string; verdict: DropVerdict }> = [];
    for (let i = 0; i < reply.length; i += 2) drops.push({ jobId: reply[i]!, verdict: reply[i + 1] as DropVerdict });
    return drops;
  }

  /**
   * Blocks on the worker's signal list (on a connection of its own: it blocks)
   * until a wake-up or a notice arrives or `timeoutMs` passes (0: until one
   * arrives). This is how an idle worker waits without polling.
   */
  async waitForSignals(blocking: RedisClient, pool: string, workerId: string, timeoutMs: number): Promise<WorkerSignal[]> {
    const key = this.keys.signal(pool, workerId);
    const seconds = timeoutMs === 0 ? 0 : Math.max(0.01, timeoutMs / 1000);
    // BLMPOP takes everything queued in the same round trip that waited for it
    const reply = (await blocking.call('BLMPOP', seconds, 1, key, 'LEFT', 'COUNT', 100)) as
      | [string, string[]]
      | null;
    if (!reply) return [];
    return reply[1].map(parseSignal).filter((s): s is WorkerSignal => s !== null);
  }

  // ---------------------------------------------------------------- operations

  /** Runs the pool's due work (timers, offline detection); returns ms until more is due (undefined: nothing scheduled). */
  async tick(pool: string): Promise<{ handled: number; nextDueInMs?: number }> {
    const [handled, wait] = (await this.fcall('emp_tick', checkedPool(pool), [
      this.config.tickLimit,
      this.config.offlineAfterMs,
      this.config.registryRetentionMs,
      this.config.clockGapMs,
      this.config.leaseGraceMs ?? Math.ceil(this.config.leaseMs / 3),
    ])) as [number, string];
    return wait === '' ? { handled } : { handled, nextDueInMs: Number(wait) };
  }

  async queueStats(pool: string): Promise<QueueStats> {
    checkedPool(pool);
    type Row = [string, string, string, number, string, string];
    // a page of classes per call (SSCAN: a class may come twice), the totals with the first
    const rows = new Map<string, Row>();
    let totals: number[] = [];
    let cursor = '0';
    do {
      const reply = (await this.fcallReadOnly('emp_queue_stats', pool, [cursor])) as [Row[], number[], string];
      for (const row of reply[0]) rows.set(row[0], row);
      if (cursor === '0') totals = reply[1];
      cursor = reply[2];
    } while (cursor !== '0');
    return {
      pool,
      classes: [...rows.values()].map(([id, definition, routable, depth, head, submitted]) => ({
        requirementClass: id,
        definition: JSON.parse(definition) as Record<string, unknown>,
        routable: routable === '1',
        depth,
        ...(head ? { headJob: head, headSubmittedAt: Number(submitted) } : {}),
      })),
      timers: totals[0] ?? 0,
      idleWorkers: totals[1] ?? 0,
      onlineWorkers: totals[2] ?? 0,
      offlineWorkers: totals[3] ?? 0,
    };
  }

  /**
   * The pool's live jobs per service and state, exact, from the indexes that
   * hold them (class queues, workers' jobs, the counts of delayed and retrying
   * jobs): cheap enough for every metrics scrape. Finished jobs are not counted
   * here; they expire after their retention (count their events instead).
   */
  async jobCounts(pool: string): Promise<ServiceJobCounts[]> {
    checkedPool(pool);
    type Row = [string, number, number, number, number, number];
    // the queued jobs a page of classes per call, summed here
    const counts = new Map<string, ServiceJobCounts>();
    let page = '';
    do {
      const reply = (await this.fcallReadOnly('emp_job_counts', pool, [page])) as [Row[], string];
      for (const [service, queued, delayed, starting, running, retrying] of reply[0]) {
        const sum = counts.get(service) ?? { service, queued: 0, delayed: 0, starting: 0, running: 0, retrying: 0 };
        counts.set(service, {
          service,
          queued: sum.queued + queued,
          delayed: sum.delayed + delayed,
          starting: sum.starting + starting,
          running: sum.running + running,
          retrying: sum.retrying + retrying,
        });
      }
      page = reply[1];
    } while (page !== '');
    return [...counts.values()];
  }

  /**
   * For each requirement class, how many of its jobs the online workers able to
   * run it could run at once (the sum of their concurrency; draining workers and
   * paused services count nothing): what a queue-time estimate divides by.
   */
  async classCapacity(pool: string, classes: string[]): Promise<number[]> {
    checkedPool(pool);
    if (classes.length === 0) return [];
    return (await this.fcallReadOnly('emp_class_capacity', pool, classes)) as number[];
  }

  /** Every pool that has seen a job or a worker. */
  async pools(): Promise<string[]> {
    return (await this.redis.smembers(this.keys.pools())).sort();
  }

  /**
   * Reads the pool's events after `cursor` (a stream id; '0' = from the oldest
   * kept, '$' = only new ones), waiting up to `blockMs` when there are none.
   */
  async readEvents(pool: string, cursor = '0', options: { count?: number; blockMs?: number; connection?: RedisClient } = {}): Promise<BrokerEvent[]> {
    const connection = options.connection ?? this.redis;
    const count = options.count ?? 100;
    const args: Array<string | number> = ['COUNT', count];
    if (options.blockMs !== undefined) args.push('BLOCK', options.blockMs);
    const reply = (await connection.call('XREAD', ...args, 'STREAMS', this.keys.events(pool), cursor)) as
      | Array<[string, Array<[string, string[]]>]>
      | null;
    if (!reply) return [];
    return (reply[0]?.[1] ?? []).map(([id, flat]) => {
      const fields = foldHash(flat);
      const { type = 'unknown', ts = '0', ...rest } = fields;
      return { id, pool, type, ts: Number(ts), fields: rest };
    });
  }

  /**
   * Makes sure consumer group `group` reads the pool's event stream (creating the
   * stream when there is none yet); a new group starts after `startAt` ('$': only
   * events from now on, '0': every event still kept). Returns whether it was created.
   */
  async ensureEventGroup(pool: string, group: string, startAt: '$' | '0' = '$'): Promise<boolean> {
    try {
      await this.redis.call('XGROUP', 'CREATE', this.keys.events(checkedPool(pool)), group, startAt, 'MKSTREAM');
      return true;
    } catch (error) {
      if (String((error as Error).message).startsWith('BUSYGROUP')) return false;
      throw error;
    }
  }

  /**
   * Reads new events of the pool for `consumer` of `group` (XREADGROUP '>'),
   * waiting up to `blockMs` when there are none; each stays pending for this
   * consumer until acknowledged with `ackEvents`. A group that is missing (the
   * stream was deleted) is made again from the oldest kept event.
   */
  async readEventGroup(
    pool: string,
    group: string,
    consumer: string,
    options: { count?: number; blockMs?: number; connection?: RedisClient } = {},
  ): Promise<StreamEvent[]> {
    const args: Array<string | number> = ['GROUP', group, consumer, 'COUNT', options.count ?? 100];
    if (options.blockMs !== undefined) args.push('BLOCK', options.blockMs);
    let reply: Array<[string, Array<[string, string[] | null]>]> | null;
    try {
      reply = (await (options.connection ?? this.redis).call('XREADGROUP', ...args, 'STREAMS', this.keys.events(pool), '>')) as typeof reply;
    } catch (error) {
      if (!String((error as Error).message).startsWith('NOGROUP')) throw error;
      await this.ensureEventGroup(pool, group, '0');
      return [];
    }
    return (reply?.[0]?.[1] ?? []).map(([id, flat]) => parseStreamEntry(pool, id, flat ?? []));
  }

  /**
   * Takes over events pending for longer than `minIdleMs` in `group` (their
   * consumer crashed or hangs) for `consumer` (XAUTOCLAIM), a page at a time
   * from `cursor`; entries trimmed from the stream meanwhile are dropped from
   * the group. Returns them and the cursor of the next page ('0-0': done).
   */
  async claimStaleEvents(
    pool: string,
    group: string,
    consumer: string,
    minIdleMs: number,
    options: { cursor?: string; count?: number } = {},
  ): Promise<{ events: StreamEvent[]; cursor: string }> {
    let reply: [string, Array<[string, string[] | null] | null>, string[]?];
    try {
      reply = (await this.redis.call(
        'XAUTOCLAIM', this.keys.events(pool), group, consumer, minIdleMs, options.cursor ?? '0-0', 'COUNT', options.count ?? 100,
      )) as typeof reply;
    } catch (error) {
      if (String((error as Error).message).startsWith('NOGROUP')) return { events: [], cursor: '0-0' };
      throw error;
    }
    const events = reply[1].flatMap((entry) => (entry && entry[1] ? [parseStreamEntry(pool, entry[0], entry[1])] : []));
    return { events, cursor: reply[0] };
  }

  /** Acknowledges events of the pool's stream that `group` has handled (XACK). */
  async ackEvents(pool: string, group: string, ids: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    return (await this.redis.call('XACK', this.keys.events(pool), group, ...ids)) as number;
  }

  /** Stops (or resumes) claims of a service's jobs in a pool; returns whether that changed anything. */
  async setServicePaused(pool: string, service: string, paused: boolean, options: { by?: string; reason?: string } = {}): Promise<boolean> {
    parseWith(ServiceName, service, 'service');
    await this.rememberPool(checkedPool(pool));
    const changed = await this.fcall('emp_pause_service', pool, [service, paused ? '1' : '0', options.by ?? '', (options.reason ?? '').slice(0, 500)]);
    return changed === 1;
  }

  async pausedServices(pool: string): Promise<PausedService[]> {
    const hash = await this.redis.hgetall(`${this.keys.prefix(checkedPool(pool))}paused`);
    return Object.entries(hash)
      .map(([service, text]) => {
        const info = JSON.parse(text) as { since: number; by?: string; reason?: string };
        return { service, since: info.since, ...(info.by ? { by: info.by } : {}), ...(info.reason ? { reason: info.reason } : {}) };
      })
      .sort((a, b) => a.service.localeCompare(b.service));
  }

  /**
   * Records a command for a machine (drain or restart it, or one service on it)
   * and appends it to the machine's command stream for its agent; returns the command id.
   */
  async machineCommand(
    pool: string,
    machineId: string,
    action: MachineAction,
    options: { service?: string; by?: string; reason?: string } = {},
  ): Promise<string> {
    parseWith(MachineId, machineId, 'machine id');
    parseWith(MachineAction, action, 'machine action');
    if (options.service !== undefined) parseWith(ServiceName, options.service, 'service');
    return (await this.fcall('emp_machine_command', checkedPool(pool), [
      machineId, action, options.service ?? '', options.by ?? '', (options.reason ?? '').slice(0, 500),
    ])) as string;
  }

  /**
   * The machine agent reports what became of a command; the outcome is recorded
   * on the machine (with the command as the point a restarted agent resumes
   * after) and announced as a machine.command.done event. Returns whether the
   * resume point moved (false: a newer command was already reported).
   */
  async machineCommandDone(pool: string, machineId: string, commandId: string, outcome: MachineCommandOutcome, message = ''): Promise<boolean> {
    parseWith(MachineId, machineId, 'machine id');
    parseWith(StreamId, commandId, 'command id');
    parseWith(MachineCommandOutcome, outcome, 'command outcome');
    const moved = await this.fcall('emp_machine_command_done', checkedPool(pool), [machineId, commandId, outcome, message.slice(0, 2_000)]);
    return moved === 1;
  }

  /**
   * Commands for a machine after `cursor` (a stream id; '0' = all kept), waiting
   * up to `blockMs` on `connection` (it blocks: give it one of its own) when none are there.
   */
  async readMachineCommands(
    pool: string,
    machineId: string,
    cursor: string,
    options: { blockMs?: number; count?: number; connection?: RedisClient } = {},
  ): Promise<MachineCommand[]> {
    const args: Array<string | number> = ['COUNT', options.count ?? 100];
    if (options.blockMs !== undefined) args.push('BLOCK', options.blockMs);
    const reply = (await (options.connection ?? this.redis).call(
      'XREAD', ...args, 'STREAMS', this.keys.machineCommands(checkedPool(pool), machineId), cursor,
    )) as Array<[string, Array<[string, string[]]>]> | null;
    return (reply?.[0]?.[1] ?? []).map(([id, flat]) => {
      const f = foldHash(flat);
      return {
        id,
        action: f.action ?? '',
        ...(f.service ? { service: f.service } : {}),
        ...(f.by ? { by: f.by } : {}),
        ...(f.reason ? { reason: f.reason } : {}),
        ts: Number(f.ts ?? 0),
      };
    });
  }

  /**
   * Announces a transition of a process a machine agent supervises as a
   * machine.process event (`fields`: restarts, exit_code, signal, pid, ...).
   */
  async machineProcessEvent(pool: string, machineId: string, process: string, state: string, fields: Record<string, string | number> = {}): Promise<string> {
    parseWith(MachineId, machineId, 'machine id');
    const pairs = Object.entries(fields).flatMap(([key, value]) => [key, String(value)]);
    return (await this.fcall('emp_machine_process', checkedPool(pool), [machineId, process, state, ...pairs])) as string;
  }

  /**
   * Output lines of a machine's processes after `cursor` ('0' = the oldest kept,
   * '$' = only new ones), oldest first, optionally of one process; waits up to
   * `blockMs` on `connection` when there are none. `cursor` in the answer is the
   * last entry looked at (matching or not), to continue from.
   */
  async readMachineLogs(
    pool: string,
    machineId: string,
    cursor: string,
    options: { process?: string; count?: number; blockMs?: number; connection?: RedisClient } = {},
  ): Promise<{ entries: MachineLogEntry[]; cursor: string }> {
    const args: Array<string | number> = ['COUNT', options.count ?? 100];
    if (options.blockMs !== undefined) args.push('BLOCK', options.blockMs);
    const reply = (await (options.connection ?? this.redis).call(
      'XREAD', ...args, 'STREAMS', this.keys.machineLogs(checkedPool(pool), machineId), cursor,
    )) as Array<[string, Array<[string, string[]]>]> | null;
    const raw = reply?.[0]?.[1] ?? [];
    const entries: MachineLogEntry[] = [];
    for (const [id, flat] of raw) {
      const entry = machineLogEntry(id, flat);
      if (options.process === undefined || entry.process === options.process) entries.push(entry);
    }
    return { entries, cursor: raw.length > 0 ? raw[raw.length - 1]![0] : cursor };
  }

  /** The newest `limit` output lines of a machine's processes (of one process when given), oldest first. */
  async tailMachineLogs(pool: string, machineId: string, options: { process?: string; limit?: number } = {}): Promise<MachineLogEntry[]> {
    const key = this.keys.machineLogs(checkedPool(pool), machineId);
    const limit = options.limit ?? 100;
    const found: MachineLogEntry[] = [];
    let end = '+';
    // newest first, a chunk at a time, until enough match; the stream is capped, so this ends soon
    for (;;) {
      const chunk = await this.redis.xrevrange(key, end, '-', 'COUNT', 500);
      for (const [id, flat] of chunk) {
        const entry = machineLogEntry(id, flat);
        if (options.process === undefined || entry.process === options.process) found.push(entry);
        if (found.length >= limit) return found.reverse();
      }
      if (chunk.length < 500) return found.reverse();
      end = `(${chunk[chunk.length - 1]![0]}`;
    }
  }

  /**
   * A machine's newest events of the given types (machine.process, ...), oldest
   * first: the pool's stream read backwards a chunk at a time until `limit`
   * match or `maxScanned` entries were looked at. `complete` is false when the
   * scan stopped at that bound with older entries left unread.
   */
  async machineEvents(
    pool: string,
    machineId: string,
    options: { types: readonly string[]; limit?: number; maxScanned?: number },
  ): Promise<{ events: BrokerEvent[]; scanned: number; complete: boolean }> {
    const key = this.keys.events(checkedPool(pool));
    const limit = options.limit ?? 100;
    const maxScanned = options.maxScanned ?? 10_000;
    const types = new Set(options.types);
    const events: BrokerEvent[] = [];
    let scanned = 0;
    let end = '+';
    while (scanned < maxScanned) {
      const count = Math.min(1_000, maxScanned - scanned);
      const chunk = await this.redis.xrevrange(key, end, '-', 'COUNT', count);
      scanned += chunk.length;
      for (const [id, flat] of chunk) {
        const { type = 'unknown', ts = '0', ...fields } = foldHash(flat);
        if (!types.has(type) || fields.machine !== machineId) continue;
        events.push({ id, pool, type, ts: Number(ts), fields });
        if (events.length >= limit) return { events: events.reverse(), scanned, complete: true };
      }
      if (chunk.length < count) return { events: events.reverse(), scanned, complete: true };
      end = `(${chunk[chunk.length - 1]![0]}`;
    }
    return { events: events.reverse(), scanned, complete: false };
  }

  async machines(pool: string): Promise<RegistryEntry[]> {
    const [online, offline] = await Promise.all([
      this.redis.zrange(this.keys.machines(pool), 0, -1),
      this.redis.zrange(this.keys.offlineMachines(pool), 0, -1),
    ]);
    const pipeline = this.redis.pipeline();
    for (const id of [...online, ...offline]) pipeline.hgetall(this.keys.machine(pool, id));
    const replies = (await pipeline.exec()) ?? [];
    return replies.map(([, hash]) => hash as RegistryEntry).filter((h) => h && h.id);
  }

  async workers(pool: string): Promise<RegistryEntry[]> {
    const [online, offline] = await Promise.all([
      this.redis.zrange(this.keys.workers(pool), 0, -1),
      this.redis.zrange(this.keys.offlineWorkers(pool), 0, -1),
    ]);
    const pipeline = this.redis.pipeline();
    for (const id of [...online, ...offline]) pipeline.hgetall(this.keys.worker(pool, id));
    const replies = (await pipeline.exec()) ?? [];
    return replies.map(([, hash]) => hash as RegistryEntry).filter((h) => h && h.id);
  }

  // ---------------------------------------------------------------- internals

  /** The arguments of a submit of a parsed job (its id is made here). */
  private prepareSubmit(job: SubmitJob): { pool: string; id: string; args: Array<string | number> } {
    if (!this.services.has(job.service)) {
      throw new UnknownServiceError(
        `unknown service '${job.service}'; known services: ${[...this.services].sort().join(', ')}`,
      );
    }
    const payload = jsonOf(job.payload, 'job', 'payload');
    const size = Buffer.byteLength(payload);
    if (size > this.config.maxPayloadBytes) {
      throw new PayloadTooLargeError(`payload is ${size} bytes, over the ${this.config.maxPayloadBytes}-byte limit`);
    }
    const pool = job.requirements.pool ?? this.config.defaultPool;
    const cls = requirementClass(job);
    const id = `${pool}.${Date.now().toString(36)}${randomIdPart()}`;
    const { idempotency_key: idempotencyKey, ...request } = job;
    const fingerprint = idempotencyKey ? createHash('sha1').update(canonicalJson(request)).digest('hex') : '';
    const fields: Array<string | number> = [
      'tenant', job.tenant,
      'service', job.service,
    ];
    // the defaults are not stored: a job hash's every field costs memory and Redis's reads of it time
    if (job.max_attempts !== DEFAULT_MAX_ATTEMPTS) fields.push('max_attempts', job.max_attempts);
    if (job.max_infra_attempts !== DEFAULT_MAX_INFRA_ATTEMPTS) fields.push('max_infra_attempts', job.max_infra_attempts);
    if (job.backoff) fields.push('backoff', JSON.stringify(job.backoff));
    if (job.deadlines?.execution_timeout_ms) fields.push('exec_timeout_ms', job.deadlines.execution_timeout_ms);
    if (job.webhook) fields.push('webhook', JSON.stringify(job.webhook));
    if (job.workflow_id) fields.push('workflow_id', job.workflow_id);
    if (job.step !== undefined) fields.push('step', job.step);
    return {
      pool,
      id,
      args: [
        id,
        cls.id,
        cls.definition,
        job.priority,
        idempotencyKey ? `${job.tenant}:${idempotencyKey}` : '',
        fingerprint,
        this.config.idempotencyTtlMs,
        job.delay_ms ?? 0,
        job.deadlines?.queue_ttl_ms ?? '',
        job.deadlines?.start_timeout_ms ?? '',
        payload,
        this.config.maxQueuedClasses,
        fields.length,
        ...fields,
      ],
    };
  }

  private prelude(): Array<string | number> {
    const c = this.config;
    return [this.clock ? this.clock() : '', c.eventsMaxLen, c.leaseMs, c.retentionMs, c.failedRetentionMs, c.avoidMs];
  }

  /** Calls library function `name` on `pool`'s shard, on `connection` (default: the broker's own). */
  private async fcall(name: string, pool: string, args: Array<string | number>, connection: RedisClient = this.redis): Promise<unknown> {
    try {
      return await connection.call('FCALL', name, 1, this.keys.anchor(pool), ...this.prelude(), ...args);
    } catch (error) {
      throw fromRedisError(error);
    }
  }

  /** Calls read-only library function `name` on `pool`'s shard (FCALL_RO: a replica may serve it); no prelude. */
  private async fcallReadOnly(name: string, pool: string, args: Array<string | number>): Promise<unknown> {
    try {
      return await this.redis.call('FCALL_RO', name, 1, this.keys.anchor(pool), ...args);
    } catch (error) {
      throw fromRedisError(error);
    }
  }

  private poolOf(id: string): string {
    parseWith(JobId, id, 'job id');
    return poolOfJobId(id);
  }

  private lease(lease: Lease): Lease {
    // a lease this process's claims handed out is well-formed by construction (and frozen)
    return issuedLeases.has(lease) ? lease : parseWith(LeaseSchema, lease, 'lease');
  }

  private async rememberPool(pool: string): Promise<void> {
    if (this.knownPools.has(pool)) return;
    await this.redis.sadd(this.keys.pools(), pool);
    this.knownPools.add(pool);
  }
}

interface ListPosition {
  score: number;
  member: string;
}

/** Index order: by submission time, then by entry (byte order, as Redis sorts equal scores). */
function comparePositions(a: ListPosition, b: ListPosition): number {
  return a.score - b.score || (a.member < b.member ? -1 : a.member > b.member ? 1 : 0);
}

function encodeListCursor(position: ListPosition): string {
  return Buffer.from(`${position.score}:${position.member}`).toString('base64url');
}

function decodeListCursor(cursor: string): ListPosition {
  const match = /^(\d{1,16}):([A-Za-z0-9_.|-]{1,200})$/.exec(Buffer.from(cursor, 'base64url').toString());
  if (!match) throw new ValidationError('job list filter', [{ path: 'cursor', message: 'not a cursor this API handed out' }]);
  return { score: Number(match[1]), member: match[2]! };
}

function checkedPool(pool: string): string {
  return parseWith(PoolName, pool, 'pool');
}

/** JSON text of a value the caller handed in; a value JSON cannot hold (a BigInt, a cycle) is a ValidationError. */
function jsonOf(value: unknown, what: string, path: string): string {
  try {
    return JSON.stringify(value);
  } catch (error) {
    throw new ValidationError(what, [{ path, message: `not JSON: ${(error as Error).message}` }]);
  }
}

function machineLogEntry(id: string, flat: string[]): MachineLogEntry {
  const f = foldHash(flat);
  return { id, process: f.process ?? '', stream: f.stream === 'stderr' ? 'stderr' : 'stdout', line: f.line ?? '', ts: Number(f.ts ?? 0) };
}

function foldHash(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}

/** 48 random bits as 10 base-36 digits; random bytes are drawn 6 KiB at a time (one syscall per 1,024 ids). */
const randomPool = Buffer.alloc(6 * 1024);
let randomOffset = randomPool.length;
function randomIdPart(): string {
  if (randomOffset === randomPool.length) {
    randomFillSync(randomPool);
    randomOffset = 0;
  }
  const value = randomPool.readUIntBE(randomOffset, 6);
  randomOffset += 6;
  return value.toString(36).padStart(10, '0');
}

const issuedLeases = new WeakSet<Lease>();

// Classes are few and immutable, and every claim hands one out: parse each once.
const parsedRequirements = new Map<string, JobRequirements>();

function requirementsOf(definition: string, pool: string): JobRequirements {
  const key = `${pool}\n${definition}`;
  let requirements = parsedRequirements.get(key);
  if (!requirements) {
    const { service: _s, tenant: _t, workflow_id: _w, ...stored } = JSON.parse(definition) as Record<string, unknown>;
    requirements = deepFreeze(parseWith(JobRequirements, { ...stored, pool }, 'stored requirement class'));
    if (parsedRequirements.size >= 10_000) parsedRequirements.clear();
    parsedRequirements.set(key, requirements);
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

function parseClaim(pool: string, workerId: string, reply: unknown[]): ClaimResult {
  if (reply[0] !== 'job') {
    const retryAt = reply[1] ? Number(reply[1]) : undefined;
    return { job: null, workerState: String(reply[2] ?? ''), ...(retryAt ? { retryAt } : {}) };
  }
  const [, id, token, attempt, service, tenant, payload, definition, priority, workflowId, step, timeout, submittedAt] =
    reply as [string, string, string, number, string, string, string, string, number, string, string, string, string];
  const lease: Lease = Object.freeze({ pool, jobId: id, token, workerId });
  issuedLeases.add(lease);
  return {
    job: {
      lease,
      id,
      attempt: Number(attempt),
      service,
      tenant,
      payload: payload === '' ? {} : (JSON.parse(payload) as unknown),
      requirements: requirementsOf(definition, pool),
      priority: Number(priority),
      ...(workflowId ? { workflowId } : {}),
      ...(step ? { step: Number(step) } : {}),
      ...(timeout ? { executionTimeoutMs: Number(timeout) } : {}),
      submittedAt: Number(submittedAt),
    },
  };
}

function parseSignal(text: string): WorkerSignal | null {
  const colon = text.indexOf(':');
  const kind = text.slice(0, colon);
  const value = text.slice(colon + 1);
  if (kind === 'wake') return { type: 'wake', requirementClass: value };
  if (kind === 'cancel' || kind === 'expired' || kind === 'timeout') return { type: kind, jobId: value };
  return null;
}

/** emp_get_job's reply: the job hash (flat), class definition, routable, position, payload, lease_until. */
type JobReply = [string[], string, string, number, string, string];

function parseJobReply(id: string, pool: string, reply: JobReply): Job {
  const [flat, definition, routable, position, payload, leaseUntil] = reply;
  const record = parseWith(JobRecord, foldHash(flat), `job record ${id} in Redis`);
  return toJob(id, pool, record, {
    definition,
    routable: routable === '1',
    position,
    payload: payload === '' ? undefined : (JSON.parse(payload) as unknown),
    leaseUntil: leaseUntil === '' ? undefined : Number(leaseUntil),
  });
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

function stripUndefined<T extends Record<string, unknown>>(value: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as {
    [K in keyof T]: Exclude<T[K], undefined>;
  };
}

