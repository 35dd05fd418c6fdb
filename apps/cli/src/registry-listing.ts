import { type Broker, type InvalidRecord, type RegistryEntry, isInvalidRecord } from '@emp/core';
import type { Command } from 'commander';
import { withBroker } from './connection';
import { redisFlag } from './flags';
import { duration, json, table } from './format';

/** What one registry listing (`emp workers`, `emp machines`) shows of its kind of record. */
export interface RegistryListing<R extends { pool: string; id: string; problems: string[]; stored: Record<string, string> }> {
  command: string;
  description: string;
  /** the key of the JSON answer's list */
  plural: string;
  /** printed when nothing has registered */
  empty: string;
  list(broker: Broker, pool: string): Promise<RegistryEntry[]>;
  /** core/registry.ts's decoder of this kind */
  decode(pool: string, hash: Record<string, string>): R | InvalidRecord;
  headers: string[];
  /** the cells after POOL and the id */
  row(record: R, now: number): string[];
}

/**
 * Registers a command that lists one kind of registry record from one pool or
 * all, decoded through core/registry.ts: a table for people (a field that
 * cannot be read shows as `?` and is named below the table; a hash that is no
 * record at all is listed as invalid), or JSON for scripts (each record as
 * stored, with `problems` where a field cannot be read).
 */
export function registerRegistryListing<R extends { pool: string; id: string; problems: string[]; stored: Record<string, string> }>(
  program: Command,
  listing: RegistryListing<R>,
): void {
  program
    .command(listing.command)
    .description(listing.description)
    .option('--pool <name>', 'only this pool')
    .option('--json', 'print JSON for scripts')
    .action(async (options: { pool?: string; json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const pools = options.pool ? [options.pool] : await broker.pools();
        const [now, perPool] = await Promise.all([
          broker.serverTime(),
          Promise.all(pools.map(async (pool) => (await listing.list(broker, pool)).map((hash) => listing.decode(pool, hash)))),
        ]);
        const records = perPool.flat();
        if (options.json) {
          const entries = records.map((record) =>
            isInvalidRecord(record)
              ? { ...record.stored, pool: record.pool, invalid: record.invalid }
              : { ...record.stored, pool: record.pool, problems: record.problems.length ? record.problems : undefined },
          );
          process.stdout.write(`${json({ now, [listing.plural]: entries })}\n`);
          return;
        }
        if (records.length === 0) {
          process.stdout.write(`${listing.empty}\n`);
          return;
        }
        const notes: string[] = [];
        const rows = records.map((record) => {
          if (isInvalidRecord(record)) {
            notes.push(`${record.pool}: a ${listing.command.replace(/s$/, '')} hash is invalid: ${record.invalid}`);
            return [record.pool, record.stored.id ?? '?', 'invalid'];
          }
          for (const problem of record.problems) notes.push(`${record.pool}/${record.id}: ${problem}`);
          return [record.pool, record.id, ...listing.row(record, now)];
        });
        process.stdout.write(`${table(['POOL', ...listing.headers], rows)}\n`);
        if (notes.length) process.stdout.write(`\nunreadable fields (shown as ?):\n${notes.map((note) => `  ${note}`).join('\n')}\n`);
      });
    });
}

/** How long ago a registry time was, or `-` without one. */
export function since(now: number, at: number | undefined, suffix = ''): string {
  return at === undefined ? '-' : `${duration(now - at)}${suffix}`;
}

/** A field's cell: its value, `?` when it was present but unreadable. */
export function cell(record: { problems: string[] }, name: string, value: string | undefined, otherwise = '-'): string {
  if (value !== undefined) return value;
  return record.problems.some((p) => p.startsWith(`${name}:`)) ? '?' : otherwise;
}
