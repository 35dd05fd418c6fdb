/**
 * What a browser page may import from the core (the `browser` export
 * condition of `@emp/core`, used by bundlers such as Vite): the shapes of
 * jobs, requirements, events, registry records and the wire protocol, without Redis, Lua or Node.
 */
export * from './api-protocol';
export * from './wait-digest';
export * from './config';
export * from './defined-only';
export * from './errors';
export * from './events';
export * from './job';
export * from './planner';
export * from './registry';
export * from './requirements';
export * from './validation';
export * from './webhook-target';
