import { usePrivateRedis } from '@emp/testkit/private-redis';
import { describe, expect, it } from 'vitest';
import { Broker } from './broker';

const { redis } = usePrivateRedis();

describe('Broker.redisMemory', () => {
  it('reports the memory in use and the maxmemory limit of the server, as INFO memory does', async () => {
    const broker = await Broker.connect({ redis });
    await redis.config('SET', 'maxmemory', String(512 * 2 ** 20));
    try {
      const [server, ...others] = await broker.redisMemory();
      expect(others).toEqual([]);
      expect(server!.node).toBe(`${redis.options.host}:${redis.options.port}`);
      expect(server!.maxBytes).toBe(512 * 2 ** 20);
      expect(server!.usedBytes).toBeGreaterThan(100_000);
      expect(server!.usedBytes).toBeLessThan(server!.maxBytes);
    } finally {
      await redis.config('SET', 'maxmemory', '0');
    }
    expect((await broker.redisMemory())[0]!.maxBytes, 'no limit reads 0').toBe(0);
  });
});
