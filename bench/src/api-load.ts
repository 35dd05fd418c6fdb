import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Broker } from '@emp/core';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import type { ApiServerMessage } from './api-server-process';
import { ForkedProcess, forkReady } from './forked';
import type { WorkersMessage } from './workers-process';

export interface ApiLoadOptions {
  redisUrl: string;
  /** how long each load runs (the generator stops on time, not on a count) */
  durationSeconds: number;
  /** concurrent HTTP connections */
  connections: number;
  /** simulation workers completing the jobs (in a process of their own) */
  workers: number;
  /**
   * an unmeasured load of this many seconds on each route before its measured
   * one (then the backlog drained), so that the figures are a warm server's: a
   * server in service is warm, and a 10 s run that starts cold counts the JIT's
   * first second in its tail
   */
  warmupSeconds: number;
}

export interface ApiLoadResult {
  /** HTTP submits answered per second */
  submitsPerSec: number;
  submitP50Ms: number;
  submitP99Ms: number;
  /** submit with ?wait: the answer comes when the job has completed */
  completedPerSec: number;
  completedP50Ms: number;
  completedP99Ms: number;
  /** answers that were not 2xx (should be 0) */
  errors: number;
  /** CPU time of the API process per plain submit (µs) */
  apiCpuMicrosPerSubmit: number;
}

export async function load(url: string, path: string, key: string, options: Pick<ApiLoadOptions, 'connections' | 'durationSeconds'>) {
  return autocannon({
    url: `${url}${path}`,
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ service: 'simulation', payload: { duration_ms: 0, steps: 0 } }),
    connections: options.connections,
    duration: options.durationSeconds,
  });
}

/**
 * Submits through the API (auth on, as in production; the server in a process
 * of its own, api-server-process.ts) under a time-bounded load, each after a
 * warm-up on the same route (`warmupSeconds`, not measured): first plain
 * submits (throughput and latency of the HTTP submit), then submits that wait
 * for the job (`?wait=30`), whose latency is submit to completed by a real
 * worker with the simulation connector (the workers run in a process of their
 * own, workers-process.ts).
 */
export async function measureApiLoad(options: ApiLoadOptions): Promise<ApiLoadResult> {
  const redis = new Redis(options.redisUrl);
  const broker = await Broker.connect({ redis });
  const workers = await WorkersProcess.start(options.redisUrl, options.workers);
  const server = await ApiServerProcess.start(options.redisUrl);
  const warmUp = async (path: string) => {
    await load(server.url, path, server.key, { connections: options.connections, durationSeconds: options.warmupSeconds });
    await drain(broker);
  };
  try {
    await warmUp('/v1/jobs');
    const cpuBefore = await server.cpuMicros();
    const submits = await load(server.url, '/v1/jobs', server.key, options);
    const cpuAfter = await server.cpuMicros();
    await drain(broker);
    await warmUp('/v1/jobs?wait=30');
    const completed = await load(server.url, '/v1/jobs?wait=30', server.key, options);
    return {
      submitsPerSec: submits.requests.average,
      submitP50Ms: submits.latency.p50,
      submitP99Ms: submits.latency.p99,
      completedPerSec: completed.requests.average,
      completedP50Ms: completed.latency.p50,
      completedP99Ms: completed.latency.p99,
      errors: submits.non2xx + submits.errors + completed.non2xx + completed.errors,
      apiCpuMicrosPerSubmit: submits.requests.total > 0 ? (cpuAfter - cpuBefore) / submits.requests.total : Number.NaN,
    };
  } finally {
    await server.stop();
    await workers.stop();
    await redis.quit().catch(() => redis.disconnect());
  }
}

/** A forked bench process that answers `'cpu'` with `{type: 'cpu', micros}` (api-server-process.ts, workers-process.ts). */
class MeteredProcess<Ready extends { type: 'ready' }> extends ForkedProcess<Ready> {
  /** The process's CPU time so far (user + system, µs). */
  cpuMicros(): Promise<number> {
    return new Promise((resolve) => {
      const onMessage = (message: { type: string; micros?: number }) => {
        if (message.type !== 'cpu') return;
        this.child.off('message', onMessage);
        resolve(message.micros!);
      };
      this.child.on('message', onMessage);
      this.child.send('cpu');
    });
  }
}

/**
 * `count` workers of pool `standard` running the simulation connector with no-op
 * jobs (the `?wait` runs' completions), in a process of their own (workers-process.ts).
 */
export class WorkersProcess extends MeteredProcess<WorkersMessage & { type: 'ready' }> {
  static async start(redisUrl: string, count: number): Promise<WorkersProcess> {
    const entry = fileURLToPath(new URL('./workers-process.ts', import.meta.url));
    return new WorkersProcess(await forkReady(entry, 'the bench workers', { env: { EMP_REDIS_URL: redisUrl, EMP_BENCH_WORKERS: String(count) } }));
  }
}

/** The forked api-server-process.ts: its URL and key, its CPU time, a way to stop it. */
export class ApiServerProcess extends MeteredProcess<ApiServerMessage & { type: 'ready' }> {
  get url(): string {
    return this.ready.url;
  }

  get key(): string {
    return this.ready.key;
  }

  /** `checkout`: the root of another checkout whose API to run (api-side-by-side.ts), default this one's. */
  static async start(redisUrl: string, checkout?: string): Promise<ApiServerProcess> {
    const entry = checkout ? join(checkout, 'bench/src/api-server-process.ts') : fileURLToPath(new URL('./api-server-process.ts', import.meta.url));
    return new ApiServerProcess(
      await forkReady(entry, 'the API', {
        env: { EMP_REDIS_URL: redisUrl },
        // in the other checkout, so that its tsx and its packages load
        ...(checkout ? { cwd: checkout } : {}),
        // EMP_BENCH_API_CPU_PROF=<dir>: a V8 CPU profile of the API process, for finding where its time goes
        ...(process.env.EMP_BENCH_API_CPU_PROF ? { cpuProfileDir: process.env.EMP_BENCH_API_CPU_PROF } : {}),
      }),
    );
  }
}

/** Lets the workers finish the backlog of the submit run, so it does not slow the next one. */
export async function drain(broker: Broker): Promise<void> {
  for (;;) {
    const stats = await broker.queueStats('standard');
    if (stats.classes.every((c) => c.depth === 0)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
