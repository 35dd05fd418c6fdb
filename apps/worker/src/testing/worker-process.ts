/**
 * A worker in a process of its own, for tests that kill it without warning
 * (SIGKILL: no stop(), no hand-back) or ask it to stop (SIGTERM: a graceful
 * stop within EMP_GRACE_MS). Configured by environment: EMP_REDIS_URL,
 * EMP_WORKER_ID, EMP_POOL, EMP_LEASE_MS, EMP_DURATION_MS, EMP_GRACE_MS.
 * Prints `ready` once the worker runs, `stopped` once it stopped.
 */
import { Broker } from '@emp/core';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { simulationConnector } from '../connectors/simulation';
import { stopOnSignals } from '../shutdown';
import { Worker } from '../worker';

const env = (name: string, fallback?: string): string => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};

const redis = new Redis(env('EMP_REDIS_URL'));
const broker = await Broker.connect({ redis, config: { leaseMs: Number(env('EMP_LEASE_MS', '30000')) } });
const worker = new Worker({
  broker,
  id: env('EMP_WORKER_ID'),
  pool: env('EMP_POOL', 'standard'),
  capabilities: { services: ['simulation'] },
  connectors: [simulationConnector({ durationMs: Number(env('EMP_DURATION_MS', '60000')), steps: 10 })],
  logger: pino({ level: process.env.EMP_LOG_LEVEL ?? 'silent' }),
});
stopOnSignals(worker, {
  graceMs: Number(env('EMP_GRACE_MS', '10000')),
  onStopped: () => {
    redis.disconnect();
    process.stdout.write('stopped\n');
  },
});
await worker.start();
process.stdout.write('ready\n');
