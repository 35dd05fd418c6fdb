import type { Cluster, Redis } from 'ioredis';
import { FUNCTIONS, FunctionCalls } from './broker/functions';
import { KeyLayout } from './keys';
import { type JobRequirements, type RequirementClass, requirementClass } from './requirements';

/**
 * The layout of a pool's stored data that the library writes (SCHEMA_VERSION in
 * functions/includes/00-base.lua). Each pool keeps its own in `schema_version`;
 * `emp_migrate` (functions/migrate.lua) brings an older pool up to it.
 */
export const SCHEMA_VERSION = 3;

export interface PoolMigration {
  pool: string;
  /** the pool's layout version once migrated (a newer library's pool keeps its own) */
  version: number;
  /** emp_migrate calls it took: 1 when the pool was already current */
  calls: number;
}

/**
 * Brings one pool's stored data to the library's layout: calls emp_migrate until
 * it answers 'done'. Each call does a bounded page of work, so a pool with many
 * jobs takes many short calls rather than one that blocks Redis; several
 * processes may migrate the same pool at once (the migration's place is kept in
 * Redis and every page is idempotent).
 */
export async function migratePool(redis: Redis | Cluster, keys: KeyLayout, pool: string, now = ''): Promise<PoolMigration> {
  // it runs before a broker (and its settings) exists: the clock is all its calls take
  const functions = new FunctionCalls(redis, keys, { clock: () => now });
  let answer: string[] = [];
  for (let calls = 1; ; calls++) {
    const reply = await functions.call(FUNCTIONS.migrate, pool, answer);
    if (reply[0] === 'done') return { pool, version: Number(reply[1]), calls };
    answer = [];
    if (reply[0] === 'classes') {
      for (let i = 1; i + 1 < reply.length; i += 2) {
        const today = classOfStoredDefinition(reply[i + 1]!);
        answer.push(reply[i]!, today.id, today.definition);
      }
    }
  }
}

/** Migrates every pool the namespace has used (the `pools` set), each as migratePool does. */
export async function migratePools(redis: Redis | Cluster, keys: KeyLayout = new KeyLayout()): Promise<PoolMigration[]> {
  const pools = await redis.smembers(keys.pools());
  return Promise.all(pools.sort().map((pool) => migratePool(redis, keys, pool)));
}

/**
 * Today's requirement class of a class definition an older layout stored, with
 * the code a submit uses: version 1 named the tenant and the workflow in every
 * class, today's names the tenant only under strict isolation.
 */
export function classOfStoredDefinition(definition: string): RequirementClass {
  const { service, tenant, workflow_id: _workflow, ...requirements } = JSON.parse(definition) as Record<string, unknown>;
  return requirementClass({
    service: String(service),
    tenant: typeof tenant === 'string' ? tenant : '',
    requirements: requirements as JobRequirements,
  });
}
