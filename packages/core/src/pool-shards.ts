import { z } from 'zod';

/**
 * Shards within a pool (docs/scale-out.md, "Shards within a pool"). A pool `P`
 * keeps its jobs in N shards: shard 0 is `P` itself (the hash tag `{P}` every
 * pool had before shards), shard k >= 1 is `P_k` (hash tag `{P_k}`: `_` is not
 * allowed in a pool name, so no pool's name can be another pool's shard). Each
 * shard is a unit of the key layout of its own, in its own cluster slot, with
 * its own queues, workers' records, timers and event stream; a job id starts with
 * its shard (`P_2.m3kx...`), so any call about a job reaches one slot.
 */

/** The most shards one pool may have. */
export const MAX_SHARDS_PER_POOL = 64;

/** A shard's name: a pool name, then `_<k>` for shard k >= 1. */
export const ShardName = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9-]{0,31}(_[1-9][0-9]?)?$/,
    'a pool name is lowercase letters, digits and dashes, at most 32 characters; a shard of it adds _<k>, k from 1 to 63 (standard_2)',
  )
  .refine((shard) => shardIndex(shard) < MAX_SHARDS_PER_POOL, { message: `a pool has at most ${MAX_SHARDS_PER_POOL} shards (0..${MAX_SHARDS_PER_POOL - 1})` });

/** A pool's shard count as stored and set (`emp shards set`). */
export const ShardCount = z
  .number()
  .int('a shard count is a whole number')
  .min(1, 'a pool has at least one shard')
  .max(MAX_SHARDS_PER_POOL, `a pool has at most ${MAX_SHARDS_PER_POOL} shards`);

/** Shard `k` of `pool`: the pool's own name for shard 0. */
export function shardName(pool: string, k: number): string {
  return k === 0 ? pool : `${pool}_${k}`;
}

/** The pool a shard belongs to (a pool's name is its own shard 0). */
export function poolOfShard(shard: string): string {
  const cut = shard.indexOf('_');
  return cut < 0 ? shard : shard.slice(0, cut);
}

/** A shard's index within its pool (0 for the pool itself). */
export function shardIndex(shard: string): number {
  const cut = shard.indexOf('_');
  return cut < 0 ? 0 : Number(shard.slice(cut + 1));
}

/** Shards 0..count-1 of `pool`. */
export function shardsOf(pool: string, count: number): string[] {
  return Array.from({ length: count }, (_, k) => shardName(pool, k));
}

/**
 * The shard a submit goes to (of `count`): with an idempotency key, the shard of
 * its hash (FNV-1a of `<tenant>:<key>`), so that a repeat meets the first submit
 * wherever it went and dedupes there; otherwise `random` (0 <= random < 1) picks one.
 */
export function placeOnShard(count: number, idempotencyKey: string | undefined, random: number): number {
  if (count <= 1) return 0;
  if (idempotencyKey === undefined) return Math.min(count - 1, Math.floor(random * count));
  return fnv1a(idempotencyKey) % count;
}

/** 32-bit FNV-1a over the UTF-16 code units: stable across processes and versions, which placement needs. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
