import { stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { type BlockingConnection, Broker, type BrokerConfigInput, type MachineCommand, type MachineCommandOutcome, ModelError, openRedis, type RedisClient, type ProcessSummary, type StopReason, type SupervisorMessage, TRACING_OFF, type Tracing, WorkerProcessMessage, encodeMachineStatus, endSpan, startTracing } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import { type Logger, pino } from 'pino';
import type { MachineConfig } from './config';
import { type CustomNodeResult, installCustomNodes, installedCustomNodes, repositoryName } from './custom-nodes';
import { type Hardware, discoverGpus, discoverHardware } from './hardware';
import { type HealthSource, buildHealthServer } from './health-server';
import { type DrainReason, MachineMetrics } from './metrics';
import { ModelCache, type ModelCacheOptions, machineModelFields, modelCapabilities, registerModelRoutes } from './models';
import { planProcesses, workerServicesOf } from './plan';
import { ProcessLogs } from './process-logs';
import {
  type CustomNodesStatus,
  type MachineProcessStatus,
  type MachineState,
  type MachineStatus,
  type WorkerView,
  derivedState,
  withoutCredentials,
} from './status';
import { type ProcessTransition, Supervisor, describeExit } from './supervisor';

export interface MachineAgentOptions {
  config: MachineConfig;
  /** the broker's Redis; `config.redis_url` otherwise */
  redisUrl?: string;
  /** broker settings (namespace, lease) shared with the rest of the deployment */
  broker?: BrokerConfigInput;
  logger?: Logger;
  /** the nvidia-smi to run, and its environment (tests put a fake first on PATH) */
  nvidiaSmi?: string;
  env?: NodeJS.ProcessEnv;
  /** how worker processes are started; `node --import tsx <worker main>` by default */
  workerCommand?: { command: string; args: string[] };
  /** settings of the model cache beyond the config's (retries, progress interval) */
  modelCache?: Partial<Omit<ModelCacheOptions, 'dir' | 'budgetBytes' | 'catalog' | 'tracing' | 'machineId'>>;
  /**
   * where the agent's spans go (model.download, model.prefetch); default: its
   * own, started from the environment at start() (`startTracing`, service
   * emp-machine: off unless OTEL_EXPORTER_OTLP_ENDPOINT or
   * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set) and shut down at stop
   */
  tracing?: Tracing;
}

const COMMAND_BLOCK_MS = 2_000;
/** how long a worker may take to answer a load (a large model from a slow disk takes minutes) */
const LOAD_ANSWER_MS = 10 * 60_000;
/** changes within this long go out as one status write */
const PUBLISH_COALESCE_MS = 20;
/** the model cache changes with every job (pins) and download: its changes go out at most this often */
const MODELS_PUBLISH_INTERVAL_MS = 1_000;

/**
 * The machine agent, one per machine: finds its GPUs, runs one worker (plus
 * the configured services) per GPU under a supervisor, registers the machine,
 * keeps its status in Redis (a full snapshot every `status_interval_ms`, and
 * at once on every change), executes operator commands from its command
 * stream, serves /health, /ready, /status and /metrics, and on stop drains:
 * workers hand their jobs back at once, then the machine goes offline.
 *
 * With `models` in its config it opens the model cache, serves it to its
 * workers (they wait there for their jobs' models) and advertises what it
 * holds as their `models` capability; with `custom_nodes` it installs them
 * into ComfyUI before any process starts and advertises the installed ones.
 */
export class MachineAgent {
  readonly config: MachineConfig;
  /** add routes before start() (the model cache does) */
  readonly health: FastifyInstance;
  /** resolves once the agent stopped, with why */
  readonly done: Promise<StopReason>;

  private readonly logger: Logger;
  private readonly redisUrl: string;
  private redis: RedisClient | undefined;
  private commandConnection: BlockingConnection | undefined;
  private broker: Broker | undefined;
  private supervisor: Supervisor | undefined;
  private processLogs: ProcessLogs | undefined;
  private hardware: Hardware | undefined;
  private cache: ModelCache | undefined;
  private tracing: Tracing = TRACING_OFF;
  /** the agent started its tracing itself (and shuts it down) */
  private ownTracing = false;
  /** the workers' `models` capability as planned, and as last sent (JSON) */
  private plannedModels: string | undefined;
  private advertisedModels: string | undefined;
  private customNodes: CustomNodesStatus | undefined;
  private readonly installing = new AbortController();
  private readonly workers = new Map<string, WorkerView>();
  private readonly transitionListeners: Array<(t: ProcessTransition) => void> = [];
  private readonly metrics: MachineMetrics;

  private state: MachineState = 'starting';
  private stateSince = Date.now();
  private readonly startedAt = Date.now();
  private registered = false;
  /** workers that have reported ready at least once; once all have, the machine has started */
  private readonly everReady = new Set<string>();
  private startedOnce = false;
  private draining = false;
  /** stop() was called: commands are refused from now on */
  private stopRequested = false;
  /** the command consumer and the status timer end */
  private closing = false;
  private lastCommand: MachineStatus['last_command'];
  private healthUrl: string | undefined;

  private statusTimer: NodeJS.Timeout | undefined;
  private publishTimer: NodeJS.Timeout | undefined;
  private modelsTimer: NodeJS.Timeout | undefined;
  private modelsPublishedAt = 0;
  private publishing: Promise<void> = Promise.resolve();
  private commandLoop: Promise<void> | undefined;
  /** prefetch and load commands under way (they run beside the command loop; stop() waits for their outcomes) */
  private readonly besideLoop = new Set<Promise<void>>();
  /** loads a worker process was asked for, by request id: resolved by its load_done */
  private readonly loadsAsked = new Map<string, (answer: { outcome: MachineCommandOutcome; message: string }) => void>();
  private stopping: Promise<void> | undefined;
  private finish!: (reason: StopReason) => void;

  constructor(private readonly options: MachineAgentOptions) {
    this.config = options.config;
    const redisUrl = options.redisUrl ?? options.config.redis_url;
    if (!redisUrl) throw new Error(`machine ${options.config.machine_id}: no Redis to use: set redis_url in the machine config, or REDIS_URL`);
    this.redisUrl = redisUrl;
    this.logger = (options.logger ?? pino({ name: 'emp-machine', level: process.env.LOG_LEVEL || 'info' })).child({
      machine_id: this.config.machine_id,
      pool: this.config.pool,
    });
    const source: HealthSource = {
      status: () => this.status(),
      isReady: () => this.isReady(),
      onTransition: (listener) => this.transitionListeners.push(listener),
      droppedLogLines: () => this.processLogs?.dropped ?? 0,
    };
    this.metrics = new MachineMetrics(source);
    this.health = buildHealthServer(source, this.logger.child({ component: 'health' }), this.metrics);
    this.done = new Promise((resolve) => (this.finish = resolve));
  }

  /** The health server's URL once it listens. */
  get url(): string | undefined {
    return this.healthUrl;
  }

  /**
   * Discovers the hardware, registers the machine, starts its processes, the
   * health server and the command consumer. Resolves once all is started
   * (workers become ready in the background; /ready says when).
   */
  async start(): Promise<void> {
    try {
      await this.startParts();
    } catch (error) {
      this.closing = true;
      await this.supervisor?.stop();
      this.commandConnection?.close();
      await this.health.close();
      await this.cache?.close();
      this.redis?.disconnect();
      if (this.ownTracing) await this.tracing.shutdown().catch(() => undefined);
      this.finish('stopped');
      throw error;
    }
  }

  private async startParts(): Promise<void> {
    const { config } = this;
    this.hardware = await discoverHardware({
      nvidiaSmi: this.options.nvidiaSmi,
      env: this.options.env,
      diskPath: await existingFolder(config.storage.models_dir),
      overrides: config.hardware,
    });
    if (this.hardware.gpu_error) this.logger.warn({ gpu_error: this.hardware.gpu_error }, 'no GPUs could be read; running CPU workers');
    if (this.options.tracing) this.tracing = this.options.tracing;
    else {
      this.tracing = await startTracing({ serviceName: 'emp-machine', attributes: { 'emp.machine.id': config.machine_id, 'emp.pool': config.pool } });
      this.ownTracing = this.tracing.enabled;
    }
    if (config.models.length > 0) await this.openModelCache();

    // several hosts in the URL (or EMP_REDIS_CLUSTER=1): a Redis Cluster (docs/scale-out.md)
    this.redis = openRedis(this.redisUrl, { lazyConnect: true });
    let lastError: Error | undefined;
    this.redis.on('error', (error: Error) => {
      lastError = error;
      this.logger.debug({ err: error }, 'redis connection error');
    });
    try {
      await this.redis.connect();
    } catch (error) {
      // connect() only says the connection closed; the error event says why
      throw new Error(`cannot reach Redis at ${withoutCredentials(this.redisUrl)}: ${(lastError ?? (error as Error)).message}`);
    }
    this.broker = await Broker.connect({ redis: this.redis, config: this.options.broker ?? {} });

    await this.health.listen({ host: config.health_host, port: config.health_port });
    const address = this.health.server.address();
    const port = typeof address === 'object' && address ? address.port : config.health_port;
    this.healthUrl = `http://${config.health_host === '0.0.0.0' ? hostname() : config.health_host}:${port}`;

    const resumeAfter = (await this.broker.machine(config.pool, config.machine_id))?.last_command_handled ?? '0';
    await this.publish();
    this.registered = true;

    this.processLogs = new ProcessLogs({
      broker: this.broker,
      pool: config.pool,
      machineId: config.machine_id,
      dir: config.logs.dir,
      maxFileBytes: config.logs.max_file_bytes,
      filesKept: config.logs.files_kept,
      logger: this.logger,
    });

    const installed = await this.installCustomNodes();
    if (this.stopRequested) return; // stopped while installing: stop() has taken the machine offline

    const models = this.cache ? modelCapabilities(this.cache.contents(), workerServicesOf(config)) : undefined;
    this.plannedModels = this.advertisedModels = models && JSON.stringify(models);
    const specs = planProcesses(config, this.hardware, {
      redisUrl: this.redisUrl,
      workerCommand: this.options.workerCommand,
      modelsUrl: this.cache ? loopbackUrl(config.health_host, port) : undefined,
      capabilities: { models, custom_nodes: installed },
    });
    this.supervisor = new Supervisor(
      specs,
      {
        restartBackoffMs: config.supervision.restart_backoff_ms,
        maxRestartBackoffMs: config.supervision.max_restart_backoff_ms,
        crashLoopRestarts: config.supervision.crash_loop_restarts,
        crashLoopWindowMs: config.supervision.crash_loop_window_ms,
        stopTimeoutMs: config.supervision.stop_timeout_ms,
      },
      this.logger.child({ component: 'supervisor' }),
    );
    this.supervisor.on('output', (name, stream, line) => this.processLogs?.write(name, stream, line));
    this.supervisor.on('transition', (transition) => this.onTransition(transition));
    this.supervisor.on('message', (name, message) => this.onWorkerMessage(name, message));
    for (const spec of specs) if (spec.kind === 'worker') this.workers.set(spec.name, { ready: false, running: 0 });
    this.supervisor.start();

    this.statusTimer = setInterval(() => void this.periodicSnapshot(), config.status_interval_ms);
    this.commandConnection = this.broker.blockingConnection({ onError: (error) => this.logger.debug({ err: error }, 'command connection error') });
    this.commandLoop = this.consumeCommands(resumeAfter);
    this.logger.info(
      { health: this.healthUrl, gpus: this.hardware.gpus.length, processes: specs.map((s) => s.name) },
      'machine agent started',
    );
  }

  /** Opens the model cache and serves it on the health server (its routes must be added before it listens). */
  private async openModelCache(): Promise<void> {
    const cache = await ModelCache.fromConfig(this.config, { logger: this.logger, ...this.options.modelCache, tracing: this.tracing, machineId: this.config.machine_id });
    this.cache = cache;
    this.metrics.watchModelCache(cache);
    registerModelRoutes(this.health, cache);
    cache.on('change', () => {
      this.advertiseModels();
      this.modelsChanged();
    });
    cache.on('progress', () => this.modelsChanged());
  }

  /**
   * Installs the configured custom nodes into ComfyUI's folder, once per
   * machine and before any process starts, reporting each result as it is
   * known; resolves with the installed names (undefined without custom nodes).
   * A node that fails is reported and stops nothing.
   */
  private async installCustomNodes(): Promise<string[] | undefined> {
    const { config } = this;
    if (config.custom_nodes.length === 0 || !config.custom_nodes_dir) return undefined;
    const status: CustomNodesStatus = { state: 'installing', dir: config.custom_nodes_dir, results: [] };
    this.customNodes = status;
    this.changed();
    let results: CustomNodeResult[];
    try {
      results = await installCustomNodes(config.custom_nodes, {
        dir: config.custom_nodes_dir,
        pip: config.custom_nodes_pip,
        logger: this.logger,
        signal: this.installing.signal,
        onResult: (result) => {
          status.results.push(redactedResult(result));
          this.changed();
        },
      });
    } catch (error) {
      // the folder itself could not be made: every node failed, the machine still runs
      const message = withoutCredentials((error as Error).message);
      this.logger.error({ err: message, dir: config.custom_nodes_dir }, 'custom nodes could not be installed');
      results = config.custom_nodes.map((node) => ({ name: repositoryName(node.url) ?? '', url: node.url, status: 'failed', error: message }));
    }
    status.results = results.map(redactedResult);
    status.state = 'installed';
    const installed = installedCustomNodes(results);
    const failed = results.filter((result) => result.status === 'failed');
    this.logger[failed.length > 0 ? 'warn' : 'info'](
      { installed, failed: failed.map((result) => result.name) },
      `custom nodes installed: ${installed.length} of ${results.length}`,
    );
    this.changed();
    return installed;
  }

  /** Resolves true once every worker has started (what /ready says), false after `timeoutMs` or when the agent stops first. */
  async untilReady(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.isReady()) {
      if (this.stopRequested || Date.now() > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return true;
  }

  /** Registered, every worker started once, not draining or stopping. */
  isReady(): boolean {
    return this.registered && this.startedOnce && !this.draining && !this.stopRequested;
  }

  /** Drains (workers hand their jobs back), stops every process, marks the machine offline and closes; idempotent. */
  stop(reason: StopReason = 'stopped'): Promise<void> {
    this.stopping ??= this.shutdown(reason);
    return this.stopping;
  }

  status(): MachineStatus {
    const processes: MachineProcessStatus[] = (this.supervisor?.statuses() ?? []).map((p) => {
      const worker = this.workers.get(p.name);
      return worker ? { ...p, worker: { ...worker } } : p;
    });
    return {
      machine_id: this.config.machine_id,
      pool: this.config.pool,
      region: this.config.region || undefined,
      state: this.state,
      state_since: this.stateSince,
      registered: this.registered,
      hostname: hostname(),
      pid: process.pid,
      started_at: this.startedAt,
      health_url: this.healthUrl,
      hardware: this.hardware ?? { gpus: [], cpu_cores: 1, ram_gb: 1, disk_free_gb: 0 },
      processes,
      models: this.cache?.contents(),
      custom_nodes: this.customNodes && { ...this.customNodes, results: [...this.customNodes.results] },
      last_command: this.lastCommand,
    };
  }

  // ---------------------------------------------------------------- status

  private onTransition(transition: ProcessTransition): void {
    for (const listener of this.transitionListeners) listener(transition);
    const worker = this.workers.get(transition.process);
    if (worker && transition.change === 'started' && this.advertisedModels !== this.plannedModels) {
      // its config holds the models as planned at start; the cache has changed since
      this.sendCapabilities(transition.process, { models: JSON.parse(this.advertisedModels!) as Record<string, string[]> });
    }
    if (worker && transition.change !== 'started') {
      worker.ready = false;
      worker.running = 0;
      delete worker.waiting_for;
    }
    const fields: Record<string, string | number> = { kind: transition.kind, restarts: transition.restarts };
    if (transition.pid !== undefined) fields.pid = transition.pid;
    if (transition.exit) {
      fields.exit_code = transition.exit.code ?? '';
      fields.signal = transition.exit.signal ?? '';
      fields.exit = describeExit(transition.exit);
    }
    if (transition.delayMs !== undefined) fields.delay_ms = transition.delayMs;
    if (transition.reason) fields.reason = transition.reason;
    if (transition.change === 'exited' || transition.change === 'stopped') {
      // a worker process that is gone will not answer the loads it was asked for
      for (const [id, finish] of [...this.loadsAsked]) if (id.endsWith(`/${transition.process}`)) finish({ outcome: 'failed', message: `the worker process ${transition.change} before it answered` });
    }
    const workerId = this.supervisor?.status(transition.process)?.workerId;
    if (workerId && transition.change === 'exited' && transition.state !== 'stopped') {
      // a worker that died cannot say so itself: shown offline now rather than when its heartbeats are missed
      // (its jobs go back once its lease runs out, or at once when it comes back and registers afresh)
      this.broker
        ?.setWorkerState(this.config.pool, workerId, 'offline')
        .catch((error: unknown) => this.logger.warn({ err: error, worker: workerId }, 'could not mark a dead worker offline'));
    }
    this.broker
      ?.machineProcessEvent(this.config.pool, this.config.machine_id, transition.process, transition.change, fields)
      .catch((error: unknown) => this.logger.warn({ err: error }, 'could not announce a process transition'));
    this.changed();
  }

  private onWorkerMessage(name: string, raw: unknown): void {
    const worker = this.workers.get(name);
    const parsed = WorkerProcessMessage.safeParse(raw);
    if (!worker || !parsed.success) {
      this.logger.warn({ process: name, message: raw }, 'unexpected message from a process');
      return;
    }
    const message = parsed.data;
    if (message.type === 'load_done') {
      this.loadsAsked.get(message.id)?.({ outcome: message.outcome, message: message.message });
      return;
    }
    if (message.type === 'waiting') worker.waiting_for = message.urls;
    if (message.type === 'ready') {
      worker.ready = true;
      delete worker.waiting_for;
      this.everReady.add(name);
      if (this.everReady.size === this.workers.size) this.startedOnce = true;
    }
    if (message.type === 'jobs') {
      const wasBusy = worker.running > 0;
      worker.running = message.running;
      // counts go out with the next snapshot (and live at /status); only idle <-> busy is written at once
      if (wasBusy === worker.running > 0) return;
    }
    if (message.type === 'stopping') worker.ready = false;
    this.changed();
  }

  /** Something changed: the state is derived again and the status written at once (changes close together go as one). */
  private changed(): void {
    if (this.state === 'offline') return;
    // before the processes are planned (custom nodes installing) the machine is starting
    const state: MachineState = this.draining ? 'draining' : this.supervisor ? derivedState(this.status().processes, this.startedOnce) : 'starting';
    if (state !== this.state) {
      this.logger.info({ from: this.state, to: state }, 'machine state');
      this.state = state;
      this.stateSince = Date.now();
    }
    if (!this.registered || this.publishTimer) return;
    this.publishTimer = setTimeout(() => {
      this.publishTimer = undefined;
      void this.publish();
    }, PUBLISH_COALESCE_MS);
  }

  /** The model cache changed (a model arrived or went, a download moved, a job pinned one): written at most once a second. */
  private modelsChanged(): void {
    // once closing, the last snapshot (offline) is written by stop() itself
    if (!this.registered || this.modelsTimer || this.closing) return;
    const wait = Math.max(0, this.modelsPublishedAt + MODELS_PUBLISH_INTERVAL_MS - Date.now());
    this.modelsTimer = setTimeout(() => {
      this.modelsTimer = undefined;
      this.modelsPublishedAt = Date.now();
      void this.publish();
    }, wait);
  }

  /** Tells every worker the models capability when the disk changed it (pins do not: the capability is what is here or downloadable). */
  private advertiseModels(): void {
    if (!this.cache || !this.supervisor) return;
    const models = modelCapabilities(this.cache.contents(), workerServicesOf(this.config));
    const text = JSON.stringify(models);
    if (text === this.advertisedModels) return;
    this.advertisedModels = text;
    this.logger.info({ models }, 'the models on disk changed; workers register again');
    for (const name of this.supervisor.names((spec) => spec.kind === 'worker')) this.sendCapabilities(name, { models });
  }

  /** A worker not running now hears it when it starts again (onTransition). */
  private sendCapabilities(name: string, capabilities: Extract<SupervisorMessage, { type: 'capabilities' }>['capabilities']): void {
    const message: SupervisorMessage = { type: 'capabilities', capabilities };
    this.supervisor?.send(name, message);
  }

  private async periodicSnapshot(): Promise<void> {
    const hardware = this.hardware;
    if (hardware && hardware.gpus.length > 0 && !this.config.hardware?.gpus) {
      const found = await discoverGpus(this.options.nvidiaSmi, this.options.env);
      if (found.gpus.length > 0) this.hardware = { ...hardware, gpus: found.gpus };
    }
    await this.publish();
  }

  /** Writes the machine's full status (register_machine: a state change is announced as machine.<state>). */
  private publish(): Promise<void> {
    this.publishing = this.publishing.then(async () => {
      if (!this.broker) return;
      const status = this.status();
      const workerIds = status.processes.flatMap((p) => (p.workerId ? [p.workerId] : []));
      const fields: Record<string, string> = {
        ...encodeMachineStatus({
          hostname: status.hostname,
          pid: status.pid,
          agent_started_at: status.started_at,
          status_at: Date.now(),
          gpus: status.hardware.gpus,
          hardware: status.hardware,
          workers: workerIds,
          services: [...new Set(status.processes.flatMap((p) => (p.service ? [p.service] : [])))],
          processes: status.processes.map(summary),
          region: status.region || undefined,
          health_url: status.health_url || undefined,
          custom_nodes_state: status.custom_nodes?.state,
          custom_nodes: status.custom_nodes?.results,
        }),
        ...(this.cache && status.models ? machineModelFields(status.models, await this.cache.freeDiskBytes().catch(() => undefined)) : {}),
      };
      try {
        await this.broker.registerMachine(this.config.pool, this.config.machine_id, status.state, fields);
      } catch (error) {
        if (!this.registered) throw error;
        this.logger.warn({ err: error }, 'could not write the machine status');
      }
    });
    return this.publishing;
  }

  // ---------------------------------------------------------------- commands

  /** Reads the machine's command stream from where the last agent left off and executes each command in order. */
  private async consumeCommands(resumeAfter: string): Promise<void> {
    let cursor = resumeAfter;
    while (!this.closing) {
      let commands: MachineCommand[];
      try {
        commands = await this.broker!.readMachineCommands(this.config.pool, this.config.machine_id, cursor, {
          blockMs: COMMAND_BLOCK_MS,
          connection: this.commandConnection!,
        });
      } catch (error) {
        if (this.closing) return;
        this.logger.warn({ err: error }, 'reading commands failed; trying again');
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        continue;
      }
      for (const command of commands) {
        if (this.closing) return;
        cursor = command.id;
        await this.execute(command);
      }
    }
  }

  private async execute(command: MachineCommand): Promise<void> {
    const log = this.logger.child({ command: command.id, action: command.action, service: command.service, by: command.by });
    log.info({ reason: command.reason }, 'operator command');
    if (this.stopRequested) {
      await this.acknowledge(command, 'failed', 'not executed: the agent is stopping');
      return;
    }
    const age = Date.now() - command.ts;
    // a command of the agent's own millisecond counts as issued before it (timestamps have no finer grain)
    if (command.ts <= this.startedAt && age > this.config.command_max_age_ms) {
      await this.acknowledge(command, 'failed', `not executed: issued ${Math.round(age / 1000)} s ago, before this agent started (command_max_age_ms is ${this.config.command_max_age_ms})`);
      return;
    }
    try {
      switch (command.action) {
        case 'restart':
          await this.acknowledge(command, ...(await this.restartCommand(command.service)));
          return;
        case 'drain':
          if (command.service) {
            await this.acknowledge(command, 'failed', `drain applies to the whole machine; to stop one service's jobs, pause it (POST /v1/services/${command.service}/pause) or restart it`);
            return;
          }
          await this.drain('drain_command');
          await this.acknowledge(command, 'ok', 'draining: workers stopped and their jobs handed back; a restart command resumes');
          return;
        case 'shutdown':
          await this.drain('shutdown_command');
          await this.acknowledge(command, 'ok', 'drained; stopping the services and going offline');
          void this.stop('shutdown command');
          return;
        case 'prefetch':
          this.startPrefetch(command, log);
          return;
        case 'evict':
          await this.acknowledge(command, ...(await this.evictCommand(command.model)));
          return;
        case 'load':
          this.beside(this.loadCommand(command), command, log, 'load');
          return;
        default:
          await this.acknowledge(command, 'failed', `unknown action ${command.action} (known: drain, restart, shutdown, prefetch, evict, load)`);
      }
    } catch (error) {
      log.error({ err: error }, 'command failed');
      await this.acknowledge(command, 'failed', (error as Error).message);
    }
  }

  /** Restarts the processes of the named service (or the one named process); without a name, everything, ending a drain. */
  private async restartCommand(service: string | undefined): Promise<[MachineCommandOutcome, string]> {
    const supervisor = this.supervisor!;
    const names = service === undefined ? supervisor.names() : supervisor.names((s) => s.service === service || s.name === service);
    if (names.length === 0) {
      const known = supervisor.names((s) => s.kind === 'service').map((name) => supervisor.status(name)!.service);
      return ['failed', `no service or process named ${service} on this machine (services: ${[...new Set(known)].join(', ') || 'none'}; processes: ${supervisor.names().join(', ')})`];
    }
    if (service === undefined) this.draining = false;
    await supervisor.restart(names);
    this.changed();
    return ['ok', `restarted ${names.join(', ')}`];
  }

  /**
   * Downloads the command's model into the cache beside the command loop (a
   * long download holds up no other command; several prefetches run at once,
   * and one for a model already downloading joins that download), then
   * acknowledges it. The model is not pinned: LRU may evict it later.
   */
  private startPrefetch(command: MachineCommand, log: Logger): void {
    // a prefetch serves no job: its own trace (parent '': a root span), the model.download span its child
    const span = this.tracing.startSpan('model.prefetch', {
      parent: '',
      attributes: {
        'emp.machine.id': this.config.machine_id,
        'emp.pool': this.config.pool,
        ...(command.model && { 'emp.model': command.model }),
        ...(command.by && { 'emp.command.by': command.by }),
        'emp.command.id': command.id,
      },
    });
    this.beside(this.tracing.withSpan(span, () => this.prefetchCommand(command.model)), command, log, 'prefetch', ([outcome, message]) => {
      if (outcome === 'ok') endSpan(span, 'ok');
      else endSpan(span, outcome, message);
    });
  }

  private async prefetchCommand(model: string | undefined): Promise<[MachineCommandOutcome, string]> {
    const cache = this.cache;
    if (!model) return ['failed', 'prefetch names no model'];
    if (!cache) return ['failed', `prefetch ${model}: this machine has no model cache (its config lists no models)`];
    const spec = cache.catalogEntry(model);
    if (!spec && !cache.has(model)) {
      const catalog = cache.contents().catalog;
      return ['failed', `prefetch ${model}: not in this machine's catalog (${catalog.length > 0 ? `it lists ${catalog.slice(0, 20).join(', ')}${catalog.length > 20 ? ', ...' : ''}` : 'it is empty'})`];
    }
    const wasOnDisk = cache.has(model);
    const joined = !wasOnDisk && cache.isDownloading(model);
    const startedAt = performance.now();
    let result;
    try {
      result = await cache.ensure(model);
    } catch (error) {
      if (error instanceof ModelError && error.code === 'cache_full') {
        // the cache's message names the models in use (or downloading) that it may not evict, when there are any
        const blocked = /; (in use|downloading): /.test(error.message);
        return ['failed', `prefetch ${model}: ${blocked ? 'it does not fit without evicting models in use' : 'it does not fit in the cache budget'}: ${error.message}`];
      }
      return ['failed', `prefetch ${model}: ${(error as Error).message}`];
    }
    // the machine hash shows the model on disk by the time the outcome is read
    await this.publish();
    const { used_bytes, budget_bytes } = cache.contents();
    const budget = `cache ${used_bytes} of ${budget_bytes} bytes used`;
    if (wasOnDisk) return ['ok', `prefetch ${model}: already on disk (${result.size_bytes} bytes), marked as just used; ${budget}`];
    const seconds = ((performance.now() - startedAt) / 1_000).toFixed(1);
    return ['ok', `prefetch ${model}: ${joined ? 'joined the download in progress' : 'downloaded'}, ${result.size_bytes} bytes on disk after ${seconds} s, not pinned (evictable when unused); ${budget}`];
  }

  /**
   * Runs a command's work beside the command loop (a download or a load holds up
   * no other command), then acknowledges it, `settled` seeing the outcome first;
   * stop() waits for it.
   */
  private beside(
    work: Promise<[MachineCommandOutcome, string]>,
    command: MachineCommand,
    log: Logger,
    what: string,
    settled?: (outcome: [MachineCommandOutcome, string]) => void,
  ): void {
    const done = work
      .catch((error: unknown): [MachineCommandOutcome, string] => {
        log.error({ err: error }, `${what} failed`);
        return ['failed', (error as Error).message];
      })
      .then((outcome) => {
        settled?.(outcome);
        return this.acknowledge(command, ...outcome);
      })
      .finally(() => this.besideLoop.delete(done));
    this.besideLoop.add(done);
  }

  /**
   * Loads a model into an idle GPU's memory through its worker's connector (the
   * planner's warm load): the model must be on disk, or downloading (the load
   * waits for it to land), when the model cache knows it; a model the cache does
   * not list is the service's own business (Ollama keeps its own). Asked of the
   * idle workers in turn until one loads it; a busy worker, or a connector that
   * cannot load without a job (ComfyUI), refuses with why.
   */
  private async loadCommand(command: MachineCommand): Promise<[MachineCommandOutcome, string]> {
    const { model } = command;
    if (!model) return ['failed', 'load names no model'];
    const cache = this.cache;
    if (cache && (cache.has(model) || cache.catalogEntry(model))) {
      if (!cache.has(model)) {
        if (!cache.isDownloading(model)) return ['failed', `load ${model}: not on this machine's disk (prefetch it first)`];
        try {
          await cache.ensure(model);
        } catch (error) {
          return ['failed', `load ${model}: its download failed: ${(error as Error).message}`];
        }
      }
    }
    if (this.draining || this.stopRequested) return ['failed', `load ${model}: the machine is draining`];
    const workers = [...this.workers].filter(([, view]) => view.ready);
    const idle = workers.filter(([, view]) => view.running === 0);
    if (idle.length === 0) {
      return ['failed', `load ${model}: no idle worker on this machine (${workers.length === 0 ? 'none is ready' : workers.map(([name, view]) => `${name} runs ${view.running}`).join(', ')}): a load is for an idle GPU`];
    }
    const refusals: string[] = [];
    for (const [name] of idle) {
      const answer = await this.askLoad(name, `${command.id}/${name}`, model);
      if (answer.outcome === 'ok') return ['ok', `load ${model}: ${answer.message} (${name})`];
      refusals.push(`${name}: ${answer.message}`);
    }
    return ['failed', `load ${model}: ${refusals.join('; ')}`];
  }

  /** Asks one worker process to load a model; its load_done (or a timeout, or its absence) is the answer. */
  private askLoad(name: string, id: string, model: string): Promise<{ outcome: MachineCommandOutcome; message: string }> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish({ outcome: 'failed', message: `no answer within ${LOAD_ANSWER_MS / 1_000} s` }), LOAD_ANSWER_MS);
      const finish = (answer: { outcome: MachineCommandOutcome; message: string }) => {
        clearTimeout(timer);
        this.loadsAsked.delete(id);
        resolve(answer);
      };
      this.loadsAsked.set(id, finish);
      const message: SupervisorMessage = { type: 'load', id, model };
      if (!this.supervisor?.send(name, message)) finish({ outcome: 'failed', message: 'the worker process is not running' });
    });
  }

  private async evictCommand(model: string | undefined): Promise<[MachineCommandOutcome, string]> {
    const cache = this.cache;
    if (!model) return ['failed', 'evict names no model'];
    if (!cache) return ['failed', `evict ${model}: this machine has no model cache (its config lists no models)`];
    const outcome = await cache.evictChecked(model);
    if (!outcome.evicted) {
      switch (outcome.reason) {
        case 'in_use':
          return ['failed', `evict ${model}: in use by a job (${outcome.pins} holding it); not evicted`];
        case 'downloading':
          return ['failed', `evict ${model}: it is downloading; not evicted (evict it once the download ended)`];
        case 'not_on_disk':
          return ['failed', `evict ${model}: not on this machine's disk`];
      }
    }
    await this.publish();
    const { used_bytes, budget_bytes } = cache.contents();
    return ['ok', `evict ${model}: removed, ${outcome.size_bytes} bytes freed; cache ${used_bytes} of ${budget_bytes} bytes used`];
  }

  /** Workers stop claiming and hand their running jobs back (as infrastructure failures, not the user's attempts); services keep running. */
  private async drain(reason: DrainReason): Promise<void> {
    if (!this.draining) this.metrics.drains.inc({ reason });
    this.draining = true;
    this.changed();
    await this.publish();
    await this.supervisor?.stop(this.supervisor.names((s) => s.kind === 'worker'));
  }

  private async acknowledge(command: MachineCommand, outcome: MachineCommandOutcome, message: string): Promise<void> {
    this.lastCommand = { id: command.id, action: command.action, service: command.service, model: command.model, outcome, message, at: Date.now() };
    this.logger[outcome === 'ok' ? 'info' : 'warn']({ command: command.id, action: command.action, outcome, message }, 'command done');
    try {
      await this.broker!.machineCommandDone(this.config.pool, this.config.machine_id, command.id, outcome, message);
    } catch (error) {
      this.logger.warn({ err: error, command: command.id }, 'could not acknowledge the command');
    }
    // a prefetch ended by stop(): the last snapshot (offline) is written by stop() itself
    if (!this.closing) this.changed();
  }

  // ---------------------------------------------------------------- stopping

  private async shutdown(reason: StopReason): Promise<void> {
    this.stopRequested = true;
    this.installing.abort(new Error(`the machine agent is stopping (${reason})`));
    this.logger.info({ reason }, 'machine agent stopping');
    try {
      if (this.registered) {
        await this.drain(STOP_DRAIN_REASONS[reason]);
        this.closing = true;
        await this.supervisor?.stop();
      }
      this.closing = true;
      clearInterval(this.statusTimer);
      clearTimeout(this.publishTimer);
      this.publishTimer = undefined;
      clearTimeout(this.modelsTimer);
      this.modelsTimer = undefined;
      this.commandConnection?.close();
      await this.commandLoop;
      await this.processLogs?.flush();
      // the workers are gone and their pins with them: downloads stop (their .part files stay), the index is written
      await this.cache?.close();
      // prefetches cut off by the closing cache report so before the connection goes; loads the workers can no longer answer fail
      for (const finish of [...this.loadsAsked.values()]) finish({ outcome: 'failed', message: 'the machine agent stopped before the worker answered' });
      await Promise.allSettled([...this.besideLoop]);
      if (this.registered) {
        this.draining = false;
        this.state = 'offline';
        this.stateSince = Date.now();
        await this.publish();
      }
      await this.health.close();
      await this.redis?.quit().catch(() => this.redis?.disconnect());
      // the last spans (prefetches, downloads cut off) go out before the agent says it stopped
      if (this.ownTracing) await this.tracing.shutdown().catch((error: unknown) => this.logger.warn({ err: error }, 'could not send the last spans'));
      this.logger.info({ reason }, 'machine agent stopped');
    } finally {
      this.finish(reason);
    }
  }
}

const STOP_DRAIN_REASONS: Record<StopReason, DrainReason> = { 'shutdown command': 'shutdown_command', SIGTERM: 'sigterm', SIGINT: 'sigint', stopped: 'stopped' };

/** A short view of a process for the machine hash (the full one is at /status). */
function summary(p: MachineProcessStatus): ProcessSummary {
  return {
    name: p.name,
    kind: p.kind,
    state: p.state,
    pid: p.pid,
    restarts: p.restarts,
    last_exit: p.last_exit && describeExit(p.last_exit),
    last_exit_at: p.last_exit?.at,
    ready: p.worker?.ready,
    running: p.worker?.running,
    worker_id: p.workerId,
    reason: p.reason,
  };
}

/** A custom node's result as the status shows it: no credentials from its URL. */
function redactedResult(result: CustomNodeResult): CustomNodeResult {
  return { ...result, url: withoutCredentials(result.url), ...(result.error !== undefined && { error: withoutCredentials(result.error) }) };
}

/** The health server as this machine's own processes reach it (the model routes answer only loopback callers). */
function loopbackUrl(host: string, port: number): string {
  if (host === '0.0.0.0' || host === 'localhost' || host.startsWith('127.')) return `http://127.0.0.1:${port}`;
  if (host === '::' || host === '::1') return `http://[::1]:${port}`;
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** The nearest folder that exists on the way to `path` (the model cache may not be created yet). */
async function existingFolder(path: string): Promise<string> {
  let current = resolve(path);
  for (;;) {
    const isDir = await stat(current).then((s) => s.isDirectory(), () => false);
    if (isDir || dirname(current) === current) return current;
    current = dirname(current);
  }
}
