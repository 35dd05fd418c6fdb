import { type MachineRecord, type RegistryEntry, type WorkerRecord, decodeMachine, decodeWorker, isInvalidRecord } from '@emp/core';
import type { FleetMachine } from '@emp/planning';

const MB = 1024 ** 2;
const GB = 1024 ** 3;

/**
 * A machine record as the placement reads it; null for a hash that is not a
 * machine record. With the pool's worker records, also what the warm loads
 * need: whether the machine is idle (every worker of it that is online is
 * idle), the models its workers report loaded, and its GPU memory.
 */
export function fleetMachine(pool: string, entry: RegistryEntry, workers?: readonly RegistryEntry[]): FleetMachine | null {
  const record = decodeMachine(pool, entry);
  if (isInvalidRecord(record)) return null;
  const machine = fromRecord(record);
  if (workers) withWorkers(machine, record, workersOf(pool, record.id, workers));
  return machine;
}

function workersOf(pool: string, machineId: string, entries: readonly RegistryEntry[]): WorkerRecord[] {
  const workers: WorkerRecord[] = [];
  for (const entry of entries) {
    const worker = decodeWorker(pool, entry);
    // a borrower is at home in another pool: its jobs there are not this pool's to read
    if (isInvalidRecord(worker) || worker.machine !== machineId || worker.state === 'offline' || worker.home_pool) continue;
    workers.push(worker);
  }
  return workers;
}

function withWorkers(machine: FleetMachine, record: MachineRecord, workers: WorkerRecord[]): void {
  machine.idle = workers.length > 0 && workers.every((w) => w.state === 'idle');
  const loaded = new Set(workers.flatMap((w) => (w.models && !('unreadable' in w.models) ? w.models.loaded : [])));
  for (const model of machine.models) if (loaded.has(model.name)) model.loaded = true;
  const listed = new Set(machine.models.map((m) => m.name));
  for (const name of loaded) if (!listed.has(name)) machine.models.push({ name, loaded: true });
  // the smallest GPU a model may be loaded into: the agent's nvidia-smi view, else what the workers registered
  const gpus = Array.isArray(record.gpus) ? record.gpus.map((g) => g.memory_total_mb * MB) : [];
  const registered = workers.map((w) => (w.capabilities && !('unreadable' in w.capabilities) ? w.capabilities.hardware?.gpu_memory_gb : undefined)).filter((gb): gb is number => gb !== undefined);
  const memory = gpus.length > 0 ? Math.min(...gpus) : registered.length > 0 ? Math.min(...registered) * GB : undefined;
  if (memory !== undefined && memory > 0) machine.gpuMemoryBytes = memory;
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
