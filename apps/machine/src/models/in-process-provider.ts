import type { ModelProvider } from '@emp/core';
import type { ModelCache } from './model-cache';

/** A ModelProvider for a worker running in the agent's own process: straight to the cache, no HTTP. */
export function inProcessModelProvider(cache: ModelCache): ModelProvider {
  return {
    async ensure(names, onProgress, signal) {
      const lease = await cache.acquire(names, { onProgress, ...(signal && { signal }) });
      return async () => lease.release();
    },
  };
}
