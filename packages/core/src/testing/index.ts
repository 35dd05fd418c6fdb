export * from './redis-server';
export * from './redis-cluster';
export * from './stream-contract';
