import { StreamId } from '../api-protocol';
import { MachineId, WorkerModels, type WorkerModelsInput, WorkerRegistration, capabilityProfile, modelTiers } from '../capabilities';
import { MACHINE_STATES, type MachineState, encodeWorkerRegistration } from '../registry';
import { ModelName, ServiceName } from '../requirements';
import { ValidationError } from '../errors';
import { parseWith } from '../validation';
import { z } from 'zod';
import { type BrokerContext, checkedPool, checkedShard, settled } from './context';
import { poolOfShard } from '../pool-shards';
import { type ReadConnection, redisFor } from './connection';
import { type Arg, FUNCTIONS } from './functions';
import { machineCommand as parseMachineCommand, machineLogEntry } from './replies';
import { MODEL_ACTIONS, type MachineCommand, type MachineCommandInput, MachineCommandOutcome, type MachineLogEntry, type RegistryEntry } from './types';

const WorkerStateInput = z.enum(['draining', 'idle', 'offline', 'borrowing']);
export type WorkerStateInput = z.input<typeof WorkerStateInput>;

type XReadReply = Array<[string, Array<[string, string[]]>]> | null;

// ---------------------------------------------------------------- workers

/**
 * Registers the worker in every served shard of its pool (pool-shards.ts): a
 * claim in any of them knows it, and a submit in any of them may wake it.
 */
export async function registerWorker(
  ctx: BrokerContext,
  input: WorkerRegistration,
  options: { freshStart?: boolean },
): Promise<{ profile: string; becameRoutable: number; shards: string[] }> {
  const registration = parseWith(WorkerRegistration, input, 'worker registration');
  poolProfileProblem(ctx, registration);
  const profile = capabilityProfile(registration.capabilities);
  const shards = await ctx.poolShardNames(registration.pool, 'served');
  const each = await Promise.all(shards.map((shard) => registerInShard(ctx, shard, registration, profile, options)));
  return { profile: profile.id, becameRoutable: each.reduce((sum, n) => sum + n, 0), shards };
}

async function registerInShard(
  ctx: BrokerContext,
  shard: string,
  registration: z.output<typeof WorkerRegistration>,
  profile: ReturnType<typeof capabilityProfile>,
  options: { freshStart?: boolean },
): Promise<number> {
  await ctx.rememberPool(shard);
  const fields = encodeWorkerRegistration(
    { pool: registration.pool, concurrency: registration.concurrency, version: registration.version || undefined, hostname: registration.hostname || undefined, home_pool: registration.home_pool },
    profile.definition,
  );
  let [becameRoutable, cursor, lanes] = await ctx.calls.call(FUNCTIONS.registerWorker, shard, [
    registration.id,
    registration.machine_id,
    profile.id,
    profile.definition,
    options.freshStart ? '1' : '0',
    ...Object.entries(fields).flat(),
  ]);
  // a new profile is checked against the classes nobody could run so far, a bounded page per call
  while (cursor !== '0') {
    const [became, next] = await ctx.calls.call(FUNCTIONS.routableScan, shard, [profile.id, cursor]);
    becameRoutable += became;
    cursor = next;
  }
  if (lanes === 'scan') await putQueuedJobsInLanes(ctx, shard);
  return becameRoutable;
}

/**
 * A worker may register in a configured pool only when its hardware meets the
 * pool's profile (docs/pools.md): a 24 GB worker in `heavy` would take jobs it is
 * too small for. A pool outside the configuration has no profile.
 */
function poolProfileProblem(ctx: BrokerContext, registration: z.output<typeof WorkerRegistration>): void {
  const pool = ctx.config.pools.find((each) => each.name === registration.pool);
  // a borrower takes only the jobs its requirements let it run, under its own pool's rule
  if (!pool || registration.home_pool !== undefined) return;
  const memory = registration.capabilities.hardware.gpu_memory_gb ?? 0;
  const path = 'capabilities.hardware.gpu_memory_gb';
  const has = registration.capabilities.hardware.gpu_memory_gb === undefined ? 'states no GPU memory' : `has ${memory} GB`;
  if (pool.profile.min_gpu_memory_gb !== undefined && memory < pool.profile.min_gpu_memory_gb) {
    throw new ValidationError('worker registration', [
      { path, message: `pool ${pool.name} needs workers with at least ${pool.profile.min_gpu_memory_gb} GB of GPU memory; worker ${registration.id} ${has}` },
    ]);
  }
  if (pool.profile.gpu && memory <= 0) {
    throw new ValidationError('worker registration', [{ path, message: `pool ${pool.name} needs workers with a GPU; worker ${registration.id} ${has}` }]);
  }
}

/**
 * The first worker restricted to tenants or a workflow turns lanes on in its
 * shard (see docs/broker.md, "Tenants and workflows do not make classes"): the
 * jobs already queued go into them, a bounded page per call, before it claims.
 */
async function putQueuedJobsInLanes(ctx: BrokerContext, pool: string): Promise<void> {
  let cursor = '0';
  do {
    const [next = '0', classes = []] = await ctx.calls.call(FUNCTIONS.laneScan, pool, ['classes', cursor]);
    for (const cls of classes) {
      let after = '';
      do {
        [after = ''] = await ctx.calls.call(FUNCTIONS.laneScan, pool, ['jobs', cls, after]);
      } while (after !== '');
    }
    cursor = next;
  } while (cursor !== '0');
  await ctx.calls.call(FUNCTIONS.laneScan, pool, ['done']);
}

/**
 * Sets the worker's state in every served shard of `pool` (or in `shards` only:
 * a worker leaves the idle sets of some); returns its state in the first.
 */
export function setWorkerState(ctx: BrokerContext, pool: string, workerId: string, state: WorkerStateInput, shards?: readonly string[]): Promise<string> {
  return settled(() => {
    const parsed = parseWith(WorkerStateInput, state, 'worker state');
    checkedPool(pool);
    const setIn = async (where: readonly string[]) => (await Promise.all(where.map((shard) => ctx.calls.call(FUNCTIONS.setWorkerState, shard, [workerId, parsed]))))[0] ?? '';
    return shards ? setIn(shards.map((shard) => ofPool(checkedShard(shard), pool))) : ctx.withServedShards(pool, setIn);
  });
}

function ofPool(shard: string, pool: string): string {
  if (poolOfShard(shard) !== pool) throw new ValidationError('worker state', [{ path: 'shards', message: `${shard} is not a shard of pool ${pool}` }]);
  return shard;
}

/**
 * Replaces the models `workerId` says it holds (loaded, on disk, downloading):
 * claims prefer the jobs whose models a worker holds (docs/broker.md, "Model
 * affinity"). Returns how many models were recorded. No event: workers report often.
 */
export function reportModels(ctx: BrokerContext, pool: string, workerId: string, input: WorkerModelsInput): Promise<number> {
  return settled(() => {
    const models = parseWith(WorkerModels, input, 'model report');
    const tiers = [...modelTiers(models)].flatMap(([model, tier]) => [model, tier]);
    checkedPool(pool);
    // every shard's claims and wake-ups weigh what it holds
    return ctx.withServedShards(pool, async (shards) => {
      const recorded = await Promise.all(shards.map((shard) => ctx.calls.call(FUNCTIONS.workerModels, shard, [workerId, JSON.stringify(models), ...tiers])));
      return recorded[0] ?? 0;
    });
  });
}

export async function workers(ctx: BrokerContext, pool: string, options: { borrowers?: boolean } = {}): Promise<RegistryEntry[]> {
  const entries = await registry(ctx, [ctx.keys.workers(pool), ctx.keys.offlineWorkers(pool)], (id) => ctx.keys.worker(pool, id));
  return options.borrowers ? entries : entries.filter((entry) => entry.home_pool === undefined);
}

/** One worker's hash, or null when it is not registered in the pool (never was, or its retention passed). */
export async function worker(ctx: BrokerContext, pool: string, workerId: string): Promise<RegistryEntry | null> {
  const hash = await ctx.redis.hgetall(ctx.keys.worker(checkedPool(pool), workerId));
  return hash.id ? (hash as RegistryEntry) : null;
}

// ---------------------------------------------------------------- machines

/** A state the machine.<state> events declare: anything else would be written as an event no reader knows. */
const MachineStateInput = z.enum(MACHINE_STATES);

export async function registerMachine(ctx: BrokerContext, pool: string, machineId: string, state: MachineState, fields: Record<string, string>): Promise<boolean> {
  parseWith(MachineId, machineId, 'machine id');
  checkedPool(pool);
  parseWith(MachineStateInput, state, 'machine state');
  await ctx.rememberPool(pool);
  return ctx.calls.call(FUNCTIONS.registerMachine, pool, [machineId, state, ...Object.entries(fields).flat()]);
}

export async function machines(ctx: BrokerContext, pool: string): Promise<RegistryEntry[]> {
  return registry(ctx, [ctx.keys.machines(pool), ctx.keys.offlineMachines(pool)], (id) => ctx.keys.machine(pool, id));
}

/** One machine's hash, or null when it is not registered in the pool (never was, or its retention passed). */
export async function machine(ctx: BrokerContext, pool: string, machineId: string): Promise<RegistryEntry | null> {
  const hash = await ctx.redis.hgetall(ctx.keys.machine(checkedPool(pool), machineId));
  return hash.id ? (hash as RegistryEntry) : null;
}

export async function isMachineRegistered(ctx: BrokerContext, pool: string, machineId: string): Promise<boolean> {
  return (await ctx.redis.exists(ctx.keys.machine(checkedPool(pool), machineId))) === 1;
}

async function registry(ctx: BrokerContext, indexes: [string, string], hashKey: (id: string) => string): Promise<RegistryEntry[]> {
  const [online, offline] = await Promise.all(indexes.map((index) => ctx.redis.zrange(index, 0, -1)));
  const pipeline = ctx.redis.pipeline();
  for (const id of [...online!, ...offline!]) pipeline.hgetall(hashKey(id));
  const replies = (await pipeline.exec()) ?? [];
  return replies.map(([, hash]) => hash as RegistryEntry).filter((h) => h && h.id);
}

const CommandText = { by: z.string().max(200).optional(), reason: z.string().optional() };
/** What machineCommand accepts: `model` exactly for prefetch and evict, `service` only for the others. */
const MachineCommandSchema = z.discriminatedUnion('action', [
  z.object({ action: z.enum(['drain', 'restart', 'shutdown']), service: ServiceName.optional(), ...CommandText }).strict(),
  z.object({ action: z.enum(MODEL_ACTIONS), model: ModelName, ...CommandText }).strict(),
]);

export async function machineCommand(ctx: BrokerContext, pool: string, machineId: string, input: MachineCommandInput): Promise<string> {
  parseWith(MachineId, machineId, 'machine id');
  const command = parseWith(MachineCommandSchema, input, 'machine command');
  return ctx.calls.call(FUNCTIONS.machineCommand, checkedPool(pool), [
    machineId,
    command.action,
    'service' in command ? (command.service ?? '') : '',
    command.by ?? '',
    (command.reason ?? '').slice(0, 500),
    'model' in command ? command.model : '',
  ]);
}

export async function machineCommandDone(
  ctx: BrokerContext,
  pool: string,
  machineId: string,
  commandId: string,
  outcome: MachineCommandOutcome,
  message: string,
): Promise<boolean> {
  parseWith(MachineId, machineId, 'machine id');
  parseWith(StreamId, commandId, 'command id');
  parseWith(MachineCommandOutcome, outcome, 'command outcome');
  return ctx.calls.call(FUNCTIONS.machineCommandDone, checkedPool(pool), [machineId, commandId, outcome, message.slice(0, 2_000)]);
}

export async function readMachineCommands(
  ctx: BrokerContext,
  pool: string,
  machineId: string,
  cursor: string,
  options: { blockMs?: number; count?: number; connection?: ReadConnection },
): Promise<MachineCommand[]> {
  const args: Arg[] = ['COUNT', options.count ?? 100];
  if (options.blockMs !== undefined) args.push('BLOCK', options.blockMs);
  const reply = (await redisFor(options.connection, ctx.redis).call(
    'XREAD', ...args, 'STREAMS', ctx.keys.machineCommands(checkedPool(pool), machineId), cursor,
  )) as XReadReply;
  return (reply?.[0]?.[1] ?? []).map(([id, flat]) => parseMachineCommand(id, flat));
}

export async function machineProcessEvent(
  ctx: BrokerContext,
  pool: string,
  machineId: string,
  process: string,
  state: string,
  fields: Record<string, string | number>,
): Promise<string> {
  parseWith(MachineId, machineId, 'machine id');
  const pairs = Object.entries(fields).flatMap(([key, value]) => [key, String(value)]);
  return ctx.calls.call(FUNCTIONS.machineProcess, checkedPool(pool), [machineId, process, state, ...pairs]);
}

// ---------------------------------------------------------------- machine logs

export async function readMachineLogs(
  ctx: BrokerContext,
  pool: string,
  machineId: string,
  cursor: string,
  options: { process?: string; count?: number; blockMs?: number; connection?: ReadConnection },
): Promise<{ entries: MachineLogEntry[]; cursor: string }> {
  const args: Arg[] = ['COUNT', options.count ?? 100];
  if (options.blockMs !== undefined) args.push('BLOCK', options.blockMs);
  const reply = (await redisFor(options.connection, ctx.redis).call(
    'XREAD', ...args, 'STREAMS', ctx.keys.machineLogs(checkedPool(pool), machineId), cursor,
  )) as XReadReply;
  const raw = reply?.[0]?.[1] ?? [];
  const entries: MachineLogEntry[] = [];
  for (const [id, flat] of raw) {
    const entry = machineLogEntry(id, flat);
    if (options.process === undefined || entry.process === options.process) entries.push(entry);
  }
  return { entries, cursor: raw.length > 0 ? raw[raw.length - 1]![0] : cursor };
}

export async function tailMachineLogs(ctx: BrokerContext, pool: string, machineId: string, options: { process?: string; limit?: number }): Promise<MachineLogEntry[]> {
  const key = ctx.keys.machineLogs(checkedPool(pool), machineId);
  const limit = options.limit ?? 100;
  const found: MachineLogEntry[] = [];
  let end = '+';
  // newest first, a chunk at a time, until enough match; the stream is capped, so this ends soon
  for (;;) {
    const chunk = await ctx.redis.xrevrange(key, end, '-', 'COUNT', 500);
    for (const [id, flat] of chunk) {
      const entry = machineLogEntry(id, flat);
      if (options.process === undefined || entry.process === options.process) found.push(entry);
      if (found.length >= limit) return found.reverse();
    }
    if (chunk.length < 500) return found.reverse();
    end = `(${chunk[chunk.length - 1]![0]}`;
  }
}

/** The id of the newest line of a machine's log stream ('0-0' when empty): a cursor for "only what comes next". */
export async function latestMachineLogId(ctx: BrokerContext, pool: string, machineId: string): Promise<string> {
  const newest = await ctx.redis.xrevrange(ctx.keys.machineLogs(checkedPool(pool), machineId), '+', '-', 'COUNT', 1);
  return newest[0]?.[0] ?? '0-0';
}

/** An output line as the machine agent appends it (MachineLogEntry without the id Redis gives it). */
export type MachineLogLine = Omit<MachineLogEntry, 'id'>;

/**
 * Appends output lines to the machine's capped log stream (MAXLEN ~ `maxLen`),
 * in one pipeline. Returns how many were written and the first error of those
 * that were not; rejects only when the pipeline as a whole failed.
 */
export async function appendMachineLogs(
  ctx: BrokerContext,
  pool: string,
  machineId: string,
  lines: readonly MachineLogLine[],
  maxLen: number,
): Promise<{ written: number; failed: number; error?: Error }> {
  const key = ctx.keys.machineLogs(checkedPool(pool), machineId);
  const pipeline = ctx.redis.pipeline();
  for (const { process, stream, line, ts } of lines) {
    pipeline.xadd(key, 'MAXLEN', '~', maxLen, '*', 'process', process, 'stream', stream, 'line', line, 'ts', ts);
  }
  const replies = (await pipeline.exec()) ?? [];
  let failed = 0;
  let error: Error | undefined;
  for (const [each] of replies) {
    if (!each) continue;
    failed += 1;
    error ??= each;
  }
  return { written: lines.length - failed, failed, error: error || undefined };
}
