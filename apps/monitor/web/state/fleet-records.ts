import { z } from 'zod';

/**
 * Machines and workers as the registry keeps them: flat Redis hashes of
 * strings, some fields JSON written by a machine agent. Every field is parsed
 * on its own and defensively: a malformed one is shown as unknown (with the
 * reason), never a crash and never a guess.
 */

/** A field that was present but could not be read. */
export interface Unreadable {
  unreadable: string;
}

export type Field<T> = T | Unreadable | undefined;

export function isUnreadable(value: unknown): value is Unreadable {
  return typeof value === 'object' && value !== null && 'unreadable' in value;
}

/** One GPU as the agent reports it (the shape of @emp/machine's GpuInfo, read leniently). */
export const GpuStatus = z
  .object({
    index: z.number().int().min(0),
    name: z.string(),
    memory_total_mb: z.number().nonnegative(),
    memory_used_mb: z.number().nonnegative().optional(),
    utilization_pct: z.number().min(0).max(100).optional(),
    temperature_c: z.number().optional(),
  })
  .loose();
export type GpuStatus = z.infer<typeof GpuStatus>;

/** A worker or service process the agent supervises. */
export const ProcessStatus = z
  .object({
    name: z.string().min(1),
    kind: z.string().optional(),
    state: z.string(),
    pid: z.number().int().optional(),
    restarts: z.number().int().nonnegative().optional(),
    gpu: z.number().int().optional(),
    exit_code: z.number().int().nullable().optional(),
    since: z.number().optional(),
  })
  .loose();
export type ProcessStatus = z.infer<typeof ProcessStatus>;

/**
 * A model on the machine's disk: a name, or an object with its size, when it
 * was last used and whether a running job holds it (the agent's `models`
 * field, written by @emp/machine's machineModelFields).
 */
export const ModelOnDisk = z.union([
  z.string().min(1).transform((name) => ({ name })),
  z
    .object({
      name: z.string().min(1),
      folder: z.string().optional(),
      size_bytes: z.number().nonnegative().optional(),
      last_used: z.number().optional(),
      in_use: z.boolean().optional(),
      loaded: z.boolean().optional(),
    })
    .loose(),
]);
export type ModelOnDisk = z.output<typeof ModelOnDisk>;

/** A model download in progress (the agent's `models_downloading`). */
export const ModelDownload = z
  .object({ model: z.string().min(1), received: z.number().nonnegative(), total: z.number().positive().optional() })
  .loose();
export type ModelDownload = z.infer<typeof ModelDownload>;

/** The model cache's totals and downloads, from the agent's `model_cache_*` and `models_downloading` fields. */
export interface ModelCacheView {
  usedBytes?: number;
  budgetBytes?: number;
  diskFreeBytes?: number;
  downloads: Field<ModelDownload[]>;
}

/** What a worker says it can do (the core's WorkerCapabilities, read leniently: only what a card shows). */
export const WorkerCapabilitiesView = z
  .object({
    services: z.array(z.string()).optional(),
    /** per service (what workers register: `{comfyui: [...]}`, `'*'` = any), or one list */
    models: z.union([z.array(z.string()), z.record(z.string(), z.union([z.literal('*'), z.array(z.string())]))]).optional(),
    custom_nodes: z.array(z.string()).optional(),
    hardware: z.object({ gpu_memory_gb: z.number().optional(), gpu_model: z.string().optional() }).loose().optional(),
  })
  .loose();
export type WorkerCapabilitiesView = z.infer<typeof WorkerCapabilitiesView>;

export interface MachineRecord {
  key: string;
  pool: string;
  id: string;
  state: string;
  stateSince?: number;
  lastSeen?: number;
  registeredAt?: number;
  startedAt?: number;
  region?: string;
  hostname?: string;
  kind?: string;
  services: string[];
  gpus: Field<GpuStatus[]>;
  processes: Field<ProcessStatus[]>;
  models: Field<ModelOnDisk[]>;
  /** present when the machine reports a model cache */
  modelCache?: ModelCacheView;
  lastCommand?: { action: string; id: string; service?: string; at?: number };
  /** the last command the machine reported finished, from its status snapshot */
  lastCommandDone?: { id: string; outcome: 'ok' | 'failed'; message?: string; at?: number };
  /** every field as stored, for the detail page */
  fields: Record<string, string>;
}

export interface WorkerRecord {
  key: string;
  pool: string;
  id: string;
  machine: string;
  state: string;
  stateSince?: number;
  lastSeen?: number;
  registeredAt?: number;
  capabilities: Field<WorkerCapabilitiesView>;
  /** the job it runs now, as far as the feed told */
  currentJob?: string;
  fields: Record<string, string>;
}

export const recordKey = (pool: string, id: string): string => `${pool}/${id}`;

/** Hash values as strings: the snapshot sends them raw, `/v1/workers` parses `capabilities` already. */
function stringFields(raw: Record<string, unknown>): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (value === undefined || value === null) continue;
    fields[key] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  return fields;
}

function byteCount(text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined;
  const value = Number(text);
  return Number.isFinite(value) && value >= 0 ? value : undefined;
}

function modelCacheOf(fields: Record<string, string>): ModelCacheView | undefined {
  if (fields.model_cache_budget_bytes === undefined && fields.models_downloading === undefined) return undefined;
  const usedBytes = byteCount(fields.model_cache_used_bytes);
  const budgetBytes = byteCount(fields.model_cache_budget_bytes);
  const diskFreeBytes = byteCount(fields.disk_free_bytes);
  return {
    ...(usedBytes !== undefined ? { usedBytes } : {}),
    ...(budgetBytes !== undefined ? { budgetBytes } : {}),
    ...(diskFreeBytes !== undefined ? { diskFreeBytes } : {}),
    downloads: jsonField(fields.models_downloading, z.array(ModelDownload), 'models_downloading'),
  };
}

function timestamp(text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined;
  const value = Number(text);
  return Number.isFinite(value) && value > 0 ? value : undefined;
}

/** A JSON field read with its schema: absent, the value, or why it is unreadable. */
function jsonField<T extends z.ZodType>(text: string | undefined, schema: T, name: string): Field<z.output<T>> {
  if (text === undefined || text === '') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { unreadable: `${name}: not JSON` };
  }
  const result = schema.safeParse(parsed);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = [name, ...(issue?.path ?? [])].join('.');
  return { unreadable: `${path}: ${issue?.message ?? 'unexpected shape'}` };
}

export function parseMachine(raw: Record<string, unknown>): MachineRecord | undefined {
  const fields = stringFields(raw);
  const { id, pool } = fields;
  if (!id || !pool) return undefined;
  const lastCommand = fields.last_command && fields.last_command_id
    ? {
        action: fields.last_command,
        id: fields.last_command_id,
        ...(fields.last_command_service ? { service: fields.last_command_service } : {}),
        ...(timestamp(fields.last_command_at) ? { at: timestamp(fields.last_command_at)! } : {}),
      }
    : undefined;
  const doneOutcome = fields.last_command_outcome;
  const lastCommandDone: MachineRecord['lastCommandDone'] = fields.last_command_handled && (doneOutcome === 'ok' || doneOutcome === 'failed')
    ? {
        id: fields.last_command_handled,
        outcome: doneOutcome,
        ...(fields.last_command_message ? { message: fields.last_command_message } : {}),
        ...(timestamp(fields.last_command_done_at) ? { at: timestamp(fields.last_command_done_at)! } : {}),
      }
    : undefined;
  const modelCache = modelCacheOf(fields);
  return {
    key: recordKey(pool, id),
    pool,
    id,
    state: fields.state || 'unknown',
    stateSince: timestamp(fields.state_since),
    lastSeen: timestamp(fields.last_seen),
    registeredAt: timestamp(fields.registered_at),
    startedAt: timestamp(fields.started_at),
    region: fields.region || undefined,
    hostname: fields.hostname || undefined,
    kind: fields.kind || undefined,
    services: (fields.services ?? '').split(',').map((s) => s.trim()).filter(Boolean),
    gpus: jsonField(fields.gpus, z.array(GpuStatus), 'gpus'),
    processes: jsonField(fields.processes, z.array(ProcessStatus), 'processes'),
    models: jsonField(fields.models, z.array(ModelOnDisk), 'models'),
    ...(modelCache ? { modelCache } : {}),
    ...(lastCommand ? { lastCommand } : {}),
    ...(lastCommandDone ? { lastCommandDone } : {}),
    fields,
  };
}

export function parseWorker(raw: Record<string, unknown>): WorkerRecord | undefined {
  const fields = stringFields(raw);
  const { id, pool } = fields;
  if (!id || !pool) return undefined;
  return {
    key: recordKey(pool, id),
    pool,
    id,
    machine: fields.machine ?? '',
    state: fields.state || 'starting',
    stateSince: timestamp(fields.state_since),
    lastSeen: timestamp(fields.last_seen),
    registeredAt: timestamp(fields.registered_at),
    capabilities: jsonField(fields.capabilities, WorkerCapabilitiesView, 'capabilities'),
    fields,
  };
}
