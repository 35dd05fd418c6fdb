import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { HealthSource } from './health-server';
import type { ModelCache } from './models';
import type { MachineStatus } from './status';

/** Why a machine drained: an operator's drain or shutdown command, a signal (SIGTERM: a spot preemption or a scale-down), or stop(). */
export type DrainReason = 'drain_command' | 'shutdown_command' | 'sigterm' | 'sigint' | 'stopped';
export const DRAIN_REASONS: readonly DrainReason[] = ['drain_command', 'shutdown_command', 'sigterm', 'sigint', 'stopped'];

/**
 * The machine's Prometheus metrics, served at its health server's /metrics
 * (each listed in docs/metrics.md): its processes, GPUs, disk and model cache
 * read from the agent's status on each scrape; drains, model lookups and
 * downloads counted as they happen. Per-process and per-worker series are
 * bounded by the GPUs of one machine.
 */
export class MachineMetrics {
  readonly registry = new Registry();
  readonly drains = new Counter({
    name: 'emp_machine_drains_total',
    help: 'Drains of this machine by reason (drain_command, shutdown_command, sigterm, sigint, stopped); a stopping machine is scraped only while it drains',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  private readonly modelLookups = new Counter({
    name: 'emp_machine_model_cache_lookups_total',
    help: 'Models asked of the cache by jobs and prefetches: hit (on disk) or miss (downloaded, or a download in progress waited for)',
    labelNames: ['result'],
    registers: [this.registry],
  });
  private readonly downloadedBytes = new Counter({
    name: 'emp_machine_model_download_bytes_total',
    help: 'Bytes of models fetched over the network (a resumed download counts only what it fetched)',
    registers: [this.registry],
  });
  private readonly downloadSeconds = new Histogram({
    name: 'emp_machine_model_download_duration_seconds',
    help: 'Time of model downloads from start to the model in place (downloaded) or given up (failed)',
    labelNames: ['outcome'],
    buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600],
    registers: [this.registry],
  });

  constructor(source: HealthSource) {
    for (const reason of DRAIN_REASONS) this.drains.inc({ reason }, 0);
    const restarts = new Counter({
      name: 'emp_machine_process_restarts_total',
      help: 'Restarts of supervised processes (after an exit, or by command)',
      labelNames: ['process', 'kind'],
      registers: [this.registry],
    });
    source.onTransition((t) => {
      if (t.change === 'started' && t.restarts > 0) restarts.inc({ process: t.process, kind: t.kind });
    });
    new Gauge({
      name: 'emp_machine_process_up',
      help: '1 while a supervised process runs, else 0',
      labelNames: ['process', 'kind', 'state'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const p of source.status().processes) this.set({ process: p.name, kind: p.kind, state: p.state }, p.state === 'running' ? 1 : 0);
      },
    });
    new Gauge({
      name: 'emp_machine_worker_jobs_running',
      help: 'Jobs in flight per worker process',
      labelNames: ['process', 'worker'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const p of source.status().processes) if (p.worker && p.workerId) this.set({ process: p.name, worker: p.workerId }, p.worker.running);
      },
    });
    new Gauge({
      name: 'emp_machine_draining',
      help: '1 while the machine drains (operator drain, shutdown or SIGTERM)',
      registers: [this.registry],
      collect() {
        this.set(source.status().state === 'draining' ? 1 : 0);
      },
    });
    const gpuGauge = (name: string, help: string, value: (gpu: MachineStatus['hardware']['gpus'][number]) => number | undefined) =>
      new Gauge({
        name,
        help,
        labelNames: ['gpu', 'name'],
        registers: [this.registry],
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
      registers: [this.registry],
      collect() {
        this.set(source.status().hardware.disk_free_gb * 2 ** 30);
      },
    });
    const modelGauge = (name: string, help: string, value: (models: NonNullable<MachineStatus['models']>) => number) =>
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          const models = source.status().models;
          if (models) this.set(value(models));
        },
      });
    modelGauge('emp_machine_model_cache_used_bytes', 'Bytes of the models on disk plus the room reserved by downloads', (m) => m.used_bytes);
    modelGauge('emp_machine_model_cache_budget_bytes', 'The most bytes the model cache may take (storage.budget_gb)', (m) => m.budget_bytes);
    modelGauge('emp_machine_models_on_disk', 'Models in the cache', (m) => m.models.length);
    modelGauge('emp_machine_model_downloads_in_progress', 'Model downloads in progress', (m) => m.downloads.length);
    new Counter({
      name: 'emp_machine_log_lines_dropped_total',
      help: 'Output lines of supervised processes that could not be written to Redis (they are still in the log files)',
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(source.droppedLogLines());
      },
    });
  }

  /** Counts the cache's lookups and downloads from now on. */
  watchModelCache(cache: ModelCache): void {
    for (const result of ['hit', 'miss']) this.modelLookups.inc({ result }, 0);
    this.downloadedBytes.inc(0);
    cache.on('lookup', (result) => this.modelLookups.inc({ result }));
    cache.on('downloaded', (bytes) => this.downloadedBytes.inc(bytes));
    cache.on('downloadEnded', ({ seconds, outcome }) => this.downloadSeconds.observe({ outcome }, seconds));
  }
}
