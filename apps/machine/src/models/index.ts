export { INDEX_FILE, ModelFileName } from './cache-index';
export { inProcessModelProvider } from './in-process-provider';
export { type CachedModel, type EvictOutcome, ModelCache, type ModelCacheContents, type ModelCacheEvents, type ModelCacheOptions, type ModelLease } from './model-cache';
export { machineModelFields, modelCapabilities } from './report';
export { registerModelRoutes } from './routes';
