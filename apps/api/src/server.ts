import type { Broker } from '@emp/core';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import { ANONYMOUS_OPERATOR, ApiKeys, type Principal, presentedKey } from './auth';
import { ApiError, handleError } from './errors';
import { EventFeed } from './event-feed';
import { liveRoutes } from './live';
import { type ApiMetrics, createMetrics } from './metrics';
import { fleetRoutes } from './routes/fleet';
import { jobRoutes } from './routes/jobs';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
  }
}

export interface ApiServerOptions {
  broker: Broker;
  logger: Logger;
  /** 'keys': every request carries an API key; 'off': everyone is an operator (local development only) */
  auth: 'keys' | 'off';
}

/** What the routes share. */
export interface ApiContext {
  broker: Broker;
  feed: EventFeed;
  keys: ApiKeys;
  metrics: ApiMetrics;
}

/** Paths anyone may call: liveness, readiness and the metrics scrape. */
const OPEN_PATHS = new Set(['/health', '/ready', '/metrics']);

/** The API as a Fastify instance, not listening yet (tests inject or listen on port 0). */
export async function buildApiServer(options: ApiServerOptions): Promise<FastifyInstance> {
  const { broker } = options;
  const app: FastifyInstance = Fastify({
    loggerInstance: options.logger as FastifyBaseLogger,
    // a payload at the broker's limit, plus room for the rest of the job
    bodyLimit: broker.config.maxPayloadBytes + 64 * 1024,
    // a line per request at info would be logging in the hot path; errors are still logged
    logController: new LogController({ disableRequestLogging: true }),
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(handleError);
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url.split('?')[0]}` } });
  });

  const context: ApiContext = {
    broker,
    feed: new EventFeed(broker, options.logger.child({ component: 'event-feed' })),
    keys: new ApiKeys(broker.redis, broker.config.namespace),
    metrics: createMetrics(broker),
  };
  app.addHook('onClose', async () => context.feed.close());

  app.decorateRequest('principal', null as unknown as Principal);
  app.addHook('onRequest', async (request) => {
    request.principal = ANONYMOUS_OPERATOR;
    if (options.auth === 'off' || OPEN_PATHS.has(request.url.split('?')[0]!)) return;
    const key = presentedKey(request.headers, request.query);
    if (!key) throw new ApiError(401, 'UNAUTHENTICATED', 'an API key is required: Authorization: Bearer <key>');
    const principal = await context.keys.verify(key);
    if (!principal) throw new ApiError(401, 'UNAUTHENTICATED', 'unknown or revoked API key');
    request.principal = principal;
  });
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    context.metrics.requests.observe({ method: request.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
  });

  await app.register(websocket, { options: { maxPayload: 64 * 1024 } });
  app.get('/health', async () => ({ ok: true }));
  app.get('/ready', async (_request, reply) => {
    try {
      await broker.redis.ping();
      return { ok: true };
    } catch (error) {
      return reply.status(503).send({ error: { code: 'NOT_READY', message: `redis: ${(error as Error).message}` } });
    }
  });
  app.get('/metrics', async (_request, reply) => {
    void reply.header('content-type', context.metrics.registry.contentType);
    return context.metrics.registry.metrics();
  });
  jobRoutes(app, context);
  fleetRoutes(app, context);
  liveRoutes(app, context);
  return app;
}

export const DEFAULT_API_PORT = 3331;

/** Builds the API and listens; `host` defaults to loopback, so nothing is exposed by accident. */
export async function startApiServer(options: ApiServerOptions & { port?: number; host?: string }): Promise<FastifyInstance> {
  const app = await buildApiServer(options);
  await app.listen({ port: options.port ?? DEFAULT_API_PORT, host: options.host ?? '127.0.0.1' });
  return app;
}
