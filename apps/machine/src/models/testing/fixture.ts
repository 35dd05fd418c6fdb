// Only for test files: it registers vitest hooks.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { ModelCache, type ModelCacheOptions } from '../model-cache';
import { ModelServer } from './model-server';

export interface ModelFixture {
  /** the test file's model host (its request log cleared before each test) */
  readonly server: ModelServer;
  /** this test's models folder */
  readonly dir: string;
  /** a cache on this test's folder, closed after the test; quick retries and every progress report */
  openCache(catalog: ModelCacheOptions['catalog'], options?: Partial<ModelCacheOptions>): Promise<ModelCache>;
}

/** A model host for the file and a fresh models folder for each test. Call it at the top level of a test file. */
export function useModelFixture(): ModelFixture {
  let server: ModelServer | undefined;
  let dir: string | undefined;
  const caches: ModelCache[] = [];
  beforeAll(async () => {
    server = await ModelServer.start();
  });
  afterAll(async () => {
    await server?.close();
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'emp-models-'));
    server!.requests.length = 0;
  });
  afterEach(async () => {
    await Promise.all(caches.splice(0).map((cache) => cache.close()));
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return {
    get server() {
      if (!server) throw new Error('useModelFixture: the server starts in beforeAll; use it inside a test or hook');
      return server;
    },
    get dir() {
      if (!dir) throw new Error('useModelFixture: the folder is made in beforeEach; use it inside a test or hook');
      return dir;
    },
    async openCache(catalog, options = {}) {
      const cache = await ModelCache.open({
        dir: this.dir,
        budgetBytes: 10_000_000,
        catalog,
        logger: pino({ level: 'silent' }),
        retryDelayMs: 10,
        progressIntervalMs: 0,
        ...options,
      });
      caches.push(cache);
      return cache;
    },
  };
}
