import type { Redis } from 'ioredis';
import { streamEntryProblems } from '../events';

/**
 * Every entry of every pool's event stream that is not exactly what
 * core/events.ts declares (an unknown type, a field missing, malformed or not
 * declared), as `<stream> <entry id> <problem>`: a test of the Lua library
 * asserts it is empty, so a function that writes an undeclared event or field
 * fails there rather than in a reader.
 */
export async function undeclaredStreamEntries(redis: Redis): Promise<string[]> {
  const streams: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', '*:events', 'COUNT', 1_000, 'TYPE', 'stream');
    streams.push(...keys);
    cursor = next;
  } while (cursor !== '0');
  const problems: string[] = [];
  for (const stream of streams) {
    for (const [id, flat] of await redis.xrange(stream, '-', '+')) {
      for (const problem of streamEntryProblems(flat)) problems.push(`${stream} ${id} ${problem}`);
    }
  }
  return problems;
}
