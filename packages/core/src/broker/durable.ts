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
 * Runs a submit's calls as one pipeline: durably (`execWithReplicaWait`), on a
 * pipeline of their own sent at once (`alone`), or on the pipeline the calls of
 * this event-loop turn share on `shard`.
 * `replies` are the calls' own; `notReplicated(what)` is the error of a durable
 * submit no replica acknowledged (undefined otherwise), `what` naming what was submitted.
 */
export async function execSubmitCalls(
  ctx: BrokerContext,
  shard: string,
  durable: boolean,
  queueCalls: (pipeline: ChainableCommander) => void,
  alone = false,
): Promise<{ replies: Array<[Error | null, unknown]>; notReplicated: (what: string) => NotReplicatedError | undefined }> {
  if (!durable && alone) {
    const pipeline = ctx.redis.pipeline();
    queueCalls(pipeline);
    return { replies: ((await pipeline.exec()) ?? []) as Array<[Error | null, unknown]>, notReplicated: () => undefined };
  }
  // the submits of one event-loop turn on one shard go out together (FunctionCalls.inTurn)
  if (!durable) return { replies: await ctx.calls.inTurn(shard, queueCalls), notReplicated: () => undefined };
  const replies = await execWithReplicaWait(ctx, queueCalls);
  return { replies: replies.slice(0, -1), notReplicated: (what) => replicationFailure(ctx, replies.at(-1), what) };
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
