import { setTimeout as sleep } from 'node:timers/promises';
import { type AssetStoreSpec, Broker, brokerConfigFromEnv, fallbackRules, openRedis, type RedisClient, type ConnectorSpec, type SupervisorMessage, type WorkerProcessConfig, type WorkerProcessMessage, httpModelProvider, startTracing, type Tracing } from '@emp/core';
import { type Logger, pino } from 'pino';
import type { AssetStore } from './assets/asset-store';
import { localDirectoryStore } from './assets/local-directory-store';
import type { Connector } from './connector';
import { comfyuiConnector } from './connectors/comfyui';
import { comfyuiRemoteConnector } from './connectors/comfyui-remote';
import { httpConnector } from './connectors/http';
import { ollamaConnector } from './connectors/ollama';
import { openaiConnector } from './connectors/openai';
import { simulationConnector } from './connectors/simulation';
import { Worker } from './worker';

const READY_POLL_MS = 500;

export interface WorkerProcessOptions {
  logger?: Logger;
  /** messages for the supervisor; process.send when the process has an IPC channel */
  report?: (message: WorkerProcessMessage) => void;
}

export interface RunningWorkerProcess {
  /** resolves once the worker runs (after its services answered); rejects when it cannot start */
  readonly started: Promise<Worker>;
  /**
   * Stops: before the worker started, stops waiting; after, drains it (running
   * jobs get `grace_ms`, then go back to the queue as infrastructure failures,
   * not charged to their attempts), marks it offline and closes Redis.
   */
  stop(): Promise<void>;
  /**
   * Acts on a message from the supervisor: new capabilities (registers again
   * with them, or starts with them); a load (answered by a `load_done`).
   */
  handle(message: SupervisorMessage): Promise<void>;
}

/**
 * One worker as a process of its own, the way a machine agent runs it: waits
 * until the services it drives answer, registers (a fresh process: whatever an
 * earlier process under its id held goes back at once) and claims until stopped.
 */
export function runWorkerProcess(config: WorkerProcessConfig, options: WorkerProcessOptions = {}): RunningWorkerProcess {
  const base = options.logger ?? pino({ name: 'emp-worker', level: config.log_level });
  // the Worker adds these to its own lines; these are for the lines before it exists
  const logger = base.child({ worker_id: config.worker_id, machine_id: config.machine_id, pool: config.pool });
  const report = options.report ?? toSupervisor;
  const waiting = new AbortController();
  let redis: RedisClient | undefined;
  let worker: Worker | undefined;
  let tracing: Tracing | undefined;
  // changes the supervisor sent before the worker existed are what it starts with
  let capabilityChanges: Extract<SupervisorMessage, { type: 'capabilities' }>['capabilities'] = {};

  const started = (async () => {
    const assets = config.assets ? await assetStoreOf(config.assets) : undefined;
    const connectors = config.connectors.map((spec) => connectorOf(spec, assets));
    if (config.wait_for.length > 0) {
      report({ type: 'waiting', urls: config.wait_for });
      await untilServicesAnswer(config.wait_for, config.ready_timeout_ms, waiting.signal, logger);
    }
    // several hosts in the URL (or EMP_REDIS_CLUSTER=1): a Redis Cluster, opened to ride out a failover
    redis = openRedis(config.redis_url, { lazyConnect: true });
    redis.on('error', (error: unknown) => logger.debug({ err: error }, 'redis connection error'));
    await redis.connect();
    const broker = await Broker.connect({
      redis,
      // an empty namespace, region or deployment_env (an empty environment variable, say) counts as unset
      // EMP_POOLS / EMP_DEFAULT_POOL: the pools (and their profiles) the stack routes to, inherited from the agent
      config: { ...brokerConfigFromEnv(process.env), namespace: config.namespace || undefined, leaseMs: config.lease_ms, affinityWaitMs: config.affinity_wait_ms },
    });
    waiting.signal.throwIfAborted();
    // off (and the SDK never loaded) unless OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set
    tracing = await startTracing({ serviceName: 'emp-worker', attributes: { 'emp.worker.id': config.worker_id, 'emp.machine.id': config.machine_id } });
    worker = new Worker({
      tracing,
      broker,
      id: config.worker_id,
      pool: config.pool,
      machineId: config.machine_id,
      capabilities: { ...config.capabilities, ...capabilityChanges, services: connectors.map((c) => c.service) },
      connectors,
      models: config.models_url ? httpModelProvider({ baseUrl: config.models_url }) : undefined,
      concurrency: config.concurrency,
      warmModels: config.warm_models,
      // its pool's cross-pool fallback rules (docs/pools.md)
      borrow: fallbackRules(broker.config, config.pool),
      logger: base,
      region: config.region || undefined,
      deploymentEnv: config.deployment_env || undefined,
    });
    const running = worker;
    for (const event of ['job:started', 'job:completed', 'job:failed', 'job:dropped'] as const) {
      // events fire while the job is still in the worker's active set: count once it has settled
      running.on(event, () => setImmediate(() => report({ type: 'jobs', running: running.running })));
    }
    await worker.start();
    report({ type: 'ready', worker_id: config.worker_id });
    return worker;
  })();
  started.catch(() => undefined); // the caller handles it; stop() must not surface it twice

  let stopping: Promise<void> | undefined;
  return {
    started,
    stop: () =>
      (stopping ??= (async () => {
        report({ type: 'stopping' });
        waiting.abort(new Error('stopped while starting'));
        await started.catch(() => undefined);
        await worker?.stop({ graceMs: config.grace_ms });
        await tracing?.shutdown().catch(() => undefined);
        redis?.disconnect();
      })()),
    async handle(message) {
      if (message.type === 'load') {
        const { id, model } = message;
        if (!worker) {
          report({ type: 'load_done', id, outcome: 'failed', message: `worker ${config.worker_id} has not started yet: no load` });
          return;
        }
        try {
          report({ type: 'load_done', id, outcome: 'ok', message: await worker.loadModel(model) });
        } catch (error) {
          report({ type: 'load_done', id, outcome: 'failed', message: (error as Error).message });
        }
        return;
      }
      capabilityChanges = { ...capabilityChanges, ...message.capabilities };
      await worker?.updateCapabilities(message.capabilities);
    },
  };
}

/** Sends to the supervisor over IPC when there is one (and it is still there); without one, nothing. */
function toSupervisor(message: WorkerProcessMessage): void {
  if (!process.connected) return;
  process.send?.(message, undefined, undefined, () => undefined);
}

/** Polls every URL until it answers 2xx; rejects after `timeoutMs` or when `signal` aborts. */
async function untilServicesAnswer(urls: string[], timeoutMs: number, signal: AbortSignal, logger: Logger): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const pending = new Set(urls);
  let lastProblem = new Map<string, string>();
  logger.info({ urls }, 'waiting for the service to answer before claiming');
  while (pending.size > 0) {
    signal.throwIfAborted();
    const problems = new Map<string, string>();
    await Promise.all(
      [...pending].map(async (url) => {
        try {
          const response = await fetch(url, { signal: AbortSignal.any([signal, AbortSignal.timeout(2_000)]) });
          await response.body?.cancel();
          if (response.ok) pending.delete(url);
          else problems.set(url, `HTTP ${response.status}`);
        } catch (error) {
          problems.set(url, (error as Error).message);
        }
      }),
    );
    lastProblem = problems;
    if (pending.size === 0) break;
    if (Date.now() > deadline) {
      const why = [...pending].map((url) => `${url} (${lastProblem.get(url) ?? 'no answer'})`).join(', ');
      throw new Error(`the service did not become ready within ${timeoutMs} ms: ${why}`);
    }
    await sleep(READY_POLL_MS, undefined, { signal }).catch(() => undefined);
  }
  logger.info({ urls }, 'service ready');
}

async function assetStoreOf(spec: AssetStoreSpec): Promise<AssetStore> {
  const { type, ...options } = spec;
  switch (type) {
    case 'local':
      return localDirectoryStore(options as { directory: string; baseUrl?: string });
    case 's3': {
      const { s3Store } = await import('./assets/s3-store');
      return s3Store(options as Parameters<typeof s3Store>[0]);
    }
    case 'azure': {
      const { azureBlobStore } = await import('./assets/azure-blob-store');
      return azureBlobStore(options as Parameters<typeof azureBlobStore>[0]);
    }
  }
}

function connectorOf(spec: ConnectorSpec, assets: AssetStore | undefined): Connector {
  switch (spec.type) {
    case 'simulation':
      return simulationConnector(spec.options);
    case 'comfyui':
      return comfyuiConnector({ ...spec.options, assets: assets! });
    case 'comfyui-remote':
      return comfyuiRemoteConnector({ ...spec.options, assets: assets! });
    case 'ollama':
      return ollamaConnector(spec.options);
    case 'openai':
      return openaiConnector(spec.options);
    case 'http':
      return httpConnector(spec.options);
  }
}
