// Only for test files: it registers vitest hooks (the rest of the kit's main entry runs anywhere, e.g. in the monitor's flood page).
import { type RedisProcess, type StartRedisOptions, startRedis } from '@emp/core/redis-server';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach } from 'vitest';

export interface PrivateRedis {
  /** connected from the file's first test on; flushed before each test */
  readonly redis: Redis;
  /** the server's URL, for child processes and second connections */
  url(): string;
}

/**
 * A redis-server of the test file's own: started before its first test,
 * flushed (it is ours) before each, stopped after the last. Call it at the top
 * level of a test file.
 */
export function usePrivateRedis(options: StartRedisOptions = {}): PrivateRedis {
  // the port is known only once the server runs, so the client connects then
  const redis = new Redis({ lazyConnect: true });
  let server: RedisProcess | undefined;
  beforeAll(async () => {
    server = await startRedis(options);
    redis.options.host = server.host;
    redis.options.port = server.port;
    await redis.connect();
  });
  beforeEach(async () => {
    await redis.flushall();
  });
  afterAll(async () => {
    redis.disconnect();
    await server?.stop();
  });
  return {
    redis,
    url: () => {
      if (!server) throw new Error('usePrivateRedis: the server starts in beforeAll; read its url inside a test');
      return server.url;
    },
  };
}
