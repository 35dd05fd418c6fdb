import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import type { ProcessTransition } from './supervisor';
import type { MachineStatus } from './status';
import { MachineMetrics } from './metrics';

/** What the health server reads from the agent. */
export interface HealthSource {
  status(): MachineStatus;
  /** registered in Redis and every worker started once */
  isReady(): boolean;
  onTransition(listener: (transition: ProcessTransition) => void): void;
  droppedLogLines(): number;
}

/**
 * The machine's health server (Fastify, so other parts can add their routes
 * before it listens): /health liveness, /ready readiness (503 with the reason
 * until registered and every worker started, and while draining), /status the
 * full status, /metrics for Prometheus.
 */
export function buildHealthServer(source: HealthSource, logger: Logger, metrics = new MachineMetrics(source)): FastifyInstance {
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
  });

  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/ready', async (_request, reply) => {
    const status = source.status();
    if (source.isReady()) return { status: 'ready', state: status.state };
    const waiting = status.processes.filter((p) => p.kind === 'worker' && !p.worker?.ready).map((p) => p.name);
    return reply.code(503).send({
      status: 'not_ready',
      state: status.state,
      registered: status.registered,
      workers_not_ready: waiting.length > 0 ? waiting : undefined,
    });
  });
  app.get('/status', async () => source.status());
  app.get('/metrics', async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  return app;
}
