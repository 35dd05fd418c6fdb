import type { z } from 'zod';
import { type CallBatcher, type Completion, type ProgressReport, completionBatcher as batchCompletions, progressBatcher as batchProgress } from '../call-batch';
import { DEFAULT_AFFINITY_OVERDUE_MS } from '../config';
import { PayloadTooLargeError, UnknownWorkerError, ValidationError } from '../errors';
import { JobErrorInfo, JobProgress, poolOfJobId } from '../job';
import { parseWith } from '../validation';
import { type BrokerContext, checkedPool, checkedShard, jsonOf, settled } from './context';
import { type ReadConnection, redisFor } from './connection';
import { FUNCTIONS } from './functions';
import { type ClaimReply, parseClaim, parseDrops, parseSignal } from './replies';
import type { ClaimResult, DropVerdict, Lease, WorkerSignal } from './types';

/** Completions of one worker made in the same turn of the event loop go out in one emp_complete call. */
export function completionBatcher(ctx: BrokerContext): CallBatcher<Completion> {
  return batchCompletions((pool, claimFor, completions) => {
    const args: [claimFor: string, affinity: string, ...completions: string[]] = [claimFor, affinityBounds(ctx)];
    for (const c of completions) args.push(c.jobId, c.token, c.result);
    return ctx.calls.call(FUNCTIONS.complete, pool, args) as Promise<unknown[]>;
  });
}

/** Progress reports of a pool due in the same turn of the event loop go out in one emp_progress call. */
export function progressBatcher(ctx: BrokerContext): CallBatcher<ProgressReport> {
  return batchProgress(
    async (pool, _group, reports) =>
      (await ctx.calls.call(FUNCTIONS.progress, pool, reports.flatMap((r) => [r.jobId, r.token, r.progress]))) as unknown[],
  );
}

/** A claim in one shard (a pool's name is its shard 0). */
export async function claim(ctx: BrokerContext, pool: string, workerId: string, wokenFor: string): Promise<ClaimResult> {
  const reply = await ctx.calls.call(FUNCTIONS.claim, checkedShard(pool), [workerId, wokenFor, affinityBounds(ctx)]);
  return claimed(ctx, pool, workerId, reply);
}

/** Most jobs one claimMany call takes (claim_many.lua holds it to the same). */
export const MOST_CLAIMS_PER_CALL = 64;

/**
 * Up to `count` claims in one call, for a worker with that many free slots: the
 * results in the order taken, the jobs first; fewer than `count` jobs when the
 * last claim found none (its result, with no job, comes last).
 */
export async function claimMany(ctx: BrokerContext, pool: string, workerId: string, count: number, wokenFor: string): Promise<ClaimResult[]> {
  if (!Number.isInteger(count) || count < 1 || count > MOST_CLAIMS_PER_CALL) {
    throw new ValidationError('claim count', [{ path: '', message: `a whole number from 1 to ${MOST_CLAIMS_PER_CALL}, not ${count}` }]);
  }
  const replies = await ctx.calls.call(FUNCTIONS.claimMany, checkedShard(pool), [workerId, wokenFor, affinityBounds(ctx), count]);
  const results: ClaimResult[] = [];
  for (const reply of replies) results.push(await claimed(ctx, pool, workerId, reply));
  return results;
}

/** The claim's affinity bounds as the functions take them: 'wait/overdue' in ms (see claim.lua). */
function affinityBounds(ctx: BrokerContext): string {
  const { affinityWaitMs, affinityOverdueMs } = ctx.config;
  return `${affinityWaitMs}/${affinityOverdueMs ?? (affinityWaitMs > 0 ? affinityWaitMs : DEFAULT_AFFINITY_OVERDUE_MS)}`;
}

/** The stated policy under which a worker of one pool takes a job of another (see claim_fallback.lua). */
export interface FallbackPolicy {
  /** the worker's own pool, named in the claim's event */
  homePool: string;
  /** the job must have waited at least this long in its pool */
  afterMs: number;
  /** the job's expected duration (its routing estimate) must be at most this (undefined: any) */
  maxExpectedS?: number;
  /** the expected duration assumed for a job without an estimate (undefined: such a job is taken only when there is no bound) */
  unknownExpectedS?: number;
}

/** A fallback claim in each served shard of `pool` in turn, until one has a job the policy allows. */
export async function claimFallback(ctx: BrokerContext, pool: string, workerId: string, policy: FallbackPolicy): Promise<ClaimResult> {
  checkedPool(pool);
  const args = [workerId, checkedPool(policy.homePool), Math.max(0, Math.round(policy.afterMs)), policy.maxExpectedS ?? '', policy.unknownExpectedS ?? ''] as const;
  let none: Extract<ClaimResult, { job: null }> | undefined;
  for (const shard of await ctx.poolShardNames(pool, 'served')) {
    const result = await claimed(ctx, shard, workerId, await ctx.calls.call(FUNCTIONS.claimFallback, shard, [...args]));
    if (result.job) return result;
    // the shard that has a job qualifying soonest says when to look again
    if (!none || (result.retryAt !== undefined && (none.retryAt === undefined || result.retryAt < none.retryAt))) none = result;
  }
  return none!;
}

/**
 * The result of a claim reply. A claim call looks at a bounded number of
 * requirement classes; one that ran out of them before it found a job or
 * reached the end answers 'more', and the walk goes on in further calls (each
 * short, so other clients are served in between) until it ends.
 */
function claimed(ctx: BrokerContext, pool: string, workerId: string, first: ClaimReply): ClaimResult | Promise<ClaimResult> {
  // most claims end in their first call: answered in the same turn, as before walks could pause
  if (first[3] !== 'more') return parseClaim(pool, workerId, first);
  return claimedAfterMore(ctx, pool, workerId, first);
}

async function claimedAfterMore(ctx: BrokerContext, pool: string, workerId: string, first: ClaimReply): Promise<ClaimResult> {
  let reply = first;
  let retryAt: number | undefined;
  while (reply[0] === 'none' && reply[3] === 'more') {
    if (reply[1]) retryAt = Math.min(retryAt ?? Infinity, Number(reply[1]));
    reply = await ctx.calls.call(FUNCTIONS.claim, pool, [workerId, '', affinityBounds(ctx)]);
  }
  const result = parseClaim(pool, workerId, reply);
  if (result.job || retryAt === undefined) return result;
  return { ...result, retryAt: Math.min(retryAt, result.retryAt ?? Infinity) };
}

export async function claimWhenWoken(ctx: BrokerContext, connection: ReadConnection, pool: string, workerId: string): Promise<ClaimResult | null> {
  const reply = await ctx.calls.call(FUNCTIONS.claim, checkedShard(pool), [workerId, '', affinityBounds(ctx), 'if-woken'], redisFor(connection, ctx.redis));
  return reply[3] === 'unwoken' ? null : claimed(ctx, pool, workerId, reply);
}

export async function start(ctx: BrokerContext, lease: Lease): Promise<void> {
  const l = ctx.lease(lease);
  await ctx.calls.call(FUNCTIONS.start, l.pool, [l.jobId, l.token]);
}

export async function progress(ctx: BrokerContext, reports: CallBatcher<ProgressReport>, lease: Lease, report: z.input<typeof JobProgress>): Promise<void> {
  const l = ctx.lease(lease);
  const parsed = parseWith(JobProgress, report, 'progress');
  await reports.add(l.pool, '', { jobId: l.jobId, token: l.token, progress: JSON.stringify(parsed) });
}

export async function complete(
  ctx: BrokerContext,
  completions: CallBatcher<Completion>,
  lease: Lease,
  result: unknown,
  options: { claimNext?: boolean },
): Promise<ClaimResult | null> {
  const l = ctx.lease(lease);
  const text = jsonOf(result ?? null, 'result', '');
  const max = ctx.config.maxResultBytes;
  if (Buffer.byteLength(text) > max) {
    throw new PayloadTooLargeError(
      `result of job ${l.jobId} is ${Buffer.byteLength(text)} bytes, over the ${max}-byte limit; store large outputs in the asset store and return their URLs`,
    );
  }
  const reply = await completions.add(l.pool, options.claimNext ? l.workerId : '', { jobId: l.jobId, token: l.token, result: text });
  return options.claimNext ? claimed(ctx, l.pool, l.workerId, reply.slice(1)) : null;
}

export async function fail(
  ctx: BrokerContext,
  lease: Lease,
  error: z.input<typeof JobErrorInfo>,
  options: { claimNext?: boolean },
): Promise<{ outcome: 'queued' | 'retrying' | 'failed'; next: ClaimResult | null }> {
  const l = ctx.lease(lease);
  const info = parseWith(JobErrorInfo, error, 'job error');
  const reply = await ctx.calls.call(FUNCTIONS.fail, l.pool, [
    l.jobId,
    l.token,
    info.kind,
    jsonOf(info, 'job error', 'details'),
    options.claimNext ? l.workerId : '',
    affinityBounds(ctx),
  ]);
  return { outcome: reply[0], next: options.claimNext ? await claimed(ctx, l.pool, l.workerId, reply.slice(1)) : null };
}

/**
 * The worker's heartbeat in every served shard of `pool` (it is registered in
 * each, and goes offline in one it stops speaking to), each with the leases of
 * its jobs there; the drops of all of them.
 */
export function heartbeat(
  ctx: BrokerContext,
  pool: string,
  workerId: string,
  leases: Array<Pick<Lease, 'jobId' | 'token'>>,
): Promise<Array<{ jobId: string; verdict: DropVerdict }>> {
  return settled(() => {
    checkedPool(pool);
    return ctx.withServedShards(pool, async (served) => {
      const byShard = new Map<string, string[]>(served.map((shard) => [shard, []]));
      for (const lease of leases) {
        const shard = poolOfJobId(lease.jobId);
        const pairs = byShard.get(shard) ?? [];
        pairs.push(lease.jobId, lease.token);
        byShard.set(shard, pairs);
      }
      const drops = await Promise.all([...byShard].map(async ([shard, pairs]) => parseDrops(await ctx.calls.call(FUNCTIONS.heartbeat, shard, [workerId, ...pairs]))));
      return drops.flat();
    });
  });
}

export async function waitForSignals(ctx: BrokerContext, connection: ReadConnection, pool: string, workerId: string, timeoutMs: number): Promise<WorkerSignal[]> {
  const key = ctx.keys.signal(checkedShard(pool), workerId);
  const seconds = timeoutMs === 0 ? 0 : Math.max(0.01, timeoutMs / 1000);
  // BLMPOP takes everything queued in the same round trip that waited for it
  const reply = (await redisFor(connection, ctx.redis).call('BLMPOP', seconds, 1, key, 'LEFT', 'COUNT', 100)) as [string, string[]] | null;
  if (!reply) return [];
  return reply[1].map(parseSignal).filter((s): s is WorkerSignal => s !== null);
}

/**
 * Takes up to 100 signals from each of the workers' lists (distinct workers) without waiting.
 * LMPOP with many keys pops from the first of them that holds anything: one call
 * finds that none does, and each list that held something costs one more call,
 * from the key after it. Where few lists hold anything (a driver's idle workers,
 * most of them not woken) that is far fewer commands than one LMPOP per list, and
 * Redis ends in the same state: each list popped once, up to 100, in order.
 */
export async function takeSignals(ctx: BrokerContext, pool: string, workerIds: readonly string[]): Promise<Map<string, WorkerSignal[]>> {
  const taken = new Map<string, WorkerSignal[]>();
  const keys = workerIds.map((id) => ctx.keys.signal(checkedShard(pool), id));
  for (let from = 0; from < keys.length; ) {
    const rest = from === 0 ? keys : keys.slice(from);
    const popped = (await ctx.redis.call('LMPOP', rest.length, ...rest, 'LEFT', 'COUNT', 100)) as [string, string[]] | null;
    if (!popped) break;
    const at = keys.indexOf(popped[0], from);
    if (at < 0) throw new Error(`LMPOP answered from ${popped[0]}, not one of the keys it was given`);
    taken.set(workerIds[at]!, popped[1].map(parseSignal).filter((s): s is WorkerSignal => s !== null));
    from = at + 1;
  }
  return taken;
}

export interface ClaimInShardsOptions {
  /** the shard to look in first (the one whose wake-up this answers); default: shard 0 */
  first?: string;
  /** jobs to take at most, all from the first shard that has any (1..64; default 1) */
  count?: number;
  /** the requirement class a wake-up named, passed to the claim in `first` */
  wokenFor?: string;
  /** shards not to look in (found empty since) */
  skip?: ReadonlySet<string>;
}

export interface ClaimInShards {
  /** the claims of the shard that had jobs, as claimMany returns them; empty when none had */
  results: ClaimResult[];
  /** the shard they were taken in */
  shard?: string;
  /** the shards found empty, where the worker is now recorded idle */
  idleIn: string[];
  /** the earliest time a job skipped in an empty shard becomes this worker's to take */
  retryAt?: number;
}

/**
 * Complete matching over a pool's shards: each shard's claim is complete in
 * that shard; this looks in each served shard in turn, so a job any shard holds
 * is found. A shard with jobs for the worker ends the look; each shard found
 * empty costs one claim call and leaves the worker idle there (woken by its next
 * submit). Order is exact within a shard (priority, then place in line) and
 * approximate across shards: the first shard with a job wins.
 */
export async function claimInShards(ctx: BrokerContext, pool: string, workerId: string, options: ClaimInShardsOptions): Promise<ClaimInShards> {
  checkedPool(pool);
  const served = await ctx.poolShardNames(pool, 'served');
  const first = options.first !== undefined && served.includes(options.first) ? options.first : served[0]!;
  const order = [first, ...served.filter((shard) => shard !== first)];
  const count = options.count ?? 1;
  const idleIn: string[] = [];
  let retryAt: number | undefined;
  for (const shard of order) {
    if (options.skip?.has(shard) && shard !== options.first) continue;
    const wokenFor = shard === options.first ? (options.wokenFor ?? '') : '';
    let results: ClaimResult[];
    try {
      results = count > 1 ? await claimMany(ctx, shard, workerId, count, wokenFor) : [await claim(ctx, shard, workerId, wokenFor)];
    } catch (error) {
      // a shard a reshard added a moment ago, where the worker has not registered yet (it does on the shards: signal
      // or at its heartbeat): not its to look in yet; unknown in the first shard looked in, the worker hears it
      if (error instanceof UnknownWorkerError && shard !== first) continue;
      throw error;
    }
    if (results[0]?.job) return { results, shard, idleIn, retryAt };
    const none = results.at(-1);
    if (none && !none.job && none.retryAt !== undefined) retryAt = Math.min(retryAt ?? Infinity, none.retryAt);
    idleIn.push(shard);
  }
  return { results: [], idleIn, retryAt };
}
