import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';

/** One `field:value` line of INFO `section`; undefined when absent. */
export async function infoField(redis: Redis, section: string, field: string): Promise<string | undefined> {
  const text = await redis.info(section);
  const line = text.split('\r\n').find((row) => row.startsWith(`${field}:`));
  return line?.slice(field.length + 1);
}

/** INFO memory used_memory, read after a short settle so lazy frees and client buffers have calmed down. */
export async function usedMemoryAfterSettle(redis: Redis, settleMs = 250): Promise<number> {
  await sleep(settleMs);
  const value = await infoField(redis, 'memory', 'used_memory');
  if (value === undefined) throw new Error('INFO memory has no used_memory');
  return Number(value);
}
