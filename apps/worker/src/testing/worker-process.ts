/**
 * A worker in a process of its own, for tests that kill it without warning
 * (SIGKILL: no stop(), no hand-back). Configured by environment:
 * EMP_REDIS_URL, EMP_WORKER_ID, EMP_POOL, EMP_LEASE_MS, EMP_DURATION_MS.
 * Prints `ready` once the worker runs.
 */
import { Broker } from '@emp/core';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { simulationConnector } from '../connectors/simulation';
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
await worker.start();
process.stdout.write('ready\n');
