import { hostname } from 'node:os';
import { Broker, type RedisClient } from '@emp/core';
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
  /** how long a restart or drain lets running jobs finish (ms) */
  commandGraceMs?: number;
}

export interface SimulatedMachine {
  readonly pool: string;
  readonly machineId: string;
  readonly workerIds: string[];
  /**
   * Kills one worker as a crash would: its Redis connection is cut and it
   * says no goodbye, so it stays registered as it was until the scheduler's
   * offline detection turns it offline.
   */
  crashWorker(workerId: string): Promise<void>;
  stop(options?: { graceMs?: number }): Promise<void>;
}

interface RunningWorker {
  worker: Worker;
  /** the worker's own connection, as a worker process on a real machine has */
  redis: RedisClient;
}

/**
 * A machine without GPUs for trying the broker out locally: registers itself
 * like a real machine would, runs workers with the simulation connector, and
 * obeys the operator's drain and restart commands from its command stream,
 * reporting the outcome in its status snapshot.
 */
export async function startSimulatedMachine(options: SimulatedMachineOptions): Promise<SimulatedMachine> {
  const { broker } = options;
  const pool = options.pool ?? 'standard';
  const machineId = options.machineId ?? 'local-sim';
  const count = options.workers ?? 2;
  const logger = options.logger.child({ machine_id: machineId });
  const workerIds = Array.from({ length: count }, (_, index) => `${machineId}-worker-${index}`);
  const restarts = new Map<string, number>(workerIds.map((id) => [id, 0]));
  const running = new Map<string, RunningWorker>();
  let state = 'starting';
  const status: Record<string, string> = {
    kind: 'simulated',
    hostname: hostname(),
    region: 'local',
    pid: String(process.pid),
    workers: String(count),
    services: 'simulation',
    started_at: String(Date.now()),
    gpus: '[]',
  };
  const report = (next = state, extra: Record<string, string> = {}) => {
    state = next;
    Object.assign(status, extra);
    const processes = workerIds.map((id) => ({ name: id, kind: 'worker', state: running.has(id) ? 'running' : 'exited', restarts: restarts.get(id) ?? 0 }));
    return broker.registerMachine(pool, machineId, state, { ...status, processes: JSON.stringify(processes) });
  };

  const startWorker = async (id: string): Promise<void> => {
    const redis = broker.redis.duplicate();
    redis.on('error', (error: unknown) => logger.debug({ err: error, worker_id: id }, 'worker connection error'));
    const own = await Broker.connect({ redis, config: broker.config, skipLibraryLoad: true });
    const worker = new Worker({
      broker: own,
      id,
      pool,
      machineId,
      capabilities: { services: ['simulation'] },
      connectors: [simulationConnector(options.jobDurationMs === undefined ? {} : { durationMs: options.jobDurationMs })],
      concurrency: 1,
      logger: options.logger, // the worker adds worker_id, machine_id and pool itself
    });
    running.set(id, { worker, redis });
    try {
      await worker.start();
    } catch (error) {
      running.delete(id);
      redis.disconnect();
      throw error;
    }
  };
  const stopWorker = async (id: string, graceMs: number): Promise<void> => {
    const entry = running.get(id);
    if (!entry) return;
    running.delete(id);
    await entry.worker.stop({ graceMs });
    entry.redis.disconnect();
  };

  await report('starting');
  try {
    await Promise.all(workerIds.map(startWorker));
  } catch (error) {
    await Promise.allSettled(workerIds.map((id) => stopWorker(id, 0)));
    await report('offline').catch(() => undefined);
    throw error;
  }
  await report('ready');
  logger.info({ pool, workers: count }, 'simulated machine ready');

  // the periodic full snapshot that keeps the machine from being shown offline
  const heartbeat = setInterval(() => {
    report().catch((error: unknown) => logger.warn({ err: error }, 'machine heartbeat failed'));
  }, options.heartbeatMs ?? 15_000);
  heartbeat.unref();

  const commandGraceMs = options.commandGraceMs ?? 5_000;
  const execute = async (id: string, action: string, service: string): Promise<{ outcome: 'ok' | 'failed'; message: string }> => {
    if (service && service !== 'simulation') return { outcome: 'failed', message: `this machine runs no service ${service}` };
    if (action === 'drain') {
      await report('draining');
      await Promise.all(workerIds.map((w) => stopWorker(w, commandGraceMs)));
      return { outcome: 'ok', message: `drained: ${workerIds.length} workers stopped after their running jobs` };
    }
    if (action === 'restart') {
      await report('restarting');
      await Promise.all(workerIds.map((w) => stopWorker(w, commandGraceMs)));
      for (const w of workerIds) restarts.set(w, (restarts.get(w) ?? 0) + 1);
      await Promise.all(workerIds.map(startWorker));
      await report('ready');
      return { outcome: 'ok', message: `restarted ${workerIds.length} workers` };
    }
    logger.warn({ command: id, action }, 'unknown machine command');
    return { outcome: 'failed', message: `unknown action ${action}` };
  };

  // the operator's commands, read from now on (one blocking connection of the machine's own)
  const commands = broker.redis.duplicate();
  commands.on('error', (error: unknown) => logger.debug({ err: error }, 'command connection error'));
  let stopped = false;
  const obeying = (async () => {
    let cursor = '$';
    const stream = broker.keys.machineCommands(pool, machineId);
    while (!stopped) {
      let entries: Array<[string, string[]]> = [];
      try {
        const reply = (await commands.xread('COUNT', 10, 'BLOCK', 1_000, 'STREAMS', stream, cursor)) as Array<[string, Array<[string, string[]]>]> | null;
        entries = reply?.[0]?.[1] ?? [];
      } catch (error) {
        if (!stopped) logger.warn({ err: error }, 'reading machine commands failed');
        continue;
      }
      for (const [id, flat] of entries) {
        cursor = id;
        const fields = Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i]!, flat[2 * i + 1]!]));
        logger.info({ command: id, action: fields.action, service: fields.service || undefined }, 'executing operator command');
        let done: { outcome: 'ok' | 'failed'; message: string };
        try {
          done = await execute(id, fields.action ?? '', fields.service ?? '');
        } catch (error) {
          done = { outcome: 'failed', message: (error as Error).message };
        }
        await report(state, { last_command_done: id, last_command_outcome: done.outcome, last_command_message: done.message, last_command_done_at: String(Date.now()) }).catch(() => undefined);
      }
    }
  })();

  let stopping: Promise<void> | undefined;
  return {
    pool,
    machineId,
    workerIds,
    async crashWorker(workerId) {
      const entry = running.get(workerId);
      if (!entry) throw new Error(`worker ${workerId} is not running on ${machineId}`);
      running.delete(workerId);
      logger.info({ worker_id: workerId }, 'simulating a crash: the worker loses its connection and says no goodbye');
      entry.redis.disconnect();
      await entry.worker.stop({ graceMs: 0 });
    },
    stop(stopOptions = {}) {
      stopping ??= (async () => {
        stopped = true;
        clearInterval(heartbeat);
        await obeying;
        commands.disconnect();
        await report('stopping').catch(() => undefined);
        await Promise.all(workerIds.map((id) => stopWorker(id, stopOptions.graceMs ?? 10_000)));
        await report('offline').catch(() => undefined);
        logger.info('simulated machine stopped');
      })();
      return stopping;
    },
  };
}
