import { z } from 'zod';
import { WorkerModels } from './capabilities';
import { MACHINE_ACTIONS } from './broker/types';

/**
 * The worker and machine records of the registry (`<ns>:{<pool>}:worker:<id>`,
 * `...:machine:<id>`): flat Redis hashes of strings. Each field is declared
 * once here with its codec, whoever writes it (the Lua functions
 * register_worker, heartbeat, set_worker_state, register_machine,
 * machine_command(_done) and tick, or the machine agent's status snapshot);
 * writers on the TypeScript side encode through it and every reader decodes
 * through it. Decoding is per field: a corrupt field is reported (`problems`,
 * and `{ unreadable }` for a JSON one), never a crash of the listing.
 */

/** The machine agent's states (see apps/machine's status); `offline` is also set by the broker when a machine falls silent. */
export const MACHINE_STATES = ['starting', 'ready', 'degraded', 'draining', 'offline'] as const;
export type MachineState = (typeof MACHINE_STATES)[number];

/** A worker's states as set_worker_state and tick write them. */
export const WORKER_STATES = ['idle', 'busy', 'draining', 'offline'] as const;
export type WorkerState = (typeof WORKER_STATES)[number];

/** One GPU as the machine agent finds it (nvidia-smi). */
export const GpuInfo = z.object({
  index: z.number().int().min(0),
  name: z.string(),
  uuid: z.string().optional(),
  memory_total_mb: z.number().nonnegative(),
  memory_used_mb: z.number().nonnegative().optional(),
  utilization_pct: z.number().min(0).max(100).optional(),
  temperature_c: z.number().optional(),
});
export type GpuInfo = z.infer<typeof GpuInfo>;

/** The machine's hardware (`hardware`): its GPUs and what else discovery found. */
export const MachineHardware = z.looseObject({
  gpus: z.array(GpuInfo),
  cpu_cores: z.number().int().positive().optional(),
  ram_gb: z.number().positive().optional(),
  disk_free_gb: z.number().nonnegative().optional(),
  gpu_error: z.string().optional(),
});

/** A process the agent supervises, as the snapshot summarises it (the full view is at the agent's /status). */
export const ProcessSummary = z.looseObject({
  name: z.string().min(1),
  kind: z.string().optional(),
  state: z.string(),
  pid: z.number().int().optional(),
  restarts: z.number().int().nonnegative().optional(),
  gpu: z.number().int().optional(),
  last_exit: z.string().optional(),
  last_exit_at: z.number().optional(),
  ready: z.boolean().optional(),
  running: z.number().int().nonnegative().optional(),
  worker_id: z.string().optional(),
  reason: z.string().optional(),
});
export type ProcessSummary = z.infer<typeof ProcessSummary>;

/** A model on the machine's disk (`models`): its name, or the name with its size, last use and whether a job holds it. */
export const ModelOnDisk = z.union([
  z.string().min(1).transform((name) => ({ name })),
  z.looseObject({
    name: z.string().min(1),
    folder: z.string().optional(),
    size_bytes: z.number().nonnegative().optional(),
    last_used: z.number().optional(),
    in_use: z.boolean().optional(),
    loaded: z.boolean().optional(),
  }),
]);
export type ModelOnDisk = z.output<typeof ModelOnDisk>;

/** A model download in progress (`models_downloading`). */
export const ModelDownload = z.looseObject({ model: z.string().min(1), received: z.number().nonnegative(), total: z.number().positive().optional() });
export type ModelDownload = z.infer<typeof ModelDownload>;

/** A custom node's install result (`custom_nodes`), credentials already removed from its URL. */
export const CustomNodeInstall = z.looseObject({ name: z.string(), url: z.string(), status: z.string() });

/**
 * What a worker registered it can do, read for display: the shape of
 * WorkerCapabilities (stored as its canonical JSON), lenient about fields a
 * newer worker may add.
 */
export const WorkerCapabilitiesRecord = z.looseObject({
  services: z.array(z.string()).optional(),
  /** per service (`{comfyui: [...]}`, `'*'` = any), or one list */
  models: z.union([z.array(z.string()), z.record(z.string(), z.union([z.literal('*'), z.array(z.string())]))]).optional(),
  custom_nodes: z.array(z.string()).optional(),
  hardware: z.looseObject({ gpu_memory_gb: z.number().optional(), gpu_model: z.string().optional() }).optional(),
});
export type WorkerCapabilitiesRecord = z.infer<typeof WorkerCapabilitiesRecord>;

// ---------------------------------------------------------------- field codecs

/** A JSON field that was present but could not be read, with why. */
export interface Unreadable {
  unreadable: string;
}
/** A JSON field as decoded: absent, its value, or why it is unreadable. */
export type Field<T> = T | Unreadable | undefined;

export function isUnreadable(value: unknown): value is Unreadable {
  return typeof value === 'object' && value !== null && 'unreadable' in value;
}

interface Codec<T> {
  /** what a writer passes */
  schema: z.ZodType<T>;
  encode(value: T): string;
  /** the value of a non-empty stored text; throws with the reason when it is not one */
  decode(text: string): T;
}

const text: Codec<string> = { schema: z.string(), encode: (v) => v, decode: (v) => v };
function number(check: z.ZodNumber, what: string): Codec<number> {
  return {
    schema: check,
    encode: String,
    decode: (stored) => {
      const parsed = check.safeParse(Number(stored));
      if (!parsed.success) throw new Error(`${JSON.stringify(stored)} is not ${what}`);
      return parsed.data;
    },
  };
}
const time = number(z.number().int().positive(), 'a time in ms');
const count = number(z.number().int().nonnegative(), 'a whole number');
/** ', '-separated names (what `emp machines` shows as is) */
const list: Codec<string[]> = {
  schema: z.array(z.string().min(1).refine((s) => !s.includes(','), 'a listed name has no comma')),
  encode: (v) => v.join(', '),
  decode: (v) => v.split(',').map((s) => s.trim()).filter(Boolean),
};
function oneOf<const T extends readonly [string, ...string[]]>(values: T): Codec<T[number]> {
  const schema = z.enum(values);
  return {
    schema: schema as unknown as z.ZodType<T[number]>,
    encode: (v) => v,
    decode: (stored) => {
      const parsed = schema.safeParse(stored);
      if (!parsed.success) throw new Error(`${JSON.stringify(stored)} is not one of ${values.join(', ')}`);
      return parsed.data;
    },
  };
}
function json<S extends z.ZodType>(schema: S): Codec<z.output<S>> & { json: true } {
  return {
    json: true,
    schema: schema as unknown as z.ZodType<z.output<S>>,
    encode: (v) => JSON.stringify(v),
    decode: (stored) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(stored);
      } catch {
        throw new Error('not JSON');
      }
      const result = schema.safeParse(parsed);
      if (result.success) return result.data;
      const issue = result.error.issues[0]!;
      throw Object.assign(new Error(issue.message), { path: issue.path.map(String) });
    },
  };
}

type Codecs = Record<string, Codec<any>>;
type Decoded<C extends Codecs> = {
  -readonly [K in keyof C]?: C[K] extends { json: true } ? Field<ReturnType<C[K]['decode']>> : ReturnType<C[K]['decode']>;
};

/** Fields the registry functions (Lua) write on both kinds of record. */
const registryFields = {
  id: text,
  last_seen: time,
  registered_at: time,
  state_since: time,
} satisfies Codecs;

/** A worker's hash. */
export const WORKER_FIELDS = {
  ...registryFields,
  /** set_worker_state and tick; absent for a moment on a restarted worker's registration */
  state: oneOf(WORKER_STATES),
  // register_worker, from Broker.registerWorker (encodeWorkerRegistration)
  machine: text,
  profile: text,
  pool: text,
  /** a borrower's own pool (cross-pool fallback): it takes jobs here only through claim_fallback */
  home_pool: text,
  concurrency: count,
  version: text,
  hostname: text,
  capabilities: json(WorkerCapabilitiesRecord),
  // heartbeat and claim bookkeeping
  heartbeat_at: time,
  waiting: text,
  cursor: text,
  // worker_models (Broker.reportModels); dropped when the worker goes offline
  models: json(WorkerModels),
  models_at: time,
} satisfies Codecs;

/** What the machine agent writes with each status snapshot (register_machine's fields). */
export const MACHINE_STATUS_FIELDS = {
  hostname: text,
  pid: count,
  agent_started_at: time,
  status_at: time,
  region: text,
  health_url: text,
  gpus: json(z.array(GpuInfo)),
  hardware: json(MachineHardware),
  workers: list,
  services: list,
  processes: json(z.array(ProcessSummary)),
  custom_nodes_state: oneOf(['installing', 'installed']),
  custom_nodes: json(z.array(CustomNodeInstall)),
  models: json(z.array(ModelOnDisk)),
  models_on_disk: json(z.array(z.string())),
  models_in_use: json(z.array(z.string())),
  models_downloading: json(z.array(ModelDownload)),
  model_cache_used_bytes: count,
  model_cache_budget_bytes: count,
  disk_free_bytes: count,
} satisfies Codecs;

/** A machine's hash. */
export const MACHINE_FIELDS = {
  ...registryFields,
  /** register_machine (the agent's state) and tick ('offline') */
  state: oneOf(MACHINE_STATES),
  ...MACHINE_STATUS_FIELDS,
  // machine_command
  last_command: oneOf(MACHINE_ACTIONS),
  last_command_id: text,
  last_command_service: text,
  /** prefetch and evict: the model ('' for the other actions; absent before models came) */
  last_command_model: text,
  last_command_at: time,
  // machine_command_done
  last_command_handled: text,
  last_command_outcome: oneOf(['ok', 'failed']),
  last_command_message: text,
  last_command_done_at: time,
} satisfies Codecs;

export type WorkerFields = Decoded<typeof WORKER_FIELDS>;
export type MachineFields = Decoded<typeof MACHINE_FIELDS>;

type Input<C extends Codecs> = { [K in keyof C]?: z.input<C[K]['schema']> };
export type MachineStatusInput = Input<typeof MACHINE_STATUS_FIELDS>;

/**
 * A record as read: the decoded fields, every field as stored (for a detail
 * view, and fields this code does not know), and what could not be read.
 */
export type RegistryRecord<F> = F & {
  pool: string;
  id: string;
  /** `<field>: <why>` for each field present but unreadable (the field is then absent, or `{ unreadable }` for JSON) */
  problems: string[];
  stored: Record<string, string>;
};
/** A hash that is not a record at all (no id): listed as such rather than dropped or crashed on. */
export interface InvalidRecord {
  pool: string;
  invalid: string;
  stored: Record<string, string>;
}
export type WorkerRecord = RegistryRecord<WorkerFields>;
export type MachineRecord = RegistryRecord<MachineFields>;

export function isInvalidRecord(record: object): record is InvalidRecord {
  return 'invalid' in record;
}

function encode<C extends Codecs>(codecs: C, values: Input<C>, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  const problems: string[] = [];
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined) continue;
    const codec = codecs[name];
    if (!codec) {
      problems.push(`${name}: not a field of the ${what}`);
      continue;
    }
    const parsed = codec.schema.safeParse(value);
    // the value as given (checked): a parse may drop or reshape what a newer reader would want
    if (!parsed.success) problems.push(`${name}: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
    else out[name] = codec.encode(value);
  }
  if (problems.length) throw new Error(`the ${what} cannot be written: ${problems.join('; ')}`);
  return out;
}

function decode<C extends Codecs>(codecs: C, pool: string, hash: Record<string, unknown>): RegistryRecord<Decoded<C>> | InvalidRecord {
  const stored: Record<string, string> = {};
  for (const [key, value] of Object.entries(hash)) {
    if (value === undefined || value === null) continue;
    // the API's worker list sends capabilities parsed already
    stored[key] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  if (!stored.id) return { pool, invalid: 'no id: not a registry record', stored };
  const record: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [name, codec] of Object.entries(codecs)) {
    const value = stored[name];
    if (value === undefined || value === '') continue;
    try {
      record[name] = codec.decode(value);
    } catch (error) {
      const where = [name, ...((error as { path?: string[] }).path ?? [])].join('.');
      const why = `${where}: ${(error as Error).message}`;
      problems.push(why);
      if ('json' in codec) record[name] = { unreadable: why } satisfies Unreadable;
    }
  }
  return { ...(record as Decoded<C>), pool, id: stored.id, problems, stored };
}

/** The fields of the machine agent's status snapshot, as register_machine stores them. Throws on a field it would write wrong. */
export function encodeMachineStatus(status: MachineStatusInput): Record<string, string> {
  return encode(MACHINE_STATUS_FIELDS, status, 'machine status');
}

/**
 * The fields Broker.registerWorker stores beside the ones register_worker sets
 * itself; `capabilities` is the capability profile's canonical JSON (its text
 * is what workers with equal capabilities share).
 */
export function encodeWorkerRegistration(registration: { pool: string; concurrency: number; version?: string; hostname?: string; home_pool?: string }, capabilities: string): Record<string, string> {
  const fields = encode(WORKER_FIELDS, registration, 'worker registration');
  try {
    WORKER_FIELDS.capabilities.decode(capabilities);
  } catch (error) {
    throw new Error(`the worker registration cannot be written: capabilities: ${(error as Error).message}`);
  }
  return { ...fields, capabilities };
}

export function decodeWorker(pool: string, hash: Record<string, unknown>): WorkerRecord | InvalidRecord {
  return decode(WORKER_FIELDS, pool, hash);
}

export function decodeMachine(pool: string, hash: Record<string, unknown>): MachineRecord | InvalidRecord {
  return decode(MACHINE_FIELDS, pool, hash);
}
