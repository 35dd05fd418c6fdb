import type { RedisClient } from './types';

/** The handle inside each BlockingConnection, reachable from this module only. */
const handles = new WeakMap<BlockingConnection, RedisClient>();

/**
 * A connection of its own for blocking reads (XREAD BLOCK, BLMPOP): a blocked
 * command would hold up every other command queued on a shared connection.
 * Opened by `Broker.blockingConnection()`; hand it to the reads that take a
 * `connection` option. The Redis handle inside stays in core.
 */
export class BlockingConnection {
  readonly #redis: RedisClient;

  constructor(redis: RedisClient, onError: (error: unknown) => void = () => undefined) {
    this.#redis = redis;
    handles.set(this, redis);
    // it reconnects by itself; the blocked read that fails reports the error
    redis.on('error', onError);
  }

  /**
   * Closes it at once (a blocked read is rejected). Only once: ioredis arms a
   * 2 s timer on every disconnect() and a second call on a closed socket waits
   * for a 'close' that never comes, holding the process open.
   */
  close(): void {
    if (this.#redis.status !== 'end') this.#redis.disconnect();
  }

  get closed(): boolean {
    return this.#redis.status === 'end';
  }
}

/**
 * Where a blocking read runs: a BlockingConnection, or (for callers that own
 * a Redis connection themselves: tests, the simulator) a raw one.
 */
export type ReadConnection = BlockingConnection | RedisClient;

export function redisFor(connection: ReadConnection | undefined, fallback: RedisClient): RedisClient {
  if (connection === undefined) return fallback;
  return connection instanceof BlockingConnection ? handles.get(connection)! : connection;
}
