import { hostname } from 'node:os';
import type { Broker } from '@emp/core';
import { Worker, simulationConnector } from '@emp/worker';
import type { Logger } from 'pino';

export interface SimulatedMachineOptions {
  broker: Broker;
  logger: Logger;
  pool?: string;
  machineId?: string;
  workers?: number;
  /** how often the machine's status snapshot is refreshed (ms) */
  heartbeatMs?: number;
  /** how long a simulated job runs */
  jobDurationMs?: number | { min: number; max: number };
}

export interface SimulatedMachine {
  readonly pool: string;
  readonly machineId: string;
  readonly workerIds: string[];
  stop(options?: { graceMs?: number }): Promise<void>;
}

/**
 * A machine without GPUs for trying the broker out locally: registers itself
 * like a real machine would and runs workers with the simulation connector.
 */
export async function startSimulatedMachine(options: SimulatedMachineOptions): Promise<SimulatedMachine> {
  const { broker } = options;
  const pool = options.pool ?? 'standard';
  const machineId = options.machineId ?? 'local-sim';
  const count = options.workers ?? 2;
  const logger = options.logger.child({ machine_id: machineId });
  const status = {
    kind: 'simulated',
    hostname: hostname(),
    pid: String(process.pid),
    workers: String(count),
    services: 'simulation',
    started_at: String(Date.now()),
  };

  await broker.registerMachine(pool, machineId, 'starting', status);
  const workers = Array.from({ length: count }, (_, index) => {
    const id = `${machineId}-worker-${index}`;
    return new Worker({
      broker,
      id,
      pool,
      machineId,
      capabilities: { services: ['simulation'] },
      connectors: [simulationConnector(options.jobDurationMs === undefined ? {} : { durationMs: options.jobDurationMs })],
      concurrency: 1,
      logger: options.logger, // the worker adds worker_id, machine_id and pool itself
    });
  });
  try {
    await Promise.all(workers.map((worker) => worker.start()));
  } catch (error) {
    await Promise.allSettled(workers.map((worker) => worker.stop({ graceMs: 0 })));
    await broker.registerMachine(pool, machineId, 'offline', status).catch(() => undefined);
    throw error;
  }
  await broker.registerMachine(pool, machineId, 'ready', status);
  logger.info({ pool, workers: count }, 'simulated machine ready');

  // the periodic full snapshot that keeps the machine from being shown offline
  const heartbeat = setInterval(() => {
    broker.registerMachine(pool, machineId, 'ready', status).catch((error: unknown) => {
      logger.warn({ err: error }, 'machine heartbeat failed');
    });
  }, options.heartbeatMs ?? 15_000);
  heartbeat.unref();

  let stopping: Promise<void> | undefined;
  return {
    pool,
    machineId,
    workerIds: workers.map((_, index) => `${machineId}-worker-${index}`),
    stop(stopOptions = {}) {
      stopping ??= (async () => {
        clearInterval(heartbeat);
        await broker.registerMachine(pool, machineId, 'stopping', status).catch(() => undefined);
        await Promise.all(workers.map((worker) => worker.stop(stopOptions)));
        await broker.registerMachine(pool, machineId, 'offline', status).catch(() => undefined);
        logger.info('simulated machine stopped');
      })();
      return stopping;
    },
  };
}
