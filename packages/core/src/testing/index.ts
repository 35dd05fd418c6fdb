export * from './redis-server';
export * from './redis-cluster';
