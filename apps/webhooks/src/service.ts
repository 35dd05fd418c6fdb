import { type Broker, startTracing, traceLogFormatter, type Tracing, WebhookEndpoints, WebhookOutbox } from '@emp/core';
import Fastify, { type FastifyInstance } from 'fastify';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { type Logger, pino } from 'pino';
import { type WebhookServiceConfig, type WebhookServiceConfigInput, webhookServiceConfig } from './config';
import type { Resolver } from './delivery';
import { Dispatcher } from './dispatcher';
import { EventIntake } from './event-intake';
import { WebhookMetrics } from './metrics';

export interface WebhookServiceOptions {
  broker: Broker;
  config?: WebhookServiceConfigInput;
  logger?: Logger;
  /** name resolution for deliveries (default node:dns) */
  resolve?: Resolver;
  /** where delivery spans go (docs/tracing.md); default: started from the environment (OTEL_EXPORTER_OTLP_*), off when none is set */
  tracing?: Tracing;
}

export interface WebhookService {
  url: string;
  port: number;
  config: WebhookServiceConfig;
  outbox: WebhookOutbox;
  endpoints: WebhookEndpoints;
  /** this instance's consumer name in the group */
  consumer: string;
  /** stops reading, lets attempts in flight finish and closes the HTTP server */
  close(): Promise<void>;
}

/**
 * The webhook service (port 3332): reads the pools' event streams, delivers
 * what jobs' webhooks ask for, and answers /health and /metrics. Several
 * instances may run at once; everything they share lives in Redis.
 */
export async function startWebhookService(options: WebhookServiceOptions): Promise<WebhookService> {
  const config = webhookServiceConfig(options.config);
  const tracing = options.tracing ?? (await startTracing({ serviceName: 'emp-webhooks' }));
  const base = options.logger ?? pino({ name: 'webhooks' });
  // lines logged while an attempt's span is active carry its trace_id and span_id
  const logger = tracing.enabled ? base.child({}, { formatters: { log: traceLogFormatter() } }) : base;
  const { broker } = options;
  const outbox = new WebhookOutbox(broker, {
    progressThrottleMs: config.progressThrottleMs,
    retentionMs: config.retentionMs,
    failureDisableMs: config.failureDisableMs,
  });
  const endpoints = new WebhookEndpoints(outbox);
  const consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const metrics = new WebhookMetrics(async () => {
    const backlog = await outbox.backlog();
    const ageOf = (at: number | undefined) => (at === undefined ? 0 : Math.max(0, (Date.now() - at) / 1000));
    return { messages: backlog.messages, oldestDueAgeSeconds: ageOf(backlog.nextDueAt), oldestUndeliveredAgeSeconds: ageOf(backlog.oldestQueuedAt) };
  });
  const dispatcher = new Dispatcher(outbox, endpoints, config, metrics, logger, options.resolve, tracing);
  const intake = new EventIntake(broker, outbox, endpoints, config, consumer, metrics, logger, () => dispatcher.wake(), tracing);

  const app = httpServer(metrics, outbox);
  await intake.start();
  dispatcher.start();
  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (error) {
    await intake.stop();
    await dispatcher.stop();
    if (!options.tracing) await tracing.shutdown();
    throw error;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  logger.info({ port, consumer, allowPrivate: config.allowPrivate }, 'webhook service started');

  let closing: Promise<void> | undefined;
  return {
    url: `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`,
    port,
    config,
    outbox,
    endpoints,
    consumer,
    close: () =>
      (closing ??= (async () => {
        await intake.stop();
        await dispatcher.stop();
        await app.close();
        // one it started itself; a Tracing passed in is the caller's to shut down
        if (!options.tracing) await tracing.shutdown();
      })()),
  };
}

function httpServer(metrics: WebhookMetrics, outbox: WebhookOutbox): FastifyInstance {
  const app = Fastify({ logger: false });
  app.get('/health', async (_request, reply) => {
    try {
      const backlog = await outbox.backlog();
      return { status: 'ok', backlog: backlog.messages };
    } catch (error) {
      return reply.code(503).send({ status: 'unavailable', error: (error as Error).message });
    }
  });
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  return app;
}
