import { type ListeningApiServer, startApiServer } from '@emp/api';
import { Broker, type BrokerConfigInput, Scheduler } from '@emp/core';
import { MachineAgent, localMachineConfig } from '@emp/machine';
import { type MonitorServer, ensureMonitorBundle, originsOf, startMonitorServer } from '@emp/monitor';
import { Planner, type PlannerConfigInput } from '@emp/planner';
import { type WebhookService, startWebhookService } from '@emp/webhooks';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { connectRedis, type RedisTarget } from './connection';
import { startEmbeddedRedis } from './embedded-redis';

export interface LocalStackOptions {
  /** an existing Redis to use; without it an embedded redis-server is started */
  redis?: RedisTarget;
  /** `.emp`: where the embedded Redis keeps its data and URL */
  stateDir: string;
  /** preferred port of the embedded Redis */
  redisPort: number;
  /** workers on the local machine (each with its simulated service) */
  workers: number;
  /** how long a simulated job runs */
  jobDurationMs?: number | { min: number; max: number };
  /** how long stopping workers may wait for their running jobs */
  graceMs?: number;
  /**
   * the HTTP + WebSocket API: preferred port (a free one when taken), address,
   * whether keys are required, and whether a job's webhook may target
   * loopback and private hosts (unset: EMP_WEBHOOK_ALLOW_PRIVATE decides)
   */
  api: { host: string; port: number; auth: boolean; webhookAllowPrivate?: boolean };
  /** the monitor page (on the API's address): preferred port, a free one when taken; false: none */
  monitor?: { port: number } | false;
  /**
   * the webhook delivery service (on the API's address): preferred port, a free one when
   * taken; false: none. It may deliver to loopback and private hosts when the API lets
   * jobs name them (the same setting)
   */
  webhooks?: { port: number } | false;
  /** the planner (model placement and capacity hints, docs/planner.md): its settings; false: none */
  planner?: PlannerConfigInput | false;
  /** broker settings (lease and offline-detection timings, ...), also given to the machine's workers; the defaults otherwise */
  broker?: BrokerConfigInput;
  /** how often the machine agent sends its full status snapshot (ms; default 15 s) */
  machineStatusIntervalMs?: number;
  logger: Logger;
}

/** The local machine agent, as the banner shows it. */
export interface LocalMachine {
  machineId: string;
  pool: string;
  workerIds: string[];
  processes: string[];
  healthUrl: string;
  logsDir: string;
  /** false when its workers were not ready within the wait (they keep starting) */
  ready: boolean;
}

export interface LocalStack {
  redisUrl: string;
  /** the folder of the embedded Redis's data; absent when an existing Redis is used */
  redisDir?: string;
  machine: LocalMachine;
  /** the agent itself, for tests that act on its processes */
  agent: MachineAgent;
  api: { url: string; auth: boolean; webhookAllowPrivate: boolean };
  /** the monitor page's address; absent when it was not started */
  monitor?: { url: string };
  /** the webhook service's address; absent when it was not started */
  webhooks?: { url: string; allowPrivate: boolean };
  /** the planner's round interval; absent when it was not started */
  planner?: { intervalMs: number };
  stop(): Promise<void>;
}

/** How long `npm start` waits for the local machine's workers before it prints the banner anyway. */
const MACHINE_READY_WAIT_MS = 60_000;

/**
 * Everything `npm start` runs: Redis (embedded unless given), the broker's
 * function library, a scheduler, the API, the webhook service, the planner, and one local machine agent (no
 * GPUs, a simulated service per worker, workers as child processes), the same
 * agent a GPU machine runs. Stopping reverses the order, letting running jobs
 * finish first.
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
    const broker = await Broker.connect({ redis, config: options.broker });

    const scheduler = new Scheduler(broker, { logger: logger.child({ component: 'scheduler' }) });
    scheduler.start();
    undo.push(() => scheduler.stop());

    const logsDir = join(options.stateDir, 'logs');
    const config = await localMachineConfig({
      workers: options.workers,
      logsDir,
      // Ctrl-C lets running jobs finish first (a spot machine's default is to hand them back at once)
      graceMs: options.graceMs ?? 10_000,
      jobDurationMs: options.jobDurationMs,
      leaseMs: options.broker?.leaseMs,
      statusIntervalMs: options.machineStatusIntervalMs,
    });
    const agent = new MachineAgent({ config, redisUrl: target.url, logger: logger.child({ component: 'machine' }) });
    undo.push(() => agent.stop());
    await agent.start();
    const ready = await agent.untilReady(MACHINE_READY_WAIT_MS);
    if (!ready) logger.warn({ health: `${agent.url}/ready` }, 'the local machine\'s workers are not ready yet; they keep starting');
    const processes = agent.status().processes;
    const machine: LocalMachine = {
      machineId: config.machine_id,
      pool: config.pool,
      workerIds: processes.flatMap((p) => (p.workerId ? [p.workerId] : [])),
      processes: processes.map((p) => p.name),
      healthUrl: agent.url!,
      logsDir,
      ready,
    };

    // the monitor listens first: the API must know its origin to let its page call (CORS)
    let monitor: MonitorServer | undefined;
    if (options.monitor !== false) {
      await ensureMonitorBundle(logger.child({ component: 'monitor' }));
      monitor = await startMonitorServer({ host: options.api.host, port: options.monitor?.port ?? 3333, logger });
      undo.push(() => monitor!.close());
    }

    const api = await startApi(broker, options, monitor ? originsOf(monitor.url) : []);
    // stopped before the machine (undo runs backwards), so no request waits on a worker that is going away
    undo.push(() => api.close());
    monitor?.setApi({ url: api.url, auth: options.api.auth });

    let webhooks: WebhookService | undefined;
    if (options.webhooks !== false) {
      webhooks = await startWebhooks(broker, options, api.webhookAllowPrivate);
      // stopped before the API and the machine: deliveries in flight finish (or stay leased in Redis)
      undo.push(() => webhooks!.close());
    }

    let planner: Planner | undefined;
    if (options.planner !== false) {
      planner = new Planner({ broker, logger: logger.child({ component: 'planner' }), config: options.planner });
      planner.start();
      // stopped first (undo runs backwards): no command goes to a machine that is stopping
      undo.push(() => planner!.close());
    }

    let stopping: Promise<void> | undefined;
    return {
      redisUrl: target.url,
      redisDir,
      machine,
      agent,
      api: { url: api.url, auth: options.api.auth, webhookAllowPrivate: api.webhookAllowPrivate },
      monitor: monitor && { url: monitor.url },
      webhooks: webhooks && { url: webhooks.url, allowPrivate: webhooks.config.allowPrivate },
      planner: planner && { intervalMs: planner.config.intervalMs },
      stop: () => (stopping ??= unwind()),
    };
  } catch (error) {
    await unwind();
    throw error;
  }
}

async function startApi(broker: Broker, options: LocalStackOptions, corsOrigins: string[]): Promise<ListeningApiServer> {
  const logger = options.logger.child({ component: 'api' });
  // the local asset store's folder, served at <api>/v1/assets/ so result URLs work out of the box
  const settings = {
    broker,
    logger,
    auth: options.api.auth,
    host: options.api.host,
    assetsDir: join(options.stateDir, 'assets'),
    corsOrigins,
    webhookAllowPrivate: options.api.webhookAllowPrivate,
  };
  try {
    return await startApiServer({ ...settings, port: options.api.port });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
    logger.warn({ wanted: options.api.port }, 'api port taken; using a free one');
    return startApiServer({ ...settings, port: 0 });
  }
}

async function startWebhooks(broker: Broker, options: LocalStackOptions, allowPrivate: boolean): Promise<WebhookService> {
  const logger = options.logger.child({ component: 'webhooks' });
  const config = { host: options.api.host, port: options.webhooks ? options.webhooks.port : 3332, allowPrivate };
  try {
    return await startWebhookService({ broker, logger, config });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
    logger.warn({ wanted: config.port }, 'webhooks port taken; using a free one');
    return startWebhookService({ broker, logger, config: { ...config, port: 0 } });
  }
}
