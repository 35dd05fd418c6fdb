import type { ChainableCommander } from 'ioredis';
import { fromRedisError } from '../errors';
import type { KeyLayout } from '../keys';
import type { MachineState } from '../registry';
import * as r from './replies';
import type { RedisClient } from './types';

/** One argument as a function receives it (ARGV is text; numbers are sent as their decimal form). */
export type Arg = string | number;

/**
 * One function of the `emp` library as TypeScript calls it: its Redis name
 * (written here and nowhere else in TypeScript), whether it only reads
 * (FCALL_RO, no prelude: a replica may serve it), the type of its arguments
 * after the prelude, and the decoder of its reply.
 */
export interface RedisFunction<Args extends readonly Arg[], Reply> {
  readonly name: string;
  readonly readOnly: boolean;
  readonly decode: (reply: unknown, name: string) => Reply;
  /** never set: carries the argument tuple's type */
  readonly args?: Args;
}

/** The argument tuple of a function of the table. */
export type ArgsOf<F> = F extends RedisFunction<infer A, unknown> ? A : never;

function writes<Args extends readonly Arg[], Reply>(name: string, decode: (reply: unknown, name: string) => Reply): RedisFunction<Args, Reply> {
  return { name, readOnly: false, decode };
}

function reads<Args extends readonly Arg[], Reply>(name: string, decode: (reply: unknown, name: string) => Reply): RedisFunction<Args, Reply> {
  return { name, readOnly: true, decode };
}

type Flat = Arg[];
type Bit = '0' | '1';

/**
 * Every function of the library that the broker calls, with its arguments
 * (after the prelude every writing function takes: clock, events maxlen, lease,
 * retention, failed retention, avoid ms) and its reply. The Lua side of each is
 * `functions/<name without emp_>.lua`, which lists its ARGV in its header.
 */
export const FUNCTIONS = {
  // jobs
  submit: writes<[id: string, cls: string, definition: string, priority: number, idempotency: string, fingerprint: string,
    idempotencyTtlMs: number, delayMs: number, queueTtlMs: number | '', startTimeoutMs: number | '', payload: string,
    maxQueuedClasses: number, fieldCount: number, ...fields: Flat], r.SubmitReply>('emp_submit', r.submitReply),
  /** count, then `count` times the arguments of emp_submit */
  submitMany: writes<[count: number, ...jobs: Flat], r.SubmitManyReply>('emp_submit_many', r.submitManyReply),
  getJob: reads<[id: string], r.JobReply | null>('emp_get_job', r.jobReply),
  cancel: writes<[id: string, reason: string], r.CancelReply>('emp_cancel', r.cancelReply),
  retry: writes<[id: string], string>('emp_retry', r.text),
  listJobs: reads<[tenant: string, until: number | '', since: number | '', afterScore: number | '', afterMember: string,
    states: string, services: string, limit: number, budget: number], r.ListJobsReply>('emp_list_jobs', r.listJobsReply),

  // attempts
  claim: writes<[worker: string, wokenFor: string] | [worker: string, wokenFor: string, mode: 'if-woken'], r.ClaimReply>('emp_claim', r.claimReply),
  start: writes<[id: string, token: string], void>('emp_start', r.ignore),
  progress: writes<[id: string, token: string, progress: string], void>('emp_progress', r.ignore),
  /** the worker to claim for ('' none), then id, token, result per completion */
  complete: writes<[claimFor: string, ...completions: Flat], r.CompleteReply>('emp_complete', r.completeReply),
  fail: writes<[id: string, token: string, kind: string, error: string, claimFor: string], r.FailReply>('emp_fail', r.failReply),
  heartbeat: writes<[worker: string, ...leases: Flat], r.HeartbeatReply>('emp_heartbeat', r.heartbeatReply),

  // fleet
  registerWorker: writes<[worker: string, machine: string, profile: string, definition: string, freshStart: Bit, ...fields: Flat],
    r.RegisterWorkerReply>('emp_register_worker', r.registerWorkerReply),
  routableScan: writes<[profile: string, cursor: string], r.RoutableScanReply>('emp_routable_scan', r.routableScanReply),
  laneScan: writes<['classes', cursor: string] | ['jobs', cls: string, after: string] | ['done'], r.LaneScanReply>('emp_lane_scan', r.laneScanReply),
  setWorkerState: writes<[worker: string, state: string], string>('emp_set_worker_state', r.text),
  registerMachine: writes<[machine: string, state: MachineState, ...fields: Flat], boolean>('emp_register_machine', r.flag),
  machineCommand: writes<[machine: string, action: string, service: string, by: string, reason: string], string>('emp_machine_command', r.text),
  machineCommandDone: writes<[machine: string, command: string, outcome: string, message: string], boolean>('emp_machine_command_done', r.flag),
  machineProcess: writes<[machine: string, process: string, state: string, ...fields: Flat], string>('emp_machine_process', r.text),

  // operations and stats
  tick: writes<[limit: number, offlineAfterMs: number, registryRetentionMs: number, clockGapMs: number, leaseGraceMs: number], r.TickReply>('emp_tick', r.tickReply),
  pauseService: writes<[service: string, paused: Bit, by: string, reason: string], boolean>('emp_pause_service', r.flag),
  queueStats: reads<[cursor: string], r.QueueStatsReply>('emp_queue_stats', r.queueStatsReply),
  jobCounts: reads<[page: string], r.JobCountsReply>('emp_job_counts', r.jobCountsReply),
  classCapacity: reads<string[], number[]>('emp_class_capacity', r.numbers),
} as const;

/** A reply of a pipelined call as ioredis hands it back. */
export type PipelineEntry = [Error | null, unknown] | undefined;

/**
 * Calls the functions of FUNCTIONS on a pool's shard: KEYS[1] is the shard's
 * anchor, writing functions get the prelude, read-only ones go out as
 * FCALL_RO. Where FCALL_RO cannot run a function (a proxy that does not know
 * the command, or a library whose function lost its no-writes flag) the call is
 * made again as FCALL, and so are later ones: the one fallback, here.
 */
export class FunctionCalls {
  private readCommand: 'FCALL_RO' | 'FCALL' = 'FCALL_RO';

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: KeyLayout,
    private readonly prelude: () => Arg[],
  ) {}

  /** Calls `fn` on `pool`'s shard, on `connection` (default: the broker's own); Redis errors become typed errors. */
  async call<A extends readonly Arg[], R>(fn: RedisFunction<A, R>, pool: string, args: A, connection: RedisClient = this.redis): Promise<R> {
    let reply: unknown;
    try {
      reply = fn.readOnly
        ? await connection.call(this.readCommand, fn.name, 1, this.keys.anchor(pool), ...args)
        : await connection.call('FCALL', fn.name, 1, this.keys.anchor(pool), ...this.prelude(), ...args);
    } catch (error) {
      if (fn.readOnly && this.fallBack(error)) return this.call(fn, pool, args, connection);
      throw fromRedisError(error);
    }
    return fn.decode(reply, fn.name);
  }

  /** Queues a call of `fn` on a pipeline; `decode` turns its entry of the pipeline's replies into the reply. */
  queue<A extends readonly Arg[], R>(pipeline: ChainableCommander, fn: RedisFunction<A, R>, pool: string, args: A): void {
    if (fn.readOnly) pipeline.call(this.readCommand, fn.name, 1, this.keys.anchor(pool), ...args);
    else pipeline.call('FCALL', fn.name, 1, this.keys.anchor(pool), ...this.prelude(), ...args);
  }

  decode<R>(fn: RedisFunction<readonly Arg[], R>, entry: PipelineEntry): R {
    const [error, reply] = entry ?? [new Error(`no reply to ${fn.name}`), null];
    if (error) {
      if (fn.readOnly) this.fallBack(error); // the next call goes out as FCALL
      throw fromRedisError(error);
    }
    return fn.decode(reply, fn.name);
  }

  /** Whether a failed FCALL_RO should be made as FCALL (and every later one with it). */
  private fallBack(error: unknown): boolean {
    if (this.readCommand === 'FCALL' || !(error instanceof Error)) return false;
    if (!/unknown command .?fcall_ro|write flag/i.test(error.message)) return false;
    this.readCommand = 'FCALL';
    return true;
  }
}
