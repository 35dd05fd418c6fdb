import { type ChainableCommander, Command, type Pipeline } from 'ioredis';
import { fromRedisError } from '../errors';
import type { KeyLayout } from '../keys';
import type { MachineState } from '../registry';
import type {
  ClaimedWebhookMessage,
  TenantWebhookSecrets,
  WebhookEnqueueResult,
  WebhookOutcome,
  WebhookResendResult,
  WebhookSettleResult,
} from '../webhook-outbox';
import * as r from './replies';
import type { RedisClient } from './types';

/** One argument as a function receives it (ARGV is text; numbers are sent as their decimal form). */
export type Arg = string | number;

/**
 * How a function is called, which decides what its ARGV starts with:
 * - `reads`: FCALL_RO (a replica may serve it), no prelude;
 * - `writes`: FCALL with the broker's prelude (clock, events maxlen, lease,
 *   retention, failed retention, avoid ms);
 * - `clocked`: FCALL with the clock alone (the webhook functions, and
 *   emp_migrate, which runs before a broker and its settings exist).
 */
export type Calling = 'reads' | 'writes' | 'clocked';

/** The shard a function runs on: a pool's (KEYS[1] its anchor) or the webhook service's `{_webhooks}`. */
export type Shard = 'pool' | 'webhooks';

/**
 * One function of the `emp` library as TypeScript calls it: its Redis name
 * (written here and nowhere else in TypeScript), how it is called, the shard
 * it runs on, the type of its arguments after the prelude, and the decoder of its reply.
 */
export interface RedisFunction<Args extends readonly Arg[], Reply, S extends Shard = Shard> {
  readonly name: string;
  readonly calling: Calling;
  readonly shard: S;
  readonly decode: (reply: unknown, name: string) => Reply;
  /** never set: carries the argument tuple's type */
  readonly args?: Args;
}

/** The argument tuple of a function of the table. */
export type ArgsOf<F> = F extends RedisFunction<infer A, unknown> ? A : never;

function writes<Args extends readonly Arg[], Reply>(name: string, decode: (reply: unknown, name: string) => Reply): RedisFunction<Args, Reply, 'pool'> {
  return { name, calling: 'writes', shard: 'pool', decode };
}

function reads<Args extends readonly Arg[], Reply>(name: string, decode: (reply: unknown, name: string) => Reply): RedisFunction<Args, Reply, 'pool'> {
  return { name, calling: 'reads', shard: 'pool', decode };
}

function clocked<Args extends readonly Arg[], Reply>(name: string, decode: (reply: unknown, name: string) => Reply): RedisFunction<Args, Reply, 'pool'> {
  return { name, calling: 'clocked', shard: 'pool', decode };
}

function webhooks<Args extends readonly Arg[], Reply>(name: string, decode: (reply: unknown, name: string) => Reply): RedisFunction<Args, Reply, 'webhooks'> {
  return { name, calling: 'clocked', shard: 'webhooks', decode };
}

type Flat = Arg[];
type Bit = '0' | '1';

/**
 * Every function of the library that TypeScript calls, with its arguments
 * (after the prelude its `calling` gives it) and its reply. The Lua side of
 * each is `functions/<name without emp_>.lua`, which lists its ARGV in its header.
 */
export const FUNCTIONS = {
  // jobs
  submit: writes<[id: string, cls: string, definition: string, priority: number, idempotency: string, fingerprint: string,
    idempotencyTtlMs: number, delayMs: number, queueTtlMs: number | '', startTimeoutMs: number | '', payload: string,
    maxQueuedClasses: number, dclass: string, fieldCount: number, ...fields: Flat], r.SubmitReply>('emp_submit', r.submitReply),
  /** what its jobs share (each class's id, definition and duration class once), then each job's own arguments (jobs.ts, submitManyArgs) */
  submitMany: writes<[count: number, idempotencyTtlMs: number, maxQueuedClasses: number, classCount: number, ...classesThenJobs: Flat], r.SubmitManyReply>(
    'emp_submit_many',
    r.submitManyReply,
  ),
  getJob: reads<[id: string], r.JobReply | null>('emp_get_job', r.jobReply),
  cancel: writes<[id: string, reason: string], r.CancelReply>('emp_cancel', r.cancelReply),
  retry: writes<[id: string], string>('emp_retry', r.text),
  /** the workflow's id, tenant, priority and prepared definition (JSON, broker/workflows.ts) */
  workflowSubmit: writes<[id: string, tenant: string, priority: number, definition: string, idempotency: string, fingerprint: string, idempotencyTtlMs: number], r.WorkflowSubmitReply>(
    'emp_workflow_submit',
    r.workflowSubmitReply,
  ),
  workflowCancel: writes<[id: string, reason: string], r.CancelReply>('emp_workflow_cancel', r.cancelReply),
  listJobs: reads<[tenant: string, until: number | '', since: number | '', afterEntry: string, afterMember: string,
    states: string, services: string, limit: number, budget: number], r.ListJobsReply>('emp_list_jobs', r.listJobsReply),

  // attempts
  /** affinity: 'wait/overdue' in ms (see claim.lua) */
  claim: writes<[worker: string, wokenFor: string, affinity: string] | [worker: string, wokenFor: string, affinity: string, mode: 'if-woken'],
    r.ClaimReply>('emp_claim', r.claimReply),
  /** up to `count` claims in one call (1..64; see claim_many.lua): the jobs taken, then the claim that found none */
  claimMany: writes<[worker: string, wokenFor: string, affinity: string, count: number], r.ClaimManyReply>('emp_claim_many', r.claimManyReply),
  /** cross-pool fallback: worker, its home pool, least wait ms, most expected s ('' none), expected s assumed without an estimate ('' none) */
  claimFallback: writes<[worker: string, home: string, afterMs: number, maxExpectedS: number | '', unknownExpectedS: number | ''], r.ClaimReply>(
    'emp_claim_fallback',
    r.claimReply,
  ),
  start: writes<[id: string, token: string], void>('emp_start', r.ignore),
  /** id, token, progress (JSON) per report */
  progress: writes<Flat, r.ProgressReply>('emp_progress', r.progressReply),
  /** the worker to claim for ('' none), the affinity bound of that claim, then id, token, result per completion */
  complete: writes<[claimFor: string, affinity: string, ...completions: Flat], r.CompleteReply>('emp_complete', r.completeReply),
  fail: writes<[id: string, token: string, kind: string, error: string, claimFor: string, affinity: string], r.FailReply>('emp_fail', r.failReply),
  heartbeat: writes<[worker: string, ...leases: Flat], r.HeartbeatReply>('emp_heartbeat', r.heartbeatReply),

  // fleet
  registerWorker: writes<[worker: string, machine: string, profile: string, definition: string, freshStart: Bit, ...fields: Flat],
    r.RegisterWorkerReply>('emp_register_worker', r.registerWorkerReply),
  routableScan: writes<[profile: string, cursor: string], r.RoutableScanReply>('emp_routable_scan', r.routableScanReply),
  laneScan: writes<['classes', cursor: string] | ['jobs', cls: string, after: string] | ['done'], r.LaneScanReply>('emp_lane_scan', r.laneScanReply),
  /** the report as listed (JSON), then model, tier pairs */
  workerModels: writes<[worker: string, listed: string, ...tiers: Flat], number>('emp_worker_models', r.count),
  setWorkerState: writes<[worker: string, state: string], string>('emp_set_worker_state', r.text),
  registerMachine: writes<[machine: string, state: MachineState, ...fields: Flat], boolean>('emp_register_machine', r.flag),
  machineCommand: writes<[machine: string, action: string, service: string, by: string, reason: string, model: string], string>('emp_machine_command', r.text),
  machineCommandDone: writes<[machine: string, command: string, outcome: string, message: string], boolean>('emp_machine_command_done', r.flag),
  machineProcess: writes<[machine: string, process: string, state: string, ...fields: Flat], string>('emp_machine_process', r.text),
  /** then per decision: machine, action, model, reason, forecast */
  plannerDecision: writes<[forecast: string, capacity: string, waitTargetMs: number, count: number, ...decisions: Flat], number>('emp_planner_decision', r.count),

  // operations and stats
  tick: writes<[limit: number, offlineAfterMs: number, registryRetentionMs: number, clockGapMs: number, leaseGraceMs: number], r.TickReply>('emp_tick', r.tickReply),
  pauseService: writes<[service: string, paused: Bit, by: string, reason: string], boolean>('emp_pause_service', r.flag),
  queueStats: reads<[cursor: string], r.QueueStatsReply>('emp_queue_stats', r.queueStatsReply),
  jobCounts: reads<[page: string], r.JobCountsReply>('emp_job_counts', r.jobCountsReply),
  classCapacity: reads<string[], number[]>('emp_class_capacity', r.numbers),
  /** the answer to a 'classes' reply: class id, today's class id, today's definition, per class it named */
  migrate: clocked<Flat, r.MigrateReply>('emp_migrate', r.migrateReply),

  // the webhook service's shard ({_webhooks}); core/webhook-outbox.ts and webhook-endpoints.ts
  webhookEnqueue: webhooks<[id: string, chain: string, tenant: string, url: string, job: string, type: string, body: string,
    progressThrottleMs: number, retentionMs: number, endpoint: string, traceparent: string], WebhookEnqueueResult>('emp_webhook_enqueue', r.webhookEnqueueReply),
  webhookClaim: webhooks<[limit: number, leaseMs: number, perTarget: number, busyMs: number, retentionMs: number, progressThrottleMs: number],
    ClaimedWebhookMessage[]>('emp_webhook_claim', r.webhookClaimReply),
  webhookSettle: webhooks<[id: string, attempt: number, outcome: WebhookOutcome, retryMs: number, log: string, logLength: number,
    retentionMs: number, progressThrottleMs: number, failDisableMs: number], WebhookSettleResult>('emp_webhook_settle', r.webhookSettleReply),
  webhookResend: webhooks<[id: string], WebhookResendResult>('emp_webhook_resend', r.webhookResendReply),
  webhookLost: webhooks<[pool: string, group: string, count: number, after: string, before: string], string>('emp_webhook_lost', r.text),
  webhookReader: webhooks<[pool: string, consumer: string, leaseMs: number, release: Bit], boolean>('emp_webhook_reader', r.flag),
  webhookSecret: webhooks<[tenant: string, fresh: string, rotate: Bit, graceMs: number], TenantWebhookSecrets>('emp_webhook_secret', r.webhookSecretReply),
  webhookEndpoint: webhooks<
    | ['create', id: string, tenant: string, ...fields: Flat]
    | ['update', id: string, removed: number, ...fieldsThenPairs: Flat]
    | ['rotate', id: string, secret: string, graceMs: number]
    | ['enable' | 'delete', id: string]
    | ['disable', id: string, reason: string],
    r.WebhookEndpointReply
  >('emp_webhook_endpoint', r.webhookEndpointReply),
  webhookRecover: webhooks<[endpoint: string, since: number, limit: number], r.WebhookRecoverReply>('emp_webhook_recover', r.webhookRecoverReply),
} as const;

/**
 * The Command `pipeline.call(name, ...lists.flat())` makes, with its arguments as text, made
 * without Array#flat, which ioredis's Command runs over its arguments and which visits them
 * element by element, generically: 85 ns an argument, 1.5 us a job of a bulk submit (18
 * arguments each). A plain Command (a subclass made ioredis's calls on every command polymorphic).
 */
function commandOf(name: string, ...lists: Array<readonly Arg[]>): Command {
  const command = new Command(name, [], { replyEncoding: 'utf8' });
  const text: string[] = [];
  for (const list of lists) {
    for (let i = 0; i < list.length; i++) {
      const arg = list[i]!;
      // as ioredis writes an argument: a number as its decimal text (and, past a type's reach, nothing as '')
      text.push(typeof arg === 'string' ? arg : arg == null ? '' : String(arg));
    }
  }
  command.args = text;
  return command;
}

/**
 * Whether a connection sends the Commands commandOf makes as its `call` would make them:
 * not where ioredis adds to a command (a key prefix, the caller's stack for friendlier
 * errors) or sends it another way (auto-pipelining): there calls go through `call`.
 */
function sendsPlainCommands(connection: RedisClient): boolean {
  const { keyPrefix, showFriendlyErrorStack, enableAutoPipelining } = connection.options;
  return !keyPrefix && !showFriendlyErrorStack && !enableAutoPipelining;
}

/** A reply of a pipelined call as ioredis hands it back. */
export type PipelineEntry = [Error | null, unknown] | undefined;

/** The pipeline of one event-loop turn on a shard, and where each caller's calls sit in it: [from, to). */
interface TurnPipeline {
  pipeline: ChainableCommander;
  callers: Array<{ from: number; to: number; resolve: (entries: Array<[Error | null, unknown]>) => void; reject: (error: unknown) => void }>;
}

/** What the functions' ARGV starts with, by how they are called (see Calling). */
export interface Preludes {
  /** now by the virtual clock, or '' (Redis TIME): what every `writes` and `clocked` call starts with */
  clock(): Arg;
  /** what a `writes` call takes after the clock; absent where only clocked functions are called (a migration) */
  settings?(): Arg[];
}

/**
 * Calls the functions of FUNCTIONS: KEYS[1] is the anchor of the function's
 * shard, the prelude is its calling's, read-only ones go out as FCALL_RO.
 * Where FCALL_RO cannot run a function (a proxy that does not know the
 * command, or a library whose function lost its no-writes flag) the call is
 * made again as FCALL, and so are later ones: the one fallback, here.
 */
export class FunctionCalls {
  private readCommand: 'FCALL_RO' | 'FCALL' = 'FCALL_RO';
  /** per shard, the pipeline the calls of this event-loop turn share (`inTurn`) */
  private readonly turnPipelines = new Map<string, TurnPipeline>();

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: KeyLayout,
    private readonly preludes: Preludes,
  ) {}

  /** Calls `fn` on `pool`'s shard, on `connection` (default: the broker's own); Redis errors become typed errors. */
  call<A extends readonly Arg[], R>(fn: RedisFunction<A, R, 'pool'>, pool: string, args: A, connection: RedisClient = this.redis): Promise<R> {
    return this.callOn(connection, fn, this.keys.anchor(pool), args);
  }

  /** Calls `fn` on the webhook service's shard. */
  callWebhooks<A extends readonly Arg[], R>(fn: RedisFunction<A, R, 'webhooks'>, args: A): Promise<R> {
    return this.callOn(this.redis, fn, this.keys.webhookAnchor(), args);
  }

  private async callOn<A extends readonly Arg[], R>(connection: RedisClient, fn: RedisFunction<A, R>, anchor: string, args: A): Promise<R> {
    const command = this.command(fn);
    let reply: unknown;
    try {
      reply = await (sendsPlainCommands(connection)
        ? connection.sendCommand(commandOf(command, [fn.name, 1, anchor], this.prelude(fn), args))
        : connection.call(command, fn.name, 1, anchor, ...this.prelude(fn), ...args));
    } catch (error) {
      if (command === 'FCALL_RO' && this.fallBack(error)) return this.callOn(connection, fn, anchor, args);
      throw fromRedisError(error);
    }
    return fn.decode(reply, fn.name);
  }

  /**
   * `call`, sent with the other calls of this event-loop turn on the shard
   * (`inTurn`): for what many requests do at once, such as reading a job.
   */
  async callInTurn<A extends readonly Arg[], R>(fn: RedisFunction<A, R, 'pool'>, pool: string, args: A): Promise<R> {
    const [entry] = await this.inTurn(pool, (pipeline) => this.queue(pipeline, fn, pool, args));
    return this.decodeRead(fn, pool, args, entry);
  }

  /**
   * Puts the calls `queueCalls` queues on the pipeline that the calls of this
   * event-loop turn share on `pool`'s shard, and resolves to their entries of
   * its replies, in order, errors included (a call of one caller failing does
   * not fail another's). The pipeline goes out at `setImmediate`, once every
   * request the turn read has queued its calls: one socket write and one read
   * of the replies for all of them, where a pipeline each cost a write system
   * call each (the largest single cost of a submit in the API's profile under
   * load) and as many reads and wake-ups for Redis. Per shard, since a cluster
   * pipeline must stay in one slot. `queueCalls` only queues: a call it queued
   * before throwing would still be sent, for nobody.
   */
  inTurn(pool: string, queueCalls: (pipeline: ChainableCommander) => void): Promise<Array<[Error | null, unknown]>> {
    let turn = this.turnPipelines.get(pool);
    if (!turn) {
      turn = { pipeline: this.redis.pipeline(), callers: [] };
      this.turnPipelines.set(pool, turn);
      setImmediate(() => this.sendTurn(pool));
    }
    const from = turn.pipeline.length;
    queueCalls(turn.pipeline);
    const to = turn.pipeline.length;
    return new Promise((resolve, reject) => turn.callers.push({ from, to, resolve, reject }));
  }

  private sendTurn(pool: string): void {
    const turn = this.turnPipelines.get(pool)!;
    this.turnPipelines.delete(pool);
    turn.pipeline.exec().then(
      (replies) => {
        for (const { from, to, resolve } of turn.callers) resolve((replies ?? []).slice(from, to) as Array<[Error | null, unknown]>);
      },
      (error: unknown) => {
        for (const { reject } of turn.callers) reject(error);
      },
    );
  }

  /** Queues a call of `fn` on a pipeline; `decode` turns its entry of the pipeline's replies into the reply. */
  queue<A extends readonly Arg[], R>(pipeline: ChainableCommander, fn: RedisFunction<A, R, 'pool'>, pool: string, args: A): void {
    if (!sendsPlainCommands(this.redis)) {
      pipeline.call(this.command(fn), fn.name, 1, this.keys.anchor(pool), ...this.prelude(fn), ...args);
      return;
    }
    // a pipeline is a Pipeline, which queues a Command as its own methods do
    (pipeline as unknown as Pipeline).sendCommand(commandOf(this.command(fn), [fn.name, 1, this.keys.anchor(pool)], this.prelude(fn), args));
  }

  /** `queue` for a function of the webhook service's shard. */
  queueWebhooks<A extends readonly Arg[], R>(pipeline: ChainableCommander, fn: RedisFunction<A, R, 'webhooks'>, args: A): void {
    pipeline.call(this.command(fn), fn.name, 1, this.keys.webhookAnchor(), ...this.prelude(fn), ...args);
  }

  decode<R>(fn: RedisFunction<readonly Arg[], R>, entry: PipelineEntry): R {
    const [error, reply] = entry ?? [new Error(`no reply to ${fn.name}`), null];
    if (error) {
      if (fn.calling === 'reads') this.fallBack(error); // the next call goes out as FCALL
      throw fromRedisError(error);
    }
    return fn.decode(reply, fn.name);
  }

  /**
   * `decode` for a read queued on a pipeline, which a server that cannot run
   * it as FCALL_RO refused: made again (as FCALL) rather than failing a call
   * whose writes in the same pipeline went through.
   */
  async decodeRead<A extends readonly Arg[], R>(fn: RedisFunction<A, R, 'pool'>, pool: string, args: A, entry: PipelineEntry): Promise<R> {
    const error = entry?.[0];
    if (fn.calling === 'reads' && error && this.fallBack(error)) return this.call(fn, pool, args);
    return this.decode(fn, entry);
  }

  private command(fn: RedisFunction<readonly Arg[], unknown>): 'FCALL_RO' | 'FCALL' {
    return fn.calling === 'reads' ? this.readCommand : 'FCALL';
  }

  private prelude(fn: RedisFunction<readonly Arg[], unknown>): Arg[] {
    if (fn.calling === 'reads') return [];
    if (fn.calling === 'clocked') return [this.preludes.clock()];
    if (!this.preludes.settings) throw new Error(`${fn.name} writes with the broker's settings, which these calls do not have`);
    return [this.preludes.clock(), ...this.preludes.settings()];
  }

  /** Whether a failed FCALL_RO should be made as FCALL; if so, every later read is too. */
  private fallBack(error: unknown): boolean {
    if (!(error instanceof Error) || !/unknown command .?fcall_ro|write flag/i.test(error.message)) return false;
    this.readCommand = 'FCALL';
    return true;
  }
}
