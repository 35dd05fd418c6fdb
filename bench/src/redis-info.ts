import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { KeyKindMemory } from './system';

/** One `field:value` line of INFO `section`; undefined when absent. */
export async function infoField(redis: Redis, section: string, field: string): Promise<string | undefined> {
  return fieldOf(await redis.info(section), field);
}

function fieldOf(info: string, field: string): string | undefined {
  const line = info.split('\r\n').find((row) => row.startsWith(`${field}:`));
  return line?.slice(field.length + 1);
}

/** The redis-server's CPU time so far (INFO cpu: used_cpu_user + used_cpu_sys, every thread), in µs; one INFO call. */
export async function redisCpuMicros(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  return (Number(fieldOf(info, 'used_cpu_user') ?? 0) + Number(fieldOf(info, 'used_cpu_sys') ?? 0)) * 1e6;
}

/** INFO memory used_memory, read after a short settle so lazy frees and client buffers have calmed down. */
export async function usedMemoryAfterSettle(redis: Redis, settleMs = 250): Promise<number> {
  await sleep(settleMs);
  const value = await infoField(redis, 'memory', 'used_memory');
  if (value === undefined) throw new Error('INFO memory has no used_memory');
  return Number(value);
}

/**
 * Where the bytes of `jobs` queued jobs are: MEMORY USAGE (every element counted,
 * SAMPLES 0) of every key, summed per kind of key (`kindOf` names the parts that
 * differ between keys of a kind) and divided by `jobs`. Kinds under 1 byte a job
 * are left out. MEMORY USAGE counts a key's name, object and value, not its slot
 * in the keyspace's hash table (about 30 bytes a key), so the kinds add up to a
 * little less than used_memory says.
 */
export async function memoryByKeyKind(redis: Redis, jobs: number, kindOf: (key: string) => string): Promise<KeyKindMemory[]> {
  const kinds = new Map<string, KeyKindMemory>();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'COUNT', 1000);
    cursor = next;
    const pipeline = redis.pipeline();
    for (const key of keys) pipeline.memory('USAGE', key, 'SAMPLES', 0).object('ENCODING', key);
    const replies = (await pipeline.exec()) ?? [];
    keys.forEach((key, i) => {
      const [usageError, bytes] = replies[2 * i]!;
      const [encodingError, encoding] = replies[2 * i + 1]!;
      if (usageError || encodingError || bytes === null) return; // gone meanwhile
      const kind = kindOf(key);
      const entry = kinds.get(kind) ?? { kind, encoding: String(encoding), keys: 0, bytesPerJob: 0 };
      if (!entry.encoding.split('/').includes(String(encoding))) entry.encoding += `/${String(encoding)}`;
      entry.keys += 1;
      entry.bytesPerJob += Number(bytes) / jobs;
      kinds.set(kind, entry);
    });
  } while (cursor !== '0');
  return [...kinds.values()].filter((k) => k.bytesPerJob >= 1).sort((a, b) => b.bytesPerJob - a.bytesPerJob);
}
