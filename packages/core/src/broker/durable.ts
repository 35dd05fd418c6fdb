import { setTimeout as sleep } from 'node:timers/promises';
import type { ChainableCommander, Cluster, Redis } from 'ioredis';
import { NotReplicatedError } from '../errors';
import type { BrokerContext } from './context';
import type { RedisClient } from './types';

/**
 * Durable submit (docs/scale-out.md): Redis replicates asynchronously, so a
 * master that dies right after acknowledging a submit can take the job with
 * it. A durable submit sends `WAIT 1 <timeout>` after its writes, in the same
 * pipeline: a pipeline goes out on one connection, and on a cluster to the
 * master owning its keys' slot, so WAIT counts the replicas that have this
 * very submit. The answer waits for that acknowledgement.
 */

/** Whether a submit waits for a replica: its own `durable` option, else the broker's `durableSubmit`. */
export function isDurable(ctx: BrokerContext, durable: boolean | undefined): boolean {
  return durable ?? ctx.config.durableSubmit === 'replica';
}

/** Replies a cluster node gives a command it did not run: safe to send again. */
const NOT_RUN = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN) /;
/** a failover's worth of tries, as the cluster connection's own (CLUSTER_CONNECTION_OPTIONS) */
const RETRIES = 40;
const RETRY_DELAY_MS = 300;

/**
 * Runs the calls `queueCalls` puts on a pipeline, then `WAIT 1 <timeout>` on the
 * same pipeline; returns every reply, WAIT's last. During a failover a cluster
 * node may answer the calls with a redirection (MOVED to the dead master,
 * CLUSTERDOWN) and WAIT with a count: ioredis then resends nothing (a pipeline
 * with a reply that is not an error is not resent), so here the whole pipeline
 * is made again, but only when every call was refused that way (none ran).
 */
export async function execWithReplicaWait(ctx: BrokerContext, queueCalls: (pipeline: ChainableCommander) => void): Promise<Array<[Error | null, unknown]>> {
  for (let attempt = 0; ; attempt++) {
    const pipeline = ctx.redis.pipeline();
    queueCalls(pipeline);
    pipeline.call('WAIT', 1, ctx.config.durableSubmitTimeoutMs);
    const replies = ((await pipeline.exec()) ?? []) as Array<[Error | null, unknown]>;
    const calls = replies.slice(0, -1);
    const noneRan = calls.length > 0 && calls.every(([error]) => error !== null && NOT_RUN.test(error.message));
    if (!noneRan || attempt >= RETRIES || !ctx.redis.isCluster) return replies;
    await sleep(RETRY_DELAY_MS);
    // the redirection is not followed by ioredis here, so the slot map is read again before the next try
    await new Promise<void>((resolve) => (ctx.redis as Cluster).refreshSlotsCache(() => resolve()));
  }
}

/**
 * Runs a submit's calls as one pipeline: durably (`execWithReplicaWait`) or not.
 * `replies` are the calls' own; `notReplicated(what)` is the error of a durable
 * submit no replica acknowledged (undefined otherwise), `what` naming what was submitted.
 */
export async function execSubmitCalls(
  ctx: BrokerContext,
  shard: string,
  durable: boolean,
  queueCalls: (pipeline: ChainableCommander) => void,
): Promise<{ replies: Array<[Error | null, unknown]>; notReplicated: (what: string) => NotReplicatedError | undefined }> {
  if (!durable) return { replies: await sharedPipelines(ctx).exec(shard, queueCalls), notReplicated: () => undefined };
  const replies = await execWithReplicaWait(ctx, queueCalls);
  return { replies: replies.slice(0, -1), notReplicated: (what) => replicationFailure(ctx, replies.at(-1), what) };
}

/**
 * The submits of one event-loop turn on one shard share a pipeline: it goes out
 * at `setImmediate`, after every request the turn read has queued its calls, as
 * one socket write and one read of the replies, where a pipeline per submit
 * cost a write system call each (a third of the API's CPU per submit under
 * load, and as many reads and wake-ups for Redis). Each submit gets its own
 * calls' replies, in order, errors included: a call of one submit failing does
 * not fail another's, as with a pipeline each. Per shard, since a cluster
 * pipeline must stay in one slot.
 */
class SharedPipelines {
  private readonly pending = new Map<string, PendingPipeline>();

  constructor(private readonly ctx: BrokerContext) {}

  exec(shard: string, queueCalls: (pipeline: ChainableCommander) => void): Promise<Array<[Error | null, unknown]>> {
    let pending = this.pending.get(shard);
    if (!pending) {
      pending = { pipeline: this.ctx.redis.pipeline(), waiting: [] };
      this.pending.set(shard, pending);
      setImmediate(() => this.flush(shard));
    }
    const from = pending.pipeline.length;
    queueCalls(pending.pipeline);
    const to = pending.pipeline.length;
    return new Promise((resolve, reject) => pending.waiting.push({ from, to, resolve, reject }));
  }

  private flush(shard: string): void {
    const pending = this.pending.get(shard)!;
    this.pending.delete(shard);
    pending.pipeline.exec().then(
      (replies) => {
        for (const { from, to, resolve } of pending.waiting) resolve(((replies ?? []) as Array<[Error | null, unknown]>).slice(from, to));
      },
      (error: unknown) => {
        for (const { reject } of pending.waiting) reject(error);
      },
    );
  }
}

interface PendingPipeline {
  pipeline: ChainableCommander;
  /** each submit's calls: positions [from, to) of the pipeline */
  waiting: Array<{ from: number; to: number; resolve: (replies: Array<[Error | null, unknown]>) => void; reject: (error: unknown) => void }>;
}

const shared = new WeakMap<BrokerContext, SharedPipelines>();

function sharedPipelines(ctx: BrokerContext): SharedPipelines {
  let pipelines = shared.get(ctx);
  if (!pipelines) shared.set(ctx, (pipelines = new SharedPipelines(ctx)));
  return pipelines;
}

/** The error of a durable submit, given the pipeline entry of its WAIT; undefined once a replica has it. */
export function replicationFailure(ctx: BrokerContext, entry: [Error | null, unknown] | undefined, what: string): NotReplicatedError | undefined {
  const [error, replicas] = entry ?? [new Error('no reply to WAIT'), null];
  if (!error && Number(replicas) >= 1) return undefined;
  return new NotReplicatedError(
    `${what} is queued on the Redis master, but no replica acknowledged it within ${ctx.config.durableSubmitTimeoutMs} ms` +
      `${error ? ` (${error.message})` : ''}: it survives a failover only if a replica got it anyway; ` +
      'read the job before submitting it again (or submit with an Idempotency-Key)',
  );
}

/**
 * For `durableSubmit: 'replica'` at startup: every master must have a connected
 * replica, or every durable submit would wait out its timeout and fail.
 */
export async function checkReplicasForDurableSubmit(redis: RedisClient): Promise<void> {
  const masters: Redis[] = redis.isCluster ? (redis as Cluster).nodes('master') : [redis as Redis];
  const infos = await Promise.all(masters.map(async (node) => ({ node: `${node.options.host ?? '127.0.0.1'}:${node.options.port ?? 6379}`, info: await node.info('replication') })));
  const lacking = infos.filter(({ info }) => !/^role:master/m.test(info) || Number(/^connected_slaves:(\d+)/m.exec(info)?.[1] ?? 0) < 1);
  if (lacking.length > 0) {
    throw new NotReplicatedError(
      `durableSubmit 'replica' (EMP_DURABLE_SUBMIT) needs a connected replica on every Redis master, and ${lacking.map((l) => l.node).join(', ')} ` +
        `has none: add replicas, or set durableSubmit 'off'`,
    );
  }
}
