import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import { Counter, Gauge, Registry } from 'prom-client';
import type { ProcessTransition } from './supervisor';
import type { MachineStatus } from './status';

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
export function buildHealthServer(source: HealthSource, logger: Logger): FastifyInstance {
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
  });
  const registry = machineMetrics(source);

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
  app.get('/metrics', async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()));
  return app;
}

function machineMetrics(source: HealthSource): Registry {
  const registry = new Registry();
  const restarts = new Counter({
    name: 'emp_machine_process_restarts_total',
    help: 'Restarts of supervised processes (after an exit, or by command)',
    labelNames: ['process', 'kind'],
    registers: [registry],
  });
  source.onTransition((t) => {
    if (t.change === 'started' && t.restarts > 0) restarts.inc({ process: t.process, kind: t.kind });
  });
  new Gauge({
    name: 'emp_machine_process_up',
    help: '1 while a supervised process runs, else 0',
    labelNames: ['process', 'kind', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of source.status().processes) this.set({ process: p.name, kind: p.kind, state: p.state }, p.state === 'running' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'emp_machine_worker_jobs_running',
    help: 'Jobs in flight per worker process',
    labelNames: ['process', 'worker'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of source.status().processes) if (p.worker && p.workerId) this.set({ process: p.name, worker: p.workerId }, p.worker.running);
    },
  });
  new Gauge({
    name: 'emp_machine_draining',
    help: '1 while the machine drains (operator drain, shutdown or SIGTERM)',
    registers: [registry],
    collect() {
      this.set(source.status().state === 'draining' ? 1 : 0);
    },
  });
  const gpuGauge = (name: string, help: string, value: (gpu: MachineStatus['hardware']['gpus'][number]) => number | undefined) =>
    new Gauge({
      name,
      help,
      labelNames: ['gpu', 'name'],
      registers: [registry],
      collect() {
        this.reset();
        for (const gpu of source.status().hardware.gpus) {
          const v = value(gpu);
          if (v !== undefined) this.set({ gpu: String(gpu.index), name: gpu.name }, v);
        }
      },
    });
  gpuGauge('emp_machine_gpu_utilization_ratio', 'GPU utilisation (0-1) as nvidia-smi last reported it', (g) => (g.utilization_pct === undefined ? undefined : g.utilization_pct / 100));
  gpuGauge('emp_machine_gpu_memory_used_bytes', 'GPU memory in use as nvidia-smi last reported it', (g) => (g.memory_used_mb === undefined ? undefined : g.memory_used_mb * 2 ** 20));
  gpuGauge('emp_machine_gpu_memory_total_bytes', 'GPU memory', (g) => g.memory_total_mb * 2 ** 20);
  new Gauge({
    name: 'emp_machine_disk_free_bytes',
    help: 'Free space of the file system that holds the model cache',
    registers: [registry],
    collect() {
      this.set(source.status().hardware.disk_free_gb * 2 ** 30);
    },
  });
  const modelGauge = (name: string, help: string, value: (models: NonNullable<MachineStatus['models']>) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        const models = source.status().models;
        if (models) this.set(value(models));
      },
    });
  modelGauge('emp_machine_model_cache_used_bytes', 'Bytes of the models on disk plus the room reserved by downloads', (m) => m.used_bytes);
  modelGauge('emp_machine_model_cache_budget_bytes', 'The most bytes the model cache may take (storage.budget_gb)', (m) => m.budget_bytes);
  modelGauge('emp_machine_models_on_disk', 'Models in the cache', (m) => m.models.length);
  modelGauge('emp_machine_model_downloads', 'Model downloads in progress', (m) => m.downloads.length);
  new Gauge({
    name: 'emp_machine_log_lines_dropped',
    help: 'Output lines of supervised processes that could not be written to Redis (they are still in the log files)',
    registers: [registry],
    collect() {
      this.set(source.droppedLogLines());
    },
  });
  return registry;
}
