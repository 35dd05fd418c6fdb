import { type ApiServerOptions, type ListeningApiServer, startApiServer } from '@emp/api';
import { Broker, type BrokerConfigInput, Scheduler, type SimulationOptions } from '@emp/core';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { type RedisProcess, startRedis } from './redis';
import { type Worker, startSimulationWorker } from './worker';

export { call } from './http';

export interface ApiStack {
  redis: RedisProcess;
  connection: Redis;
  broker: Broker;
  server: ListeningApiServer;
  url: string;
  worker?: Worker;
  stop(): Promise<void>;
}

/**
 * A private redis-server, a broker, a scheduler, the real API server on
 * 127.0.0.1 (a free port) and, when asked for, a real worker with the
 * simulation connector: what the API tests run against.
 */
export async function startApiStack(options: {
  auth?: boolean;
  worker?: SimulationOptions | false;
  server?: Partial<ApiServerOptions>;
  broker?: BrokerConfigInput;
} = {}): Promise<ApiStack> {
  const redis = await startRedis();
  const connection = new Redis(redis.url);
  const broker = await Broker.connect({ redis: connection, config: options.broker ?? {} });
  const logger = pino({ level: process.env.LOG_LEVEL || 'silent' });
  const scheduler = new Scheduler(broker, { logger });
  scheduler.start();
  let worker: Worker | undefined;
  if (options.worker !== false) {
    worker = await startSimulationWorker({
      broker,
      id: 'api-test-worker',
      pool: 'standard',
      machineId: 'api-test-machine',
      logger,
      simulation: options.worker,
    });
    await broker.registerMachine('standard', 'api-test-machine', 'ready');
  }
  // after the worker, so that the server's event readers follow its pool from the first job on
  const server = await startApiServer({ broker, logger, auth: options.auth ?? true, rateLimit: false, port: 0, ...options.server });
  return {
    redis,
    connection,
    broker,
    server,
    url: server.url,
    worker,
    async stop() {
      await worker?.stop({ graceMs: 0 });
      await server.close();
      await scheduler.stop();
      connection.disconnect();
      await redis.stop();
    },
  };
}
