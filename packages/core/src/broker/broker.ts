import type { z } from 'zod';
import type { PoolReport, PoolShards, ShardReport, SubmitResult } from '../api-protocol';
import { ApiKeyStore } from '../api-keys';
import type { WorkerModelsInput, WorkerRegistration } from '../capabilities';
import { type BrokerConfig, brokerConfig } from '../config';
import type { EmpError } from '../errors';
import type { StreamEvent, StreamEventType } from '../events';
import type { Job, JobErrorInfo, JobProgress, JobState, SubmitJob, SubmitJobInput } from '../job';
import type { KeyLayout } from '../keys';
import { ensureFunctionLibrary } from '../library';
import type { PlannerState } from '../planner';
import type { SubmitWorkflowInput, Workflow } from '../workflow';
import type { MachineState } from '../registry';
import * as attempts from './attempts';
import * as demand from './demand';
import { BlockingConnection, type ReadConnection } from './connection';
import { BrokerContext, checkedPool, checkedShard } from './context';
import * as fleet from './fleet';
import { checkReplicasForDurableSubmit } from './durable';
import * as jobs from './jobs';
import * as planner from './planner';
import * as pools from './pools';
import * as shards from './shards';
import * as stats from './stats';
import * as workflows from './workflows';
import * as streams from './streams';
import { EventTail } from './tail';
import type { TracedJob } from './replies';
import type {
  BrokerOptions,
  ClaimResult,
  DropVerdict,
  JobListFilter,
  JobListPage,
  Lease,
  MachineCommandInput,
  ProcessAction,
  MachineCommand,
  MachineCommandOutcome,
  MachineLogEntry,
  PausedService,
  QueueStats,
  RedisClient,
  RegistryEntry,
  ServiceJobCounts,
  WorkerSignal,
} from './types';

/** Each broker's context, for core's own modules (shared-secret.ts); not exported from the package. */
const contexts = new WeakMap<Broker, BrokerContext>();

export function contextOf(broker: Broker): BrokerContext {
  return contexts.get(broker)!;
}

/**
 * The typed face of the `emp` Redis Function library: every state change of a
 * job is one atomic function call (the table in functions.ts names them), and
 * everything an app reads from Redis it reads through a method here. This
 * class is the one door; the work is done by concept in jobs.ts, attempts.ts,
 * fleet.ts, stats.ts and streams.ts. The Redis connection stays inside core.
 */
export class Broker {
  readonly config: BrokerConfig;
  readonly keys: KeyLayout;
  /** the virtual clock, when one replaces Redis TIME */
  readonly clock: (() => number) | undefined;
  readonly #ctx: BrokerContext;
  readonly #completions;
  readonly #progress;
  readonly #reconnectListeners = new Set<() => void>();
  #listeningForReconnects = false;

  private constructor(redis: RedisClient, config: BrokerConfig, clock: (() => number) | undefined) {
    this.#ctx = new BrokerContext(redis, config, clock);
    contexts.set(this, this.#ctx);
    this.config = config;
    this.keys = this.#ctx.keys;
    this.clock = clock;
    this.#completions = attempts.completionBatcher(this.#ctx);
    this.#progress = attempts.progressBatcher(this.#ctx);
  }

  static async connect(options: BrokerOptions): Promise<Broker> {
    const broker = new Broker(options.redis, brokerConfig(options.config), options.clock);
    if (!options.skipLibraryLoad) await ensureFunctionLibrary(options.redis, broker.keys);
    // every submit would wait out its timeout and fail: say so now
    if (broker.config.durableSubmit === 'replica') await checkReplicasForDurableSubmit(options.redis);
    return broker;
  }

  // ---------------------------------------------------------------- connection

  /** A connection of its own for blocking reads (the `connection` option of the read methods); close it when done. */
  blockingConnection(options: { onError?: (error: unknown) => void } = {}): BlockingConnection {
    return new BlockingConnection(this.#ctx.redis.duplicate(), options.onError);
  }

  /** Whether Redis answers (PING). */
  async ping(): Promise<void> {
    await this.#ctx.redis.ping();
  }

  /** Now by the Redis server's clock (ms): the clock every job timestamp uses. */
  serverTime(): Promise<number> {
    return stats.serverTime(this.#ctx);
  }

  /**
   * Calls `listener` whenever the broker's connection is ready again after a
   * reconnect (leases may have run out meanwhile); returns its removal. Every
   * listener shares one 'ready' listener on the connection (a bench runs
   * hundreds of workers on one broker).
   */
  onReconnect(listener: () => void): () => void {
    if (!this.#listeningForReconnects) {
      this.#listeningForReconnects = true;
      this.#ctx.redis.on('ready', () => {
        for (const each of this.#reconnectListeners) each();
      });
    }
    this.#reconnectListeners.add(listener);
    return () => this.#reconnectListeners.delete(listener);
  }

  /**
   * The API key store on the broker's connection (revocations are followed on
   * a duplicate of it). `cacheMs`: how long a verified key is trusted without asking Redis.
   */
  apiKeys(options: { cacheMs?: number } = {}): ApiKeyStore {
    return new ApiKeyStore(this.#ctx.redis, this.config.namespace, options.cacheMs);
  }

  /**
   * What the API's rate limiter (@fastify/rate-limit, which speaks ioredis
   * itself) counts on: the broker's connection, and the prefix of its counters
   * in the key layout. The one place an ioredis handle leaves core, named for
   * the one library that needs it.
   */
  rateLimitStore(): { redis: RedisClient; prefix: string } {
    return { redis: this.#ctx.redis, prefix: this.keys.rateLimitPrefix() };
  }

  // ---------------------------------------------------------------- clients

  submit(input: SubmitJobInput, options?: jobs.SubmitOptions): Promise<SubmitResult> {
    return jobs.submit(this.#ctx, input, options);
  }

  /**
   * Submits a job already parsed with SubmitJobInput (or a schema extending it,
   * as the API's request body), without parsing it again, for a caller that
   * does not answer with the job as submitted (the API's waiting submit).
   */
  submitParsed(job: SubmitJob, options?: jobs.SubmitOptions): Promise<SubmitResult> {
    return jobs.submitParsed(this.#ctx, job, options);
  }

  /**
   * Submits a job and reads it back in the same round trip (one pipeline: the
   * submit, then the read of the id the submit will use), for a caller that
   * answers with the job. `job` is a submission already parsed with
   * SubmitJobInput (or a schema extending it, as the API's request body), so it
   * is not parsed again. An idempotent repeat reads the original job after.
   */
  submitAndRead(job: SubmitJob, options?: jobs.SubmitOptions): Promise<{ submitted: SubmitResult; job: Job | null }> {
    return jobs.submitAndRead(this.#ctx, job, options);
  }

  /** Submits many jobs with one round trip per pool; each result is a SubmitResult or the error for that job. `options` apply to every job (a batch request's traceparent). */
  submitMany(inputs: SubmitJobInput[], options?: jobs.SubmitOptions): Promise<Array<SubmitResult | EmpError>> {
    return jobs.submitMany(this.#ctx, inputs, options);
  }

  getJob(id: string): Promise<Job | null> {
    return jobs.getJob(this.#ctx, id);
  }

  /**
   * `getJob` of several jobs in one round trip per pool: per id, the job (null: none) or the
   * error `getJob` would have thrown for it; a failed connection rejects the whole read.
   */
  getJobsSettled(ids: readonly string[]): Promise<Array<PromiseSettledResult<Job | null>>> {
    return jobs.getJobsSettled(this.#ctx, ids);
  }

  /** `getJobsSettled`, each job with the traceparent its submit stored beside it (which the Job clients see leaves out). */
  getTracedJobsSettled(ids: readonly string[]): Promise<Array<PromiseSettledResult<TracedJob | null>>> {
    return jobs.getTracedJobsSettled(this.#ctx, ids);
  }

  /** Cancels a job; idempotent: a finished job is returned unchanged. */
  cancel(id: string, reason = ''): Promise<{ state: JobState; changed: boolean }> {
    return jobs.cancel(this.#ctx, id, reason);
  }

  /**
   * Submits a workflow (docs/workflows.md): named steps with needs, references to
   * earlier results and fan-out, all in one pool shard; the steps that need
   * nothing are queued in the same call.
   */
  submitWorkflow(input: SubmitWorkflowInput): Promise<workflows.WorkflowSubmitResult> {
    return workflows.submitWorkflow(this.#ctx, input);
  }

  /** A workflow with every step's state, timings and output; null when there is none (or its retention has passed). */
  getWorkflow(id: string): Promise<Workflow | null> {
    return workflows.getWorkflow(this.#ctx, id);
  }

  /** Cancels a running workflow and its step jobs still waiting or running; a workflow that has ended is returned unchanged. */
  cancelWorkflow(id: string, reason = ''): Promise<{ state: Workflow['state']; changed: boolean }> {
    return workflows.cancelWorkflow(this.#ctx, id, reason);
  }

  /** The newest workflows (of one tenant), across pools. */
  listWorkflows(options: { tenant?: string; limit?: number } = {}): Promise<workflows.WorkflowListItem[]> {
    return workflows.listWorkflows(this.#ctx, options);
  }

  /** A workflow's tenant; NotFoundError when there is none. */
  workflowTenant(id: string): Promise<string> {
    return workflows.workflowTenant(this.#ctx, id);
  }

  /** Puts a failed, canceled or expired job back in the queue under the same id. */
  retry(id: string): Promise<JobState> {
    return jobs.retry(this.#ctx, id);
  }

  /**
   * A page of jobs, newest first, across pools (or one), by tenant, state,
   * service and submission time. Pages are cut by a cursor, never by an offset,
   * so jobs submitted meanwhile do not shift them; a page may hold fewer than
   * `limit` jobs when the filter is sparse, and still carry a cursor.
   */
  listJobs(filter: JobListFilter = {}): Promise<JobListPage> {
    return jobs.listJobs(this.#ctx, filter);
  }

  /**
   * A job's events, oldest first, after `after` (a stream id) or from its
   * submission: the pool's stream read from the job's submission time on.
   * `cursor` is the last stream entry looked at, to continue from.
   */
  jobEvents(id: string, options: { after?: string; limit?: number } = {}): Promise<{ events: StreamEvent[]; cursor: string }> {
    return jobs.jobEvents(this.#ctx, id, options);
  }

  /** The fencing token and worker of a job's current attempt, for delegated completion; null when nobody holds it. */
  currentAttempt(id: string): Promise<Lease | null> {
    return jobs.currentAttempt(this.#ctx, id);
  }

  // ---------------------------------------------------------------- workers

  /**
   * Registers a worker or updates its capabilities. `freshStart` says this is a
   * new process under that id: jobs an earlier process held go back at once.
   */
  registerWorker(input: WorkerRegistration, options: { freshStart?: boolean } = {}): Promise<{ profile: string; becameRoutable: number; shards: string[] }> {
    return fleet.registerWorker(this.#ctx, input, options);
  }

  /** Replaces the models the worker holds (loaded, on disk, downloading), which claims prefer; see fleet.reportModels. */
  reportModels(pool: string, workerId: string, models: WorkerModelsInput): Promise<number> {
    return fleet.reportModels(this.#ctx, pool, workerId, models);
  }

  /** Sets the worker's state in every served shard of its pool, or in `shards` only (e.g. 'borrowing': it leaves their idle sets). */
  setWorkerState(pool: string, workerId: string, state: fleet.WorkerStateInput, options: { shards?: readonly string[] } = {}): Promise<string> {
    return fleet.setWorkerState(this.#ctx, pool, workerId, state, options.shards);
  }

  /**
   * Records a machine's state (one the machine.<state> events declare) and its
   * status snapshot (`fields`: encodeMachineStatus's output); announces a change of state.
   */
  registerMachine(pool: string, machineId: string, state: MachineState, fields: Record<string, string> = {}): Promise<boolean> {
    return fleet.registerMachine(this.#ctx, pool, machineId, state, fields);
  }

  /**
   * Takes the best job this worker can run in one shard (a pool's name is its
   * shard 0), or records it idle there so that the next capable submit wakes it.
   */
  claim(pool: string, workerId: string, wokenFor = ''): Promise<ClaimResult> {
    return attempts.claim(this.#ctx, pool, workerId, wokenFor);
  }

  /**
   * Up to `count` claims (1..64) in one round trip, for a worker with that many
   * free slots: each as `claim` would make it, in order, the jobs first; the
   * result that found no job (when fewer were taken) comes last.
   */
  claimMany(pool: string, workerId: string, count: number, wokenFor = ''): Promise<ClaimResult[]> {
    return attempts.claimMany(this.#ctx, pool, workerId, count, wokenFor);
  }

  /**
   * A claim for an idle worker to send on its signal connection while it waits
   * there (`waitForSignals`): Redis runs it right after the wait ends, so a
   * wake-up and the claim it calls for cost no round trip in between. It takes
   * a job only when the wait ended in a wake-up for this worker; otherwise it
   * changes nothing and resolves `null` (queue another behind the next wait).
   */
  claimWhenWoken(connection: ReadConnection, pool: string, workerId: string): Promise<ClaimResult | null> {
    return attempts.claimWhenWoken(this.#ctx, connection, pool, workerId);
  }

  /** The attempt has what it needs (model loaded) and begins executing. */
  start(lease: Lease): Promise<void> {
    return attempts.start(this.#ctx, lease);
  }

  /**
   * Records progress and renews the lease. Reports made in the same turn of the
   * event loop (by this process's jobs of a pool) go to Redis in one call.
   */
  progress(lease: Lease, progress: z.input<typeof JobProgress>): Promise<void> {
    return attempts.progress(this.#ctx, this.#progress, lease, progress);
  }

  /**
   * Records the attempt's result. With `claimNext`, the same call claims the
   * worker's next job (one round trip per job for a busy worker; completions
   * of one worker made in the same turn of the event loop share one).
   */
  complete(lease: Lease, result: unknown, options: { claimNext?: boolean } = {}): Promise<ClaimResult | null> {
    return attempts.complete(this.#ctx, this.#completions, lease, result, options);
  }

  /** Records a classified failure of the attempt; returns what became of the job. */
  fail(
    lease: Lease,
    error: z.input<typeof JobErrorInfo>,
    options: { claimNext?: boolean } = {},
  ): Promise<{ outcome: 'queued' | 'retrying' | 'failed'; next: ClaimResult | null }> {
    return attempts.fail(this.#ctx, lease, error, options);
  }

  /** Renews the worker's leases; returns the jobs it must stop working on. */
  heartbeat(pool: string, workerId: string, leases: Array<Pick<Lease, 'jobId' | 'token'>>): Promise<Array<{ jobId: string; verdict: DropVerdict }>> {
    return attempts.heartbeat(this.#ctx, pool, workerId, leases);
  }

  /**
   * Blocks on the worker's signal list (on a connection of its own: it blocks)
   * until a wake-up or a notice arrives or `timeoutMs` passes (0: until one
   * arrives). This is how an idle worker waits without polling.
   */
  waitForSignals(blocking: ReadConnection, pool: string, workerId: string, timeoutMs: number): Promise<WorkerSignal[]> {
    return attempts.waitForSignals(this.#ctx, blocking, pool, workerId, timeoutMs);
  }

  /**
   * Cross-pool fallback: the worker, registered in `pool` as a borrower (see
   * registerWorker's `homePool`), takes one job of `pool` that `policy` allows
   * (waited long enough, short enough), or none and when to look again. It
   * never records the worker idle in `pool`: only its own pool wakes it.
   */
  claimFallback(pool: string, workerId: string, policy: attempts.FallbackPolicy): Promise<ClaimResult> {
    return attempts.claimFallback(this.#ctx, pool, workerId, policy);
  }

  /**
   * Takes what is queued on each worker's signal list without waiting (up to
   * 100 a list, as waitForSignals): one call when none holds anything, one more
   * per list that does. For a driver that runs many workers' loops itself (the
   * fleet simulator) where each would block in waitForSignals.
   */
  takeSignals(pool: string, workerIds: readonly string[]): Promise<Map<string, WorkerSignal[]>> {
    return attempts.takeSignals(this.#ctx, pool, workerIds);
  }

  // ---------------------------------------------------------------- operations

  /** Runs the pool's due work (timers, offline detection); returns ms until more is due (undefined: nothing scheduled). */
  tick(pool: string): Promise<{ handled: number; nextDueInMs?: number }> {
    return stats.tick(this.#ctx, pool);
  }

  /** The configured pools with their cutoffs, queues, workers and learned duration classes (docs/pools.md). */
  poolReport(): Promise<PoolReport> {
    return pools.poolReport(this.#ctx);
  }

  queueStats(pool: string): Promise<QueueStats> {
    return stats.queueStats(this.#ctx, pool);
  }

  /**
   * Where each pool lives: each pool's shard counts and served shards; each shard (a pool's
   * `{<pool>}`, `{<pool>_<k>}`, webhook delivery's `{_webhooks}`) with its slot, the master serving
   * it, its queued and running jobs and workers; and each Redis server's slots, shards, memory
   * and ops/s (docs/scale-out.md, "Where each pool lives").
   */
  shardReport(): Promise<ShardReport> {
    return shards.shardReport(this.#ctx);
  }

  /**
   * The pool's live jobs per service and state, exact, from the indexes that
   * hold them (class queues, workers' jobs, the counts of delayed and retrying
   * jobs): cheap enough for every metrics scrape. Finished jobs are not counted
   * here; they expire after their retention (count their events instead).
   */
  jobCounts(pool: string): Promise<ServiceJobCounts[]> {
    return stats.jobCounts(this.#ctx, pool);
  }

  /**
   * For each requirement class, how many of its jobs the online workers able to
   * run it could run at once (the sum of their concurrency; draining workers and
   * paused services count nothing): what a queue-time estimate divides by.
   */
  classCapacity(pool: string, classes: string[]): Promise<number[]> {
    return stats.classCapacity(this.#ctx, pool, classes);
  }

  /** Every pool that has seen a job or a worker. */
  pools(): Promise<string[]> {
    return this.#ctx.pools();
  }

  /**
   * Every shard that has seen a job or a worker (a pool's name is its shard 0;
   * pool-shards.ts): what reads each shard's stream or runs each shard's due work iterates.
   */
  shards(): Promise<string[]> {
    return this.#ctx.shards();
  }

  /** A pool's shard counts (one when none is set), as every process reads them within SHARD_COUNT_TTL_MS. */
  poolShards(pool: string, options: { fresh?: boolean } = {}): Promise<PoolShards> {
    return this.#ctx.poolShards(checkedPool(pool), options.fresh);
  }

  /**
   * The shards of `pool` its workers claim in: those submits go to, and a
   * reshard's left-over ones that still hold jobs. `fresh`: read the counts now
   * rather than trust this process's reading of the last SHARD_COUNT_TTL_MS.
   */
  servedShards(pool: string, options: { fresh?: boolean } = {}): Promise<string[]> {
    return this.#ctx.poolShardNames(checkedPool(pool), 'served', options.fresh);
  }

  /**
   * Places the pool's new jobs on `count` shards (docs/scale-out.md, "Shards
   * within a pool"). Growing takes effect at once; shards taken out of placement
   * stay served until their jobs are done (settleShards). `onto` (a grow on a
   * cluster): the added shards' empty slots are moved to those masters first.
   */
  setShardCount(pool: string, count: number, options: shards.SetShardCountOptions = {}): Promise<PoolShards> {
    return shards.setShardCount(this.#ctx, pool, count, options);
  }

  /** Stops serving the shards a reshard took out of placement once they hold no live job; serves again one that holds some. */
  settleShards(pool: string): Promise<PoolShards> {
    return shards.settleShards(this.#ctx, pool);
  }

  /**
   * Claims in the pool's served shards, `first` first and then the others in
   * order, until one has a job: up to `count` jobs of that shard (claimMany).
   * Each shard found empty records the worker idle there (`idleIn`), so that a
   * submit there wakes it. `skip`: shards known empty since the last look.
   */
  claimInShards(pool: string, workerId: string, options: attempts.ClaimInShardsOptions = {}): Promise<attempts.ClaimInShards> {
    return attempts.claimInShards(this.#ctx, pool, workerId, options);
  }

  /** Stops (or resumes) claims of a service's jobs in a pool; returns whether that changed anything. */
  setServicePaused(pool: string, service: string, paused: boolean, options: { by?: string; reason?: string } = {}): Promise<boolean> {
    return stats.setServicePaused(this.#ctx, pool, service, paused, options);
  }

  pausedServices(pool: string): Promise<PausedService[]> {
    return stats.pausedServices(this.#ctx, pool);
  }

  /** Memory in use and the maxmemory limit (0: none) of each Redis server holding the data: what the API's metrics export. */
  redisMemory(): Promise<stats.RedisMemory[]> {
    return stats.redisMemory(this.#ctx);
  }

  // ---------------------------------------------------------------- events

  /**
   * Reads the pool's events after `cursor` (a stream id; '0' = from the oldest
   * kept, '$' = only new ones), waiting up to `blockMs` when there are none
   * (on `connection`: give a blocking read one of its own).
   */
  readEvents(pool: string, cursor = '0', options: { count?: number; blockMs?: number; connection?: ReadConnection } = {}): Promise<StreamEvent[]> {
    return streams.readEvents(this.#ctx, pool, cursor, options);
  }

  /** The id of the pool's newest event ('0-0' when none): a cursor for "only what comes next". */
  latestEventId(pool: string): Promise<string> {
    return streams.latestEventId(this.#ctx, pool);
  }

  /** Length, entries ever added, oldest kept and newest id of the pool's event stream (XINFO STREAM); null when there is none. */
  eventStreamInfo(pool: string): Promise<streams.EventStreamInfo | null> {
    return streams.eventStreamInfo(this.#ctx, pool);
  }

  /**
   * Follows the pool's events after `cursor` on a blocking connection of its
   * own: each `read()` waits up to `blockMs` and answers the next events (or
   * none); `close()` ends a read in progress. For live feeds and `emp tail`.
   */
  openEventTail(pool: string, cursor: string, options: { blockMs?: number; count?: number; onError?: (error: unknown) => void } = {}): EventTail {
    return new EventTail(this.#ctx, this.blockingConnection(options), pool, cursor, options);
  }

  /**
   * Makes sure consumer group `group` reads the pool's event stream (creating the
   * stream when there is none yet); a new group starts after `startAt` ('$': only
   * events from now on, '0': every event still kept). Returns whether it was created.
   */
  ensureEventGroup(pool: string, group: string, startAt: '$' | '0' = '$'): Promise<boolean> {
    return streams.ensureEventGroup(this.#ctx, checkedShard(pool), group, startAt);
  }

  /**
   * Reads new events of the pool for `consumer` of `group` (XREADGROUP '>'),
   * waiting up to `blockMs` when there are none; each stays pending for this
   * consumer until acknowledged with `ackEvents`. A group that is missing (the
   * stream was deleted) is made again from the oldest kept event.
   */
  readEventGroup(
    pool: string,
    group: string,
    consumer: string,
    options: { count?: number; blockMs?: number; connection?: ReadConnection } = {},
  ): Promise<StreamEvent[]> {
    return streams.readEventGroup(this.#ctx, pool, group, consumer, options);
  }

  /**
   * `readEventGroup` without waiting (none: an empty answer), telling also how
   * many entries the group lost to the stream's trimming (MAXLEN, `eventsMaxLen`)
   * before it could read them; each loss is told once.
   */
  readEventGroupWatched(
    pool: string,
    group: string,
    consumer: string,
    options: { count?: number; connection?: ReadConnection } = {},
  ): Promise<{ events: StreamEvent[]; loss?: streams.EventGroupLoss }> {
    return streams.readEventGroupWatched(this.#ctx, pool, group, consumer, options);
  }

  /**
   * Takes over events pending for longer than `minIdleMs` in `group` (their
   * consumer crashed or hangs) for `consumer` (XAUTOCLAIM), a page at a time
   * from `cursor`; entries trimmed from the stream meanwhile are dropped from
   * the group (their ids: `trimmed`). Returns them and the cursor of the next page ('0-0': done).
   */
  claimStaleEvents(
    pool: string,
    group: string,
    consumer: string,
    minIdleMs: number,
    options: { cursor?: string; count?: number } = {},
  ): Promise<{ events: StreamEvent[]; cursor: string; trimmed: string[] }> {
    return streams.claimStaleEvents(this.#ctx, pool, group, consumer, minIdleMs, options);
  }

  /** Acknowledges events of the pool's stream that `group` has handled (XACK). */
  ackEvents(pool: string, group: string, ids: string[]): Promise<number> {
    return streams.ackEvents(this.#ctx, pool, group, ids);
  }

  // ---------------------------------------------------------------- queue history

  /**
   * Records one sampling slot's queue samples, one entry `<slot>-0` per pool in
   * its queue-history stream, trimming entries older than `keepMs` before the
   * slot; false when another instance had already recorded the slot.
   */
  recordQueueSamples(slot: number, samples: streams.QueueHistoryWrite[], keepMs: number): Promise<boolean> {
    return streams.recordQueueSamples(this.#ctx, slot, samples, keepMs);
  }

  /** The queue samples of the pools recorded for slots from `fromSlot` (ms) on, oldest first per pool; entries that do not parse come back apart. */
  readQueueHistory(pools: string[], fromSlot: number, range?: streams.QueueHistoryWrite['range']): Promise<{ samples: streams.QueueHistoryWrite['sample'][]; unreadable: streams.UnreadableQueueSample[] }> {
    return streams.readQueueHistory(this.#ctx, pools, fromSlot, range);
  }

  // ---------------------------------------------------------------- demand

  /**
   * Jobs submitted per model in the 5-minute buckets that start in [from, to)
   * (ms, by the clock the functions use), ascending, only buckets with a count:
   * `counts[<model>]`, `counts['service:<service>']` (jobs whose class names no
   * model) and `counts['*']` (every job). Kept 8 days; retries are not counted.
   */
  modelDemand(pool: string, range: { from: number; to: number }): Promise<demand.DemandBucket[]> {
    return demand.modelDemand(this.#ctx, pool, range);
  }

  // ---------------------------------------------------------------- machines

  /**
   * Records a command for a machine (drain, restart or shut it down, restart one
   * service on it, or prefetch / evict a model in its model cache) and appends
   * it to the machine's command stream for its agent; returns the command id.
   * `{ action: 'prefetch' | 'evict', model }` names the model; the older form
   * `(pool, machine, action, { service })` still serves the other actions.
   */
  machineCommand(pool: string, machineId: string, command: MachineCommandInput): Promise<string>;
  machineCommand(pool: string, machineId: string, action: ProcessAction, options?: { service?: string; by?: string; reason?: string }): Promise<string>;
  machineCommand(
    pool: string,
    machineId: string,
    command: MachineCommandInput | ProcessAction,
    options: { service?: string; by?: string; reason?: string } = {},
  ): Promise<string> {
    return fleet.machineCommand(this.#ctx, pool, machineId, typeof command === 'string' ? { action: command, ...options } : command);
  }

  /**
   * The machine agent reports what became of a command; the outcome is recorded
   * on the machine (with the command as the point a restarted agent resumes
   * after) and announced as a machine.command.done event. Returns whether the
   * resume point moved (false: a newer command was already reported).
   */
  machineCommandDone(pool: string, machineId: string, commandId: string, outcome: MachineCommandOutcome, message = ''): Promise<boolean> {
    return fleet.machineCommandDone(this.#ctx, pool, machineId, commandId, outcome, message);
  }

  /**
   * Commands for a machine after `cursor` (a stream id; '0' = all kept), waiting
   * up to `blockMs` on `connection` (it blocks: give it one of its own) when none are there.
   */
  readMachineCommands(
    pool: string,
    machineId: string,
    cursor: string,
    options: { blockMs?: number; count?: number; connection?: ReadConnection } = {},
  ): Promise<MachineCommand[]> {
    return fleet.readMachineCommands(this.#ctx, pool, machineId, cursor, options);
  }

  /**
   * Announces a transition of a process a machine agent supervises as a
   * machine.process event (`fields`: restarts, exit_code, signal, pid, ...).
   */
  machineProcessEvent(pool: string, machineId: string, process: string, state: string, fields: Record<string, string | number> = {}): Promise<string> {
    return fleet.machineProcessEvent(this.#ctx, pool, machineId, process, state, fields);
  }

  /**
   * Output lines of a machine's processes after `cursor` ('0' = the oldest kept,
   * '$' = only new ones), oldest first, optionally of one process; waits up to
   * `blockMs` on `connection` when there are none. `cursor` in the answer is the
   * last entry looked at (matching or not), to continue from.
   */
  readMachineLogs(
    pool: string,
    machineId: string,
    cursor: string,
    options: { process?: string; count?: number; blockMs?: number; connection?: ReadConnection } = {},
  ): Promise<{ entries: MachineLogEntry[]; cursor: string }> {
    return fleet.readMachineLogs(this.#ctx, pool, machineId, cursor, options);
  }

  /** The newest `limit` output lines of a machine's processes (of one process when given), oldest first. */
  tailMachineLogs(pool: string, machineId: string, options: { process?: string; limit?: number } = {}): Promise<MachineLogEntry[]> {
    return fleet.tailMachineLogs(this.#ctx, pool, machineId, options);
  }

  /** The id of the newest line of a machine's log stream ('0-0' when empty): a cursor for "only what comes next". */
  latestMachineLogId(pool: string, machineId: string): Promise<string> {
    return fleet.latestMachineLogId(this.#ctx, pool, machineId);
  }

  /**
   * Appends output lines of a machine's processes to its capped log stream
   * (MAXLEN ~ `maxLen`) in one round trip; says how many were written and the
   * first error of any that were not.
   */
  appendMachineLogs(pool: string, machineId: string, lines: readonly fleet.MachineLogLine[], options: { maxLen?: number } = {}): Promise<{ written: number; failed: number; error?: Error }> {
    return fleet.appendMachineLogs(this.#ctx, pool, machineId, lines, options.maxLen ?? 5_000);
  }

  /**
   * A machine's newest events of the given types (machine.process, ...), oldest
   * first: the pool's stream read backwards a chunk at a time until `limit`
   * match or `maxScanned` entries were looked at. `complete` is false when the
   * scan stopped at that bound with older entries left unread.
   */
  machineEvents(
    pool: string,
    machineId: string,
    options: { types: readonly StreamEventType[]; limit?: number; maxScanned?: number },
  ): Promise<{ events: StreamEvent[]; scanned: number; complete: boolean }> {
    return streams.machineEvents(this.#ctx, checkedPool(pool), machineId, options);
  }

  machines(pool: string): Promise<RegistryEntry[]> {
    return fleet.machines(this.#ctx, pool);
  }

  /** The planner's round for a pool: each decision as a planner.decision event, the round in the pool's planner hash. */
  recordPlannerRound(pool: string, round: planner.PlannerRound): Promise<number> {
    return planner.recordPlannerRound(this.#ctx, pool, round);
  }

  /** The planner's last round for a pool; null when no planner has run for it. */
  plannerState(pool: string): Promise<PlannerState | null> {
    return planner.plannerState(this.#ctx, pool);
  }

  /** One machine as the registry holds it; null when it is not registered in the pool. */
  machine(pool: string, machineId: string): Promise<RegistryEntry | null> {
    return fleet.machine(this.#ctx, pool, machineId);
  }

  isMachineRegistered(pool: string, machineId: string): Promise<boolean> {
    return fleet.isMachineRegistered(this.#ctx, pool, machineId);
  }

  /**
   * The pool's workers. A worker registered here only as a borrower of another
   * pool (cross-pool fallback: its `home_pool`) is listed with its own pool, so
   * it appears once in a listing of every pool; `borrowers: true` lists it here too.
   */
  workers(pool: string, options: { borrowers?: boolean } = {}): Promise<RegistryEntry[]> {
    return fleet.workers(this.#ctx, pool, options);
  }

  /** One worker as the registry holds it; null when it is not registered in the pool. */
  worker(pool: string, workerId: string): Promise<RegistryEntry | null> {
    return fleet.worker(this.#ctx, pool, workerId);
  }
}
