import { Broker } from '@emp/core';
import { Worker, simulationConnector } from '@emp/worker';
import { Redis } from 'ioredis';
import { pino } from 'pino';

/**
 * The simulation workers of the `api` bench section in a process of their own
 * (api-load.ts forks it), as workers run in production, on machines of their
 * own: in the load generator's process their claims and completions held up
 * autocannon's event loop, and the time a response waited for it was counted
 * as the API's latency. `EMP_BENCH_WORKERS` workers of pool `standard`, each of
 * concurrency 1, run no-op simulation jobs. Reports over IPC
 * `{type: 'ready'}`, `{type: 'cpu', micros}` when sent `'cpu'`, and exits after
 * `'stop'` once its workers have stopped.
 */
export type WorkersMessage = { type: 'ready' } | { type: 'cpu'; micros: number } | { type: 'error'; message: string };

const send = (message: WorkersMessage) => process.send?.(message);

const count = Number(process.env.EMP_BENCH_WORKERS);
const redis = new Redis(process.env.EMP_REDIS_URL!, { maxRetriesPerRequest: null });
try {
  if (!Number.isInteger(count) || count < 1) throw new Error(`EMP_BENCH_WORKERS must be a positive integer, got ${process.env.EMP_BENCH_WORKERS}`);
  const broker = await Broker.connect({ redis });
  const logger = pino({ level: 'warn' });
  const workers = Array.from({ length: count }, (_, i) => new Worker({
    broker,
    id: `bench-api-worker-${i}`,
    pool: 'standard',
    capabilities: { services: ['simulation'] },
    connectors: [simulationConnector({ durationMs: 0, steps: 0 })],
    logger,
  }));
  await Promise.all(workers.map((w) => w.start()));
  process.on('message', (message) => {
    if (message === 'cpu') {
      const cpu = process.cpuUsage();
      send({ type: 'cpu', micros: cpu.user + cpu.system });
    }
    if (message !== 'stop') return;
    void Promise.all(workers.map((w) => w.stop({ graceMs: 5_000 }))).finally(async () => {
      await redis.quit().catch(() => redis.disconnect());
      process.exit(0);
    });
  });
  send({ type: 'ready' });
} catch (error) {
  send({ type: 'error', message: (error as Error).message });
  process.exit(1);
}
