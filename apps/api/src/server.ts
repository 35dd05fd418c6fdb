import { type ApiKeyStore, type Broker, startTracing, type Tracing } from '@emp/core';
import cors from '@fastify/cors';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import { validatorCompiler } from 'fastify-type-provider-zod';
import { type Logger, pino } from 'pino';
import { authentication, requireRouteAccess } from './auth/plugin';
import { AssetUrlSigner } from './auth/signed-urls';
import { errorHandling } from './errors';
import { EventHub } from './live/event-hub';
import { type LiveOptions, liveRoutes } from './live/socket';
import { sseRoutes } from './live/sse';
import { metrics } from './metrics';
import { openApi } from './openapi';
import { QueueEta } from './queue-eta';
import { DEFAULT_QUEUE_SAMPLE_MS, QueueSampler, queueHistoryRoutes } from './queue-history';
import { DEFAULT_RATE_LIMITS, type RateLimitOptions, rateLimits } from './rate-limit';
import { assetRoutes } from './routes/assets';
import { fleetRoutes } from './routes/fleet';
import { healthRoutes } from './routes/health';
import { identityRoutes } from './routes/identity';
import { jobRoutes } from './routes/jobs';
import { workflowRoutes } from './routes/workflows';
import { machineEventRoutes } from './routes/machine-events';
import { plannerRoutes } from './routes/planner';
import { machineLogRoutes } from './routes/machine-logs';
import { operatorRoutes } from './routes/operator';
import { webhookEndpointRoutes } from './routes/webhook-endpoints';
import { webhookRoutes } from './routes/webhooks';
import { requestTracing } from './tracing';

declare module 'fastify' {
  interface FastifyInstance {
    broker: Broker;
    hub: EventHub;
    apiKeys: ApiKeyStore;
    queueEta: QueueEta;
  }
}

export const DEFAULT_API_PORT = 3331;

export interface ApiServerOptions {
  /** a connected broker; its Redis connection belongs to the caller */
  broker: Broker;
  logger?: Logger;
  /** API keys required (default true); off only for local development */
  auth?: boolean;
  /** request limits per key and per address without a valid key (defaults: DEFAULT_RATE_LIMITS); false turns them off */
  rateLimit?: Partial<RateLimitOptions> | false;
  /** largest request body (default 2 MiB: a 1 MiB payload and the rest of a job) */
  bodyLimitBytes?: number;
  live?: Partial<LiveOptions>;
  /** serve this folder (the workers' local asset store) under /v1/assets/ */
  assetsDir?: string;
  /**
   * HMAC secret of signed asset URLs (at least 32 bytes; default EMP_ASSET_URL_SECRET); without either, one
   * generated once and kept in Redis, shared by every instance on it
   */
  assetUrlSecret?: string;
  /** web origins (e.g. the monitor's `http://127.0.0.1:3333`) whose pages may call the API from a browser; none by default */
  corsOrigins?: string[];
  /** how long a verified API key is trusted without asking Redis (default 5 s); revocations end it at once */
  apiKeyCacheMs?: number;
  /** how often this instance records the queue report for /v1/queues/history (default EMP_QUEUE_SAMPLE_MS, else 30 s); false: it records none */
  queueSampleMs?: number | false;
  /**
   * let a job's webhook.url name loopback, private, link-local and other
   * non-public hosts (local development only; the scheme is http(s) regardless).
   * Default: EMP_WEBHOOK_ALLOW_PRIVATE=1 (or true) in the environment, else off.
   */
  webhookAllowPrivate?: boolean;
  /** where request spans go; default: started here from OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT (off without one) and shut down on close */
  tracing?: Tracing;
}

/** Whether an environment variable is switched on (`1`, `true`, `yes`, `on`). */
function envFlag(value: string | undefined): boolean {
  return /^(1|true|yes|on)$/i.test(value?.trim() ?? '');
}

/** A positive whole number of milliseconds from an environment variable; undefined when unset or not one. */
function envMs(value: string | undefined): number | undefined {
  const ms = Number(value?.trim() || NaN);
  return Number.isInteger(ms) && ms > 0 ? ms : undefined;
}

export interface ApiServer {
  app: FastifyInstance;
  hub: EventHub;
  /** whether webhooks may target private hosts here (the option, or EMP_WEBHOOK_ALLOW_PRIVATE) */
  webhookAllowPrivate: boolean;
  close(): Promise<void>;
}

/**
 * The API as a Fastify instance: one plugin per responsibility (errors, auth,
 * rate limits, metrics, OpenAPI, routes), request schemas from @emp/core's zod
 * schemas, and the event hub that feeds SSE, WebSockets and waiting requests.
 */
export async function buildApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const logger = options.logger ?? pino({ name: 'emp-api', level: process.env.LOG_LEVEL || 'info' });
  const app: FastifyInstance = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // a log line per request would be an info line on the hot path; the metrics count requests instead
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'request_id' }),
    bodyLimit: options.bodyLimitBytes ?? 2 * 1024 * 1024,
    forceCloseConnections: true,
    routerOptions: { maxParamLength: 200 },
  });
  app.setValidatorCompiler(validatorCompiler);
  // Response schemas document the answers (OpenAPI) and type the handlers; answers are written
  // as they are: checking our own output on every request would cost the hot path and could
  // drop a field the schema lacks, and the tests hold each route's real answers to its schema.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));

  const { broker } = options;
  const tracing = options.tracing ?? (await startTracing({ serviceName: 'emp-api' }));
  if (!options.tracing) app.addHook('onClose', () => tracing.shutdown());
  const hub = new EventHub(broker, logger.child({ component: 'event-hub' }));
  const apiKeys = broker.apiKeys({ cacheMs: options.apiKeyCacheMs });
  app.decorate('broker', broker);
  app.decorate('hub', hub);
  app.decorate('apiKeys', apiKeys);
  app.decorate('queueEta', new QueueEta(broker, hub));

  // first, so that it sees every route that follows
  await app.register(requireRouteAccess);
  await app.register(requestTracing, { tracing });
  await app.register(errorHandling);
  await app.register(openApi);
  if (options.corsOrigins?.length) {
    // the preflight route (OPTIONS *) answers browsers before they send a key: public
    app.addHook('onRoute', (route) => {
      if (route.method === 'OPTIONS' && route.url === '*') route.config = { ...route.config, access: 'public' };
    });
    await app.register(cors, {
      origin: options.corsOrigins,
      methods: ['GET', 'POST', 'PATCH', 'DELETE'],
      allowedHeaders: ['authorization', 'x-api-key', 'content-type', 'idempotency-key', 'prefer', 'last-event-id'],
      maxAge: 600,
    });
  }
  // before authentication: its hooks must see an upgrade request first, or a refused upgrade's socket is never closed
  await app.register(websocket, { options: { maxPayload: 64 * 1024 } });
  const signer = options.assetsDir ? await AssetUrlSigner.create(broker, options.assetUrlSecret ?? process.env.EMP_ASSET_URL_SECRET) : undefined;
  const limits = options.rateLimit === false
    ? undefined
    : await rateLimits(app, { ...DEFAULT_RATE_LIMITS, ...options.rateLimit, store: broker.rateLimitStore() });
  await app.register(authentication, { keys: apiKeys, enabled: options.auth ?? true, signer, limits });
  await app.register(metrics, { broker, hub });
  await app.register(healthRoutes);
  await app.register(identityRoutes, { authEnabled: options.auth ?? true });
  const webhookAllowPrivate = options.webhookAllowPrivate ?? envFlag(process.env.EMP_WEBHOOK_ALLOW_PRIVATE);
  await app.register(jobRoutes, { webhookAllowPrivate });
  await app.register(workflowRoutes);
  await app.register(sseRoutes, { maxBufferedBytes: options.live?.maxBufferedBytes ?? 1024 * 1024 });
  await app.register(fleetRoutes);
  const queueSampleMs = options.queueSampleMs === false ? DEFAULT_QUEUE_SAMPLE_MS : (options.queueSampleMs ?? envMs(process.env.EMP_QUEUE_SAMPLE_MS) ?? DEFAULT_QUEUE_SAMPLE_MS);
  await app.register(queueHistoryRoutes, { intervalMs: queueSampleMs });
  await app.register(machineEventRoutes);
  await app.register(operatorRoutes);
  await app.register(plannerRoutes);
  await app.register(webhookRoutes);
  await app.register(webhookEndpointRoutes, { webhookAllowPrivate });
  await app.register(machineLogRoutes, { maxBufferedBytes: options.live?.maxBufferedBytes ?? 1024 * 1024 });
  if (options.assetsDir && signer) await app.register(assetRoutes, { directory: options.assetsDir, signer });
  await app.register(liveRoutes, {
    maxBufferedBytes: options.live?.maxBufferedBytes ?? 1024 * 1024,
    pingMs: options.live?.pingMs ?? 30_000,
    maxSubscriptions: options.live?.maxSubscriptions ?? 1_000,
    errorLogBurst: options.live?.errorLogBurst ?? 5,
    errorLogIntervalMs: options.live?.errorLogIntervalMs ?? 60_000,
  });
  app.addHook('onClose', async () => hub.close());
  let stopRevocations: (() => Promise<void>) | undefined;
  app.addHook('onClose', async () => stopRevocations?.());
  const sampler = options.queueSampleMs === false ? undefined : new QueueSampler(broker, hub, queueSampleMs, logger.child({ component: 'queue-sampler' }) as FastifyBaseLogger);
  if (sampler) app.addHook('onClose', () => sampler.stop());
  // before anything starts: it refuses a route without an access rule
  try {
    await app.ready();
  } catch (error) {
    await app.close().catch(() => undefined);
    throw error;
  }
  stopRevocations = await apiKeys.followRevocations();
  await hub.start();
  sampler?.start();

  let closing: Promise<void> | undefined;
  return { app, hub, webhookAllowPrivate, close: () => (closing ??= app.close()) };
}

export interface ListeningApiServer extends ApiServer {
  url: string;
  port: number;
}

/** Builds the server and listens (on 127.0.0.1:3331 by default). */
export async function startApiServer(options: ApiServerOptions & { host?: string; port?: number }): Promise<ListeningApiServer> {
  const server = await buildApiServer(options);
  try {
    await server.app.listen({ host: options.host ?? '127.0.0.1', port: options.port ?? DEFAULT_API_PORT });
  } catch (error) {
    await server.close();
    throw error;
  }
  const address = server.app.server.address();
  const port = typeof address === 'object' && address ? address.port : (options.port ?? DEFAULT_API_PORT);
  const host = options.host ?? '127.0.0.1';
  return { ...server, port, url: `http://${host.includes(':') ? `[${host}]` : host}:${port}` };
}
