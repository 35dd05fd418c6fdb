import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Broker, type RedisClient, brokerConfigFromEnv, openRedis } from '@emp/core';
import { CommandError } from './errors';

/** Where `emp start` writes the URL of its embedded Redis, relative to the folder it runs in. */
export const STATE_DIR = '.emp';
export const REDIS_URL_FILE = 'redis.url';

export interface RedisTarget {
  url: string;
  /** how the URL was found, for error messages */
  source: 'flag' | 'env' | 'file' | 'embedded';
  /** the .emp/redis.url it came from, when source is 'file' */
  file?: string;
}

/**
 * The Redis every command other than `start` talks to: `--redis <url>`, else
 * REDIS_URL, else the `.emp/redis.url` a running `emp start` wrote (looked up
 * from the working folder upwards).
 */
export function resolveRedisTarget(flag: string | undefined, cwd = process.cwd(), env = process.env): RedisTarget {
  if (flag) return { url: flag, source: 'flag' };
  if (env.REDIS_URL) return { url: env.REDIS_URL, source: 'env' };
  const file = findUpwards(join(STATE_DIR, REDIS_URL_FILE), cwd);
  if (file) {
    const url = readFileSync(file, 'utf8').trim();
    if (url) return { url, source: 'file', file };
  }
  throw new CommandError(
    'no Redis to talk to: run `npm start` (it starts one and records it in .emp/redis.url), set REDIS_URL, or pass --redis <url>',
  );
}

function findUpwards(relative: string, from: string): string | undefined {
  let dir = from;
  for (;;) {
    const candidate = join(dir, relative);
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/**
 * Connects to the target, failing fast with an actionable message when nobody
 * answers (a command should not hang retrying). `persistent` connections
 * (`emp start`) reconnect forever instead.
 */
export async function connectRedis(target: RedisTarget, options: { persistent?: boolean } = {}): Promise<RedisClient> {
  // several hosts in the URL (or EMP_REDIS_CLUSTER=1): a Redis Cluster (docs/scale-out.md)
  const redis = openRedis(target.url, {
    lazyConnect: true,
    connectTimeout: 5_000,
    // how long a closing socket may linger before it is destroyed (default 2 s, which a CLI would wait out on exit)
    disconnectTimeout: 200,
    ...(options.persistent ? {} : { maxRetriesPerRequest: 1, retryStrategy: () => null }),
  });
  let cause: Error | undefined; // the socket's error (ECONNREFUSED, ...) says more than connect()'s rejection
  redis.on('error', (error: Error) => (cause ??= error));
  try {
    await redis.connect();
  } catch (error) {
    closeConnection(redis);
    throw new CommandError(`cannot reach Redis at ${target.url} ${describeSource(target)}: ${(cause ?? (error as Error)).message}`);
  }
  return redis;
}

function describeSource(target: RedisTarget): string {
  switch (target.source) {
    case 'flag':
      return '(from --redis)';
    case 'env':
      return '(from REDIS_URL)';
    case 'file':
      return `(from ${target.file}; is \`npm start\` still running?)`;
    case 'embedded':
      return '(the embedded redis-server)';
  }
}

/** Runs `action` with a broker on the resolved Redis, and always closes the connection. */
export async function withBroker<T>(redisFlag: string | undefined, action: (broker: Broker) => Promise<T>): Promise<T> {
  // EMP_POOLS / EMP_DEFAULT_POOL: the pools `npm start` routes to, checked before connecting
  const config = brokerConfigFromEnv(process.env);
  const redis = await connectRedis(resolveRedisTarget(redisFlag));
  try {
    const broker = await Broker.connect({ redis, config });
    return await action(broker);
  } finally {
    closeConnection(redis);
  }
}

/**
 * Closes a connection at once (a blocked read is rejected). Only once: ioredis
 * arms a 2 s timer on every disconnect() and a second call on a closed socket
 * waits for a 'close' that never comes, holding the process open.
 */
export function closeConnection(connection: RedisClient): void {
  if (connection.status !== 'end') connection.disconnect();
}

