import { startApiServer } from '@emp/api';
import { Broker, Scheduler } from '@emp/core';
import type { Logger } from 'pino';
import { connectRedis, type RedisTarget } from './connection';
import { startEmbeddedRedis } from './embedded-redis';
import { startSimulatedMachine, type SimulatedMachine } from './simulated-machine';

export interface LocalStackOptions {
  /** an existing Redis to use; without it an embedded redis-server is started */
  redis?: RedisTarget;
  /** `.emp`: where the embedded Redis keeps its data and URL */
  stateDir: string;
  /** preferred port of the embedded Redis */
  redisPort: number;
  /** workers on the simulated machine */
  workers: number;
  /** how long a simulated job runs */
  jobDurationMs?: number | { min: number; max: number };
  /** how long stopping workers may wait for their running jobs */
  graceMs?: number;
  /** the HTTP + WebSocket API's port (0: any free one); it listens on loopback */
  apiPort: number;
  /** 'keys': requests need an API key (emp keys create); 'off': everyone is an operator */
  auth: 'keys' | 'off';
  logger: Logger;
}

export interface LocalStack {
  redisUrl: string;
  /** the folder of the embedded Redis's data; absent when an existing Redis is used */
  redisDir?: string;
  /** where the API listens, e.g. http://127.0.0.1:3331 */
  apiUrl: string;
  machine: SimulatedMachine;
  stop(): Promise<void>;
}

/**
 * Everything `npm start` runs, in one process: Redis (embedded unless given),
 * the broker's function library, a scheduler, and a simulated machine with
 * workers. Stopping reverses the order, letting running jobs finish first.
 */
export async function startLocalStack(options: LocalStackOptions): Promise<LocalStack> {
  const { logger } = options;
  const undo: Array<() => Promise<void>> = [];
  const unwind = async (): Promise<void> => {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch (error) {
        logger.error({ err: error }, 'error while stopping the local stack');
      }
    }
    undo.length = 0;
  };

  try {
    let target = options.redis;
    let redisDir: string | undefined;
    if (!target) {
      const embedded = await startEmbeddedRedis({ stateDir: options.stateDir, port: options.redisPort, logger });
      undo.push(() => embedded.stop());
      target = { url: embedded.url, source: 'embedded' };
      redisDir = embedded.dir;
      logger.info({ url: embedded.url, dir: redisDir }, 'embedded redis started');
    }

    const redis = await connectRedis(target, { persistent: true });
    undo.push(async () => {
      await redis.quit().catch(() => redis.disconnect());
    });
    const broker = await Broker.connect({ redis });

    const scheduler = new Scheduler(broker, { logger: logger.child({ component: 'scheduler' }) });
    scheduler.start();
    undo.push(() => scheduler.stop());

    const api = await startApiServer({ broker, logger: logger.child({ component: 'api' }), auth: options.auth, port: options.apiPort });
    undo.push(() => api.close());
    const address = api.server.address();
    const apiUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : options.apiPort}`;

    const machine = await startSimulatedMachine({
      broker,
      logger,
      workers: options.workers,
      ...(options.jobDurationMs === undefined ? {} : { jobDurationMs: options.jobDurationMs }),
    });
    undo.push(() => machine.stop({ graceMs: options.graceMs ?? 10_000 }));

    let stopping: Promise<void> | undefined;
    return {
      redisUrl: target.url,
      ...(redisDir ? { redisDir } : {}),
      apiUrl,
      machine,
      stop: () => (stopping ??= unwind()),
    };
  } catch (error) {
    await unwind();
    throw error;
  }
}
