import { type WorkerModels, decodeWorker, isUnreadable } from '@emp/core';
import type { Command } from 'commander';
import { cell, registerRegistryListing, since } from '../registry-listing';

export function registerWorkers(program: Command): void {
  registerRegistryListing(program, {
    command: 'workers',
    description: 'registered workers: state, machine, services, models held, last seen (offline ones stay listed)',
    plural: 'workers',
    empty: 'no workers have registered yet (`npm start` runs two simulated ones)',
    list: (broker, pool) => broker.workers(pool),
    decode: decodeWorker,
    headers: ['WORKER', 'MACHINE', 'STATE', 'FOR', 'LAST SEEN', 'SERVICES', 'SLOTS', 'MODELS'],
    row: (w, now) => [
      w.machine ?? '',
      cell(w, 'state', w.state, ''),
      since(now, w.state_since),
      since(now, w.last_seen, ' ago'),
      isUnreadable(w.capabilities) ? '?' : (w.capabilities?.services ?? []).join(','),
      cell(w, 'concurrency', w.concurrency === undefined ? undefined : String(w.concurrency), ''),
      isUnreadable(w.models) ? '?' : modelsCell(w.models),
    ],
  });
}

/** The models a worker holds: loaded ones by name, then how many more are on disk and downloading. */
export function modelsCell(models: WorkerModels | undefined): string {
  if (!models) return '';
  const parts = [models.loaded.join(',')];
  const onDisk = models.on_disk.filter((m) => !models.loaded.includes(m)).length;
  if (onDisk) parts.push(`+${onDisk} on disk`);
  if (models.downloading.length) parts.push(`${models.downloading.length} downloading`);
  return parts.filter(Boolean).join(' ');
}
