import type { ModelProvider } from '@emp/core';
import type { ModelCache } from './model-cache';

/** A ModelProvider for a worker running in the agent's own process: straight to the cache, no HTTP. */
export function inProcessModelProvider(cache: ModelCache): ModelProvider {
  return {
    async list() {
      const contents = cache.contents();
      return { on_disk: contents.models.map((m) => m.name), downloading: contents.downloads.map((d) => d.model) };
    },
    async ensure(names, onProgress, signal) {
      const lease = await cache.acquire(names, { onProgress, ...(signal && { signal }) });
      return async () => lease.release();
    },
  };
}
