import { z } from 'zod';
import type { BrokerConfig } from '../config';
import { ValidationError } from '../errors';
import { JobId, poolOfJobId } from '../job';
import { KeyLayout } from '../keys';
import { PoolName } from '../requirements';
import { Router } from '../routing';
import { parseWith } from '../validation';
import { FunctionCalls } from './functions';
import { issuedLeases } from './replies';
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

  async rememberPool(pool: string): Promise<void> {
    if (this.knownPools.has(pool)) return;
    await this.redis.sadd(this.keys.pools(), pool);
    this.knownPools.add(pool);
  }

  /** Every pool that has seen a job or a worker. */
  async pools(): Promise<string[]> {
    return (await this.redis.smembers(this.keys.pools())).sort();
  }

  poolOf(id: string): string {
    parseWith(JobId, id, 'job id');
    return poolOfJobId(id);
  }

  lease(lease: Lease): Lease {
    // a lease this process's claims handed out is well-formed by construction (and frozen)
    return issuedLeases.has(lease) ? lease : parseWith(LeaseSchema, lease, 'lease');
  }
}

const LeaseSchema = z
  .object({
    pool: PoolName,
    jobId: JobId,
    token: z.string().regex(/^\d+$/, 'a fencing token is a decimal number'),
    workerId: z.string().min(1).max(128),
  })
  .refine((lease) => poolOfJobId(lease.jobId) === lease.pool, {
    path: ['pool'],
    message: "not the pool of the lease's job",
  });

export function checkedPool(pool: string): string {
  return parseWith(PoolName, pool, 'pool');
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
