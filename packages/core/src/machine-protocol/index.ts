/**
 * What the machine agent and the worker processes it runs agree on: the
 * connectors a machine's config may name, a worker process's config and IPC
 * messages, and the model routes a worker waits on. Neither app imports the
 * other; both import this.
 */
export * from './connector-options';
export * from './model-provider';
export * from './stop-reason';
export * from './worker-process';
