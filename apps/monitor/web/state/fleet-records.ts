import {
  type Field,
  type GpuInfo,
  type ModelDownload,
  type ModelOnDisk,
  type ProcessSummary,
  type WorkerCapabilitiesRecord,
  type WorkerModels,
  decodeMachine,
  decodeWorker,
  isInvalidRecord,
} from '@emp/core';

/**
 * Machines and workers as the page shows them, made from the registry's
 * records as core/registry.ts decodes them (the one declaration of every
 * field): a malformed field is shown as unknown with the reason, never a
 * crash and never a guess.
 */

export { type Field, type ModelDownload, type ModelOnDisk, type Unreadable, isUnreadable } from '@emp/core';
export type GpuStatus = GpuInfo;
export type ProcessStatus = ProcessSummary;
export type WorkerCapabilitiesView = WorkerCapabilitiesRecord;

/** The model cache's totals and downloads, from the agent's `model_cache_*` and `models_downloading` fields. */
export interface ModelCacheView {
  usedBytes?: number;
  budgetBytes?: number;
  diskFreeBytes?: number;
  downloads: Field<ModelDownload[]>;
}

export interface MachineRecord {
  key: string;
  pool: string;
  id: string;
  state: string;
  stateSince?: number;
  lastSeen?: number;
  registeredAt?: number;
  /** when its agent started */
  startedAt?: number;
  region?: string;
  hostname?: string;
  services: string[];
  gpus: Field<GpuStatus[]>;
  processes: Field<ProcessStatus[]>;
  models: Field<ModelOnDisk[]>;
  /** present when the machine reports a model cache */
  modelCache?: ModelCacheView;
  lastCommand?: { action: string; id: string; service?: string; at?: number };
  /** the last command the machine reported finished, from its status snapshot */
  lastCommandDone?: { id: string; outcome: 'ok' | 'failed'; message?: string; at?: number };
  /** `<field>: <why>` for each stored field that could not be read */
  problems?: string[];
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
  /** the models it last reported holding (loaded, on disk, downloading): what claims prefer */
  models?: Field<WorkerModels>;
  /** the job it runs now, as far as the feed told */
  currentJob?: string;
  problems?: string[];
  fields: Record<string, string>;
}

export const recordKey = (pool: string, id: string): string => `${pool}/${id}`;

/** A machine from its hash (the snapshot's entries carry their pool), or undefined for a hash that is no record. */
export function parseMachine(raw: Record<string, unknown>): MachineRecord | undefined {
  if (typeof raw.pool !== 'string' || !raw.pool) return undefined;
  const record = decodeMachine(raw.pool, raw);
  if (isInvalidRecord(record)) return undefined;
  const { pool, id, stored } = record;
  const lastCommand = record.last_command && record.last_command_id
    ? {
        action: record.last_command,
        id: record.last_command_id,
        service: record.last_command_service || undefined,
        at: record.last_command_at || undefined,
      }
    : undefined;
  const lastCommandDone = record.last_command_handled && record.last_command_outcome
    ? {
        id: record.last_command_handled,
        outcome: record.last_command_outcome,
        message: record.last_command_message || undefined,
        at: record.last_command_done_at || undefined,
      }
    : undefined;
  const modelCache: ModelCacheView | undefined =
    stored.model_cache_budget_bytes === undefined && stored.models_downloading === undefined
      ? undefined
      : {
          usedBytes: record.model_cache_used_bytes,
          budgetBytes: record.model_cache_budget_bytes,
          diskFreeBytes: record.disk_free_bytes,
          downloads: record.models_downloading,
        };
  return {
    key: recordKey(pool, id),
    pool,
    id,
    // a state outside the vocabulary is shown as stored (and named in problems)
    state: record.state ?? (stored.state || 'unknown'),
    stateSince: record.state_since,
    lastSeen: record.last_seen,
    registeredAt: record.registered_at,
    startedAt: record.agent_started_at,
    region: record.region || undefined,
    hostname: record.hostname || undefined,
    services: record.services ?? [],
    gpus: record.gpus,
    processes: record.processes,
    models: record.models,
    modelCache,
    lastCommand,
    lastCommandDone,
    problems: record.problems.length ? record.problems : undefined,
    fields: stored,
  };
}

/** A worker from its hash (`/v1/workers` sends `capabilities` parsed already), or undefined for a hash that is no record. */
export function parseWorker(raw: Record<string, unknown>): WorkerRecord | undefined {
  if (typeof raw.pool !== 'string' || !raw.pool) return undefined;
  const record = decodeWorker(raw.pool, raw);
  if (isInvalidRecord(record)) return undefined;
  const { pool, id, stored } = record;
  return {
    key: recordKey(pool, id),
    pool,
    id,
    machine: record.machine ?? '',
    state: record.state ?? (stored.state || 'starting'),
    stateSince: record.state_since,
    lastSeen: record.last_seen,
    registeredAt: record.registered_at,
    capabilities: record.capabilities,
    models: record.models,
    problems: record.problems.length ? record.problems : undefined,
    fields: stored,
  };
}
