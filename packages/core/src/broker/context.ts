import { z } from 'zod';
import type { PoolShards } from '../api-protocol';
import type { BrokerConfig } from '../config';
import { ValidationError } from '../errors';
import { JobId, poolOfJobId } from '../job';
import { KeyLayout } from '../keys';
import { ShardName, placeOnShard, poolOfShard, shardIndex, shardName, shardsOf } from '../pool-shards';
import { PoolName } from '../requirements';
import { Router } from '../routing';
import { parseWith } from '../validation';
import { FunctionCalls } from './functions';
import { isIssuedLease } from './replies';
import type { Lease, RedisClient } from './types';

/**
 * What every part of the broker works with: the Redis connection (private to
 * core: apps get typed methods and readers, never the handle), the key
 * layout, the configuration and the function calls. One per Broker; the
 * concept modules (jobs.ts, attempts.ts, fleet.ts, ...) take it as their first argument.
 */
export class BrokerContext {
  readonly keys: KeyLayout;
  readonly calls: FunctionCalls;
  readonly services: Set<string>;
  /** where a submit that names no pool goes (routing.ts) */
  readonly router: Router;
  private readonly knownPools = new Set<string>();
  private readonly shardCounts = new Map<string, { shards: PoolShards; readAt: number; former: number[] }>();
  private readonly shardCountReads = new Map<string, Promise<PoolShards>>();

  constructor(
    readonly redis: RedisClient,
    readonly config: BrokerConfig,
    /** the virtual clock, when one replaces Redis TIME */
    readonly clock: (() => number) | undefined,
  ) {
    this.keys = new KeyLayout(config.namespace);
    this.services = new Set(config.services);
    this.calls = new FunctionCalls(redis, this.keys, {
      clock: () => (this.clock ? virtualNow(this.clock) : ''),
      // what every writing function takes after the clock (see functions/includes, `context`)
      settings: () => [config.eventsMaxLen, config.leaseMs, config.retentionMs, config.failedRetentionMs, config.avoidMs],
    });
    this.router = new Router(this);
  }

  /** Records a shard (a pool's name is its shard 0) as used: what the scheduler ticks, the feeds read and the views list. */
  async rememberPool(shard: string): Promise<void> {
    if (this.knownPools.has(shard)) return;
    await this.redis.sadd(this.keys.pools(), shard);
    this.knownPools.add(shard);
  }

  /** Every pool that has seen a job or a worker (in any of its shards). */
  async pools(): Promise<string[]> {
    return [...new Set((await this.shards()).map(poolOfShard))].sort();
  }

  /** Every shard that has seen a job or a worker: a pool's shard 0 is named as the pool (pool-shards.ts). */
  async shards(): Promise<string[]> {
    return (await this.redis.smembers(this.keys.pools())).sort();
  }

  /**
   * A pool's shard counts as Redis holds them (one shard when none is set),
   * read again after `SHARD_COUNT_TTL_MS`: a reshard reaches every process
   * within that time, with no configuration to disagree on. `fresh` reads now.
   */
  async poolShards(pool: string, fresh = false): Promise<PoolShards> {
    const cached = this.shardCounts.get(pool);
    if (cached && !fresh && Date.now() - cached.readAt < SHARD_COUNT_TTL_MS) return cached.shards;
    return this.readShardCounts(pool, !fresh);
  }

  /**
   * One read of a pool's counts at a time: every caller while it is in flight
   * shares it (a batch of 6,000 submits makes one), unless it must see what was
   * written before it asked (`shared` false).
   */
  private readShardCounts(pool: string, shared = true): Promise<PoolShards> {
    let reading = shared ? this.shardCountReads.get(pool) : undefined;
    if (!reading) {
      const readAt = Date.now();
      reading = this.redis.hmget(this.keys.shardCounts(), pool, `${pool}:serve`, `${pool}:former`).then(
        ([count, serve, former]) => {
          const placed = storedCount(count);
          const shards: PoolShards = { pool, count: placed, serve: Math.max(placed, storedCount(serve)) };
          this.shardCounts.set(pool, { shards, readAt, former: formerCounts(former, placed, Date.now()) });
          return shards;
        },
      );
      const inFlight = reading;
      this.shardCountReads.set(pool, inFlight);
      void inFlight.finally(() => {
        if (this.shardCountReads.get(pool) === inFlight) this.shardCountReads.delete(pool);
      }).catch(() => undefined);
    }
    return reading;
  }

  /**
   * Runs `call` with the pool's served shards, at once when this process has
   * read them before (a stale reading is used and read again beside it), so
   * that the calls `call` makes go out at once, in order with the caller's
   * next ones (the fleet simulator sends calls it does not wait for); only the
   * first use in a process waits for the read.
   */
  withServedShards<T>(pool: string, call: (shards: string[]) => Promise<T>): Promise<T> {
    const cached = this.shardCounts.get(pool);
    if (!cached) return this.readShardCounts(pool).then((counts) => call(shardsOf(pool, counts.serve)));
    // read again beside it (one read, shared by every caller while it is in flight): the next uses see the new counts
    if (Date.now() - cached.readAt >= SHARD_COUNT_TTL_MS) this.readShardCounts(pool).catch(() => this.shardCounts.delete(pool));
    return call(shardsOf(pool, cached.shards.serve));
  }

  /**
   * The names of a pool's shards: 'placed', those submits go to; 'served', those
   * its workers claim in (placed ones and a reshard's left-over ones that still
   * hold jobs); 'all', the served ones and any other this pool ever used (a
   * listing must find the jobs a reshard left behind).
   */
  async poolShardNames(pool: string, which: 'placed' | 'served' | 'all', fresh = false): Promise<string[]> {
    const counts = await this.poolShards(pool, fresh);
    const names = shardsOf(pool, which === 'placed' ? counts.count : counts.serve);
    if (which !== 'all') return names;
    const used = (await this.shards()).filter((shard) => poolOfShard(shard) === pool);
    return [...new Set([...names, ...used])].sort((a, b) => shardIndex(a) - shardIndex(b));
  }

  /**
   * The shard a new job (or workflow) of `pool` goes to (pool-shards.ts,
   * placeOnShard): its idempotency key's (`<tenant>:<key>`), else a random one.
   * For a key, within the idempotency window after a reshard, the shard the
   * key hashed to under each count the pool had in that window comes first if
   * the key is recorded there: a client's retry across a reshard meets its first
   * submit (there the submit function dedupes it, atomically, as always).
   */
  async placeJob(pool: string, idempotencyKey: string | undefined, kind: 'job' | 'workflow' = 'job'): Promise<string> {
    const { count } = await this.poolShards(pool);
    const home = shardName(pool, placeOnShard(count, idempotencyKey, Math.random()));
    if (idempotencyKey === undefined) return home;
    const former = this.formerHomes(pool, idempotencyKey, home);
    if (former.length === 0) return home;
    const recordOf = (shard: string) => (kind === 'job' ? this.keys.idempotency(shard, idempotencyKey) : this.keys.workflowIdempotency(shard, idempotencyKey));
    const found = await Promise.all(former.map((shard) => this.redis.exists(recordOf(shard))));
    return former.find((_, i) => found[i] === 1) ?? home;
  }

  /**
   * `placeJob` for a job, when its answer needs no read: the pool's counts are cached and
   * fresh and, for a key, no count of the idempotency window places it elsewhere; undefined
   * otherwise. A bulk submit places most of its jobs so, with no promise per job.
   */
  placeJobNow(pool: string, idempotencyKey: string | undefined): string | undefined {
    const cached = this.shardCounts.get(pool);
    if (!cached || Date.now() - cached.readAt >= SHARD_COUNT_TTL_MS) return undefined;
    const home = shardName(pool, placeOnShard(cached.shards.count, idempotencyKey, Math.random()));
    return idempotencyKey === undefined || this.formerHomes(pool, idempotencyKey, home).length === 0 ? home : undefined;
  }

  /** The shards other than `home` that an idempotency key placed its job on under the pool's former counts. */
  private formerHomes(pool: string, idempotencyKey: string, home: string): string[] {
    const former = this.shardCounts.get(pool)?.former ?? [];
    if (former.length === 0) return [];
    return [...new Set(former.map((n) => shardName(pool, placeOnShard(n, idempotencyKey, 0))))].filter((shard) => shard !== home);
  }

  /** Forgets the cached shard counts of `pool` (after this process changed them). */
  forgetShardCounts(pool: string): void {
    this.shardCounts.delete(pool);
  }

  poolOf(id: string): string {
    parseWith(JobId, id, 'job id');
    return poolOfJobId(id);
  }

  lease(lease: Lease): Lease {
    // a lease this process's claims handed out is well-formed by construction (and frozen)
    return isIssuedLease(lease) ? lease : parseWith(LeaseSchema, lease, 'lease');
  }
}

/**
 * `call()`, with what it throws synchronously (a refused argument) as a
 * rejection: for the calls that are not async functions so that their
 * commands go out at once (withServedShards), yet must fail as one does.
 */
export function settled<T>(call: () => Promise<T>): Promise<T> {
  try {
    return call();
  } catch (error) {
    return Promise.reject(error);
  }
}

/** How long a process trusts the shard counts it read (a reshard reaches every process within it). */
export const SHARD_COUNT_TTL_MS = 2_000;

/** `<pool>:former` of the shard counts: each count the pool had, to the time (ms) its keyed submits' records may last. */
const FormerCounts = z.record(z.string().regex(/^[1-9][0-9]?$/), z.number());

/** The stored `<pool>:former` field, read (a malformed one reads as none: placement then works as before this lookup). */
function storedFormerCounts(stored: string | null | undefined): Record<string, number> {
  if (!stored) return {};
  try {
    const read = FormerCounts.safeParse(JSON.parse(stored));
    return read.success ? read.data : {};
  } catch {
    return {};
  }
}

/** The counts other than `current` whose idempotency records may still be alive at `now`. */
function formerCounts(stored: string | null | undefined, current: number, now: number): number[] {
  return Object.entries(storedFormerCounts(stored)).flatMap(([n, until]) => (until > now && Number(n) !== current ? [Number(n)] : []));
}

/** The `<pool>:former` to store when a pool's count goes from `before` to `count` at `now`, the old count kept for `windowMs`. */
export function nextFormerCounts(stored: string | null | undefined, before: number, count: number, now: number, windowMs: number): string {
  const kept = Object.fromEntries(Object.entries(storedFormerCounts(stored)).filter(([, until]) => until > now));
  if (before !== count) kept[String(before)] = now + windowMs;
  delete kept[String(count)];
  return JSON.stringify(kept);
}

/** A stored shard count; absent or unreadable: one shard (what every pool had before shards). */
function storedCount(value: string | null | undefined): number {
  const n = Number(value);
  return Number.isInteger(n) && n >= 1 ? n : 1;
}

const LeaseSchema = z
  .object({
    pool: ShardName,
    jobId: JobId,
    token: z.string().regex(/^\d+$/, 'a fencing token is a decimal number'),
    workerId: z.string().min(1).max(128),
  })
  .refine((lease) => poolOfJobId(lease.jobId) === lease.pool, {
    path: ['pool'],
    message: "not the shard of the lease's job",
  });

export function checkedPool(pool: string): string {
  return parseWith(PoolName, pool, 'pool');
}

/** A shard name (a pool's name for its shard 0) checked at the boundary; errors name it a pool, as callers of one-shard pools know it. */
export function checkedShard(shard: string): string {
  return parseWith(ShardName, shard, 'pool');
}

/** JSON text of a value the caller handed in; a value JSON cannot hold (a BigInt, a cycle) is a ValidationError. */
export function jsonOf(value: unknown, what: string, path: string): string {
  try {
    return JSON.stringify(value);
  } catch (error) {
    throw new ValidationError(what, [{ path, message: `not JSON: ${(error as Error).message}` }]);
  }
}

/**
 * The virtual clock's reading: whole ms, as the Lua side stores them. A fraction
 * would be written into a job and refused only when the job is read back.
 */
function virtualNow(clock: () => number): number {
  const now = clock();
  if (!Number.isSafeInteger(now) || now < 0) throw new ValidationError('virtual clock', [{ path: '', message: `a clock reads whole ms since the epoch, not ${now}` }]);
  return now;
}
