/**
 * The harnesses tests share that neither load an app nor need the vitest
 * runner: redis-server and Redis Cluster, polling, temporary folders, HTTP
 * calls, and fake or emulated services on loopback. Other entries:
 * `@emp/testkit/private-redis` (a server per test file, with vitest hooks)
 * and the harnesses around an app, which load it: `/worker`, `/api`,
 * `/machine` and `/stack`.
 */
export * from './azurite';
export * from './fakes/fake-comfyui';
export * from './fakes/fake-http-service';
export * from './fakes/fake-ollama';
export * from './fakes/fake-openai';
export * from './fakes/http-fake';
export * from './http';
export * from './otlp-receiver';
export * from './redis';
export * from './redis-cluster';
export * from './s3rver';
export * from './temporary-folder';
export * from './wait-for';
