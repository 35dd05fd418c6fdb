import type { z } from 'zod';
import { CompletionBatcher } from '../completion-batch';
import { DEFAULT_AFFINITY_OVERDUE_MS } from '../config';
import { PayloadTooLargeError, ValidationError } from '../errors';
import { JobErrorInfo, JobProgress } from '../job';
import { parseWith } from '../validation';
import { type BrokerContext, checkedPool, jsonOf } from './context';
import { type ReadConnection, redisFor } from './connection';
import { FUNCTIONS } from './functions';
import { type ClaimReply, parseClaim, parseDrops, parseSignal } from './replies';
import type { ClaimResult, DropVerdict, Lease, WorkerSignal } from './types';

/** Completions of one worker made in the same turn of the event loop go out in one emp_complete call. */
export function completionBatcher(ctx: BrokerContext): CompletionBatcher {
  return new CompletionBatcher(
    async (pool, claimFor, completions) =>
      (await ctx.calls.call(FUNCTIONS.complete, pool, [claimFor, affinityBounds(ctx), ...completions.flatMap((c) => [c.jobId, c.token, c.result])])) as unknown[],
  );
}

export async function claim(ctx: BrokerContext, pool: string, workerId: string, wokenFor: string): Promise<ClaimResult> {
  const reply = await ctx.calls.call(FUNCTIONS.claim, checkedPool(pool), [workerId, wokenFor, affinityBounds(ctx)]);
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
  const replies = await ctx.calls.call(FUNCTIONS.claimMany, checkedPool(pool), [workerId, wokenFor, affinityBounds(ctx), count]);
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

export async function claimFallback(ctx: BrokerContext, pool: string, workerId: string, policy: FallbackPolicy): Promise<ClaimResult> {
  const reply = await ctx.calls.call(FUNCTIONS.claimFallback, checkedPool(pool), [
    workerId,
    checkedPool(policy.homePool),
    Math.max(0, Math.round(policy.afterMs)),
    policy.maxExpectedS ?? '',
    policy.unknownExpectedS ?? '',
  ]);
  return claimed(ctx, pool, workerId, reply);
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
  const reply = await ctx.calls.call(FUNCTIONS.claim, checkedPool(pool), [workerId, '', affinityBounds(ctx), 'if-woken'], redisFor(connection, ctx.redis));
  return reply[3] === 'unwoken' ? null : claimed(ctx, pool, workerId, reply);
}

export async function start(ctx: BrokerContext, lease: Lease): Promise<void> {
  const l = ctx.lease(lease);
  await ctx.calls.call(FUNCTIONS.start, l.pool, [l.jobId, l.token]);
}

export async function progress(ctx: BrokerContext, lease: Lease, report: z.input<typeof JobProgress>): Promise<void> {
  const l = ctx.lease(lease);
  const parsed = parseWith(JobProgress, report, 'progress');
  await ctx.calls.call(FUNCTIONS.progress, l.pool, [l.jobId, l.token, JSON.stringify(parsed)]);
}

export async function complete(
  ctx: BrokerContext,
  completions: CompletionBatcher,
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

export async function heartbeat(
  ctx: BrokerContext,
  pool: string,
  workerId: string,
  leases: Array<Pick<Lease, 'jobId' | 'token'>>,
): Promise<Array<{ jobId: string; verdict: DropVerdict }>> {
  const pairs = leases.flatMap((l) => [l.jobId, l.token]);
  return parseDrops(await ctx.calls.call(FUNCTIONS.heartbeat, checkedPool(pool), [workerId, ...pairs]));
}

export async function waitForSignals(ctx: BrokerContext, connection: ReadConnection, pool: string, workerId: string, timeoutMs: number): Promise<WorkerSignal[]> {
  const key = ctx.keys.signal(pool, workerId);
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
  const keys = workerIds.map((id) => ctx.keys.signal(checkedPool(pool), id));
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
