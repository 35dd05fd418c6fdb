/**
 * The redis-server launcher tests start their servers with. It lives in the
 * core because `emp start` runs it too; usePrivateRedis (`@emp/testkit/private-redis`)
 * gives a test file a server of its own.
 */
export { type RedisProcess, type StartRedisOptions, freePort, isPortFree, startRedis } from '@emp/core/redis-server';
