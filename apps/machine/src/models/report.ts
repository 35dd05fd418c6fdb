import { encodeMachineStatus } from '@emp/core';
import type { ModelCacheContents } from './model-cache';

/** The most model names one service's capability lists (the broker's limit). */
const MAX_MODELS_PER_SERVICE = 10_000;

/**
 * The `models` capability of this machine's workers (packages/core
 * capabilities.ts): for each service, the models its jobs may name. With
 * `available` (the default) that is every model on disk plus every model the
 * catalog can download, since a job whose model is not here yet still runs
 * here after a download; `on_disk` lists only what is here now, for pools
 * that must never wait for a download.
 */
export function modelCapabilities(
  contents: ModelCacheContents,
  services: readonly string[],
  scope: 'available' | 'on_disk' = 'available',
): Record<string, string[]> {
  const names = new Set(contents.models.map((model) => model.name));
  if (scope === 'available') for (const name of contents.catalog) names.add(name);
  const models = [...names].sort().slice(0, MAX_MODELS_PER_SERVICE);
  return Object.fromEntries(services.map((service) => [service, models]));
}

/**
 * The model fields of a machine's status snapshot (`Broker.registerMachine`
 * fields, stored as strings on the machine hash): JSON lists of the models on
 * disk, in use (pinned by running jobs, so loaded or being loaded by their
 * service) and downloading, the cache's byte counts, and `models`, the models
 * on disk with their size and last use (what the monitor's Model cache panel
 * shows).
 */
export function machineModelFields(contents: ModelCacheContents, freeDiskBytes?: number): Record<string, string> {
  return encodeMachineStatus({
    models: contents.models.map((model) => ({ name: model.name, folder: model.folder, size_bytes: model.size_bytes, last_used: model.last_used, in_use: model.pins > 0 })),
    models_on_disk: contents.models.map((model) => model.name),
    models_in_use: contents.models.filter((model) => model.pins > 0).map((model) => model.name),
    models_downloading: contents.downloads,
    model_cache_used_bytes: contents.used_bytes,
    model_cache_budget_bytes: contents.budget_bytes,
    disk_free_bytes: freeDiskBytes,
  });
}
