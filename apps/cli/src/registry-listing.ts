import type { Broker } from '@emp/core';

/**
 * Entries of a per-pool registry (workers, machines) from one pool or all,
 * each tagged with its pool, and the server's time to show their ages against.
 */
export async function listAcrossPools(
  broker: Broker,
  pool: string | undefined,
  list: (pool: string) => Promise<Array<Record<string, string>>>,
): Promise<{ now: number; entries: Array<Record<string, string>> }> {
  const pools = pool ? [pool] : await broker.pools();
  const [now, perPool] = await Promise.all([
    broker.serverTime(),
    Promise.all(pools.map(async (p) => (await list(p)).map((entry): Record<string, string> => ({ ...entry, pool: p })))),
  ]);
  return { now, entries: perPool.flat() };
}
