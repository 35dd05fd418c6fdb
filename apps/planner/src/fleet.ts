import { type MachineRecord, type RegistryEntry, decodeMachine, decodeWorker, isInvalidRecord } from '@emp/core';
import type { FleetMachine } from '@emp/planning';

/** A machine record as the placement reads it; null for a hash that is not a machine record. */
export function fleetMachine(pool: string, entry: RegistryEntry): FleetMachine | null {
  const record = decodeMachine(pool, entry);
  if (isInvalidRecord(record)) return null;
  return fromRecord(record);
}

function fromRecord(record: MachineRecord): FleetMachine {
  // a JSON field that could not be read ({ unreadable }) counts as empty
  const models = Array.isArray(record.models) ? record.models : [];
  const downloading = Array.isArray(record.models_downloading) ? record.models_downloading.map((d) => d.model) : [];
  const inUse = Array.isArray(record.models_in_use) ? record.models_in_use : [];
  // a model listed only by name in models_on_disk still holds a copy (its size is then unknown here)
  const listed = new Set(models.map((m) => m.name));
  const onDiskOnly = Array.isArray(record.models_on_disk) ? record.models_on_disk.filter((name) => !listed.has(name)).map((name) => ({ name })) : [];
  const machine: FleetMachine = {
    id: record.id,
    models: [...models.map((m) => ({ ...m, in_use: ('in_use' in m && m.in_use === true) || inUse.includes(m.name) })), ...onDiskOnly],
    downloading,
    inUse,
  };
  if (record.state !== undefined) machine.state = record.state;
  if (record.model_cache_budget_bytes !== undefined) machine.budgetBytes = record.model_cache_budget_bytes;
  if (record.model_cache_used_bytes !== undefined) machine.usedBytes = record.model_cache_used_bytes;
  return machine;
}

/** Why a model must not be evicted from the machine right now (in use, loaded, downloading), or undefined when it may be. */
export function evictionBlocker(machine: FleetMachine, model: string): string | undefined {
  if (machine.inUse?.includes(model)) return 'in use';
  if (machine.downloading.includes(model)) return 'downloading';
  const held = machine.models.find((m) => m.name === model);
  if (held?.in_use) return 'in use';
  if (held?.loaded) return 'loaded';
  return undefined;
}

/** Worker slots per ready machine of the pool (the mean, at least 1): the servers of the capacity model per machine. */
export function workersPerMachine(pool: string, workers: RegistryEntry[], machines: FleetMachine[]): number {
  const ready = new Set(machines.filter((m) => m.state === 'ready').map((m) => m.id));
  let slots = 0;
  for (const entry of workers) {
    const worker = decodeWorker(pool, entry);
    if (isInvalidRecord(worker) || worker.state === 'offline' || !worker.machine || !ready.has(worker.machine)) continue;
    slots += worker.concurrency ?? 1;
  }
  return ready.size === 0 ? 1 : Math.max(1, Math.round(slots / ready.size));
}
