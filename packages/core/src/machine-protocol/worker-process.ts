/**
 * The contract between the machine agent and the worker processes it runs:
 * the config a worker process gets (as JSON in EMP_WORKER_CONFIG) and the
 * messages both sides send over the process's IPC channel.
 */
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { MachineId, WorkerCapabilities, WorkerId } from '../capabilities';
import { ValidationError } from '../errors';
import { processEntry } from '../process-entry';
import { ModelName, PoolName } from '../requirements';
import { parseWith } from '../validation';
import { ComfyUIOptions, ComfyUIRemoteOptions, HttpServiceOptions, OllamaOptions, OpenAIOptions, SimulationOptions } from './connector-options';

/**
 * What a worker process is told to run: its connectors by type with their
 * options (an asset store is configured once for the process, never inline),
 * its identity, and the services it waits for before it claims.
 */
export const ConnectorSpec = z.discriminatedUnion('type', [
  z.object({ type: z.literal('simulation'), options: SimulationOptions.prefault({}) }).strict(),
  z.object({ type: z.literal('comfyui'), options: ComfyUIOptions.prefault({}) }).strict(),
  z.object({ type: z.literal('comfyui-remote'), options: ComfyUIRemoteOptions }).strict(),
  z.object({ type: z.literal('ollama'), options: OllamaOptions.prefault({}) }).strict(),
  z.object({ type: z.literal('openai'), options: OpenAIOptions.prefault({}) }).strict(),
  z.object({ type: z.literal('http'), options: HttpServiceOptions }).strict(),
]);
export type ConnectorSpec = z.output<typeof ConnectorSpec>;
export const CONNECTOR_TYPES = ConnectorSpec.options.map((option) => option.shape.type.value);
export type ConnectorType = ConnectorSpec['type'];
/** The connectors that drive a ComfyUI (and so take a node policy). */
export const COMFYUI_CONNECTOR_TYPES: readonly ConnectorType[] = ['comfyui', 'comfyui-remote'];

/** Where result files go: one store per process, shared by the connectors that write files (ComfyUI). */
export const AssetStoreSpec = z.discriminatedUnion('type', [
  z.object({ type: z.literal('local'), directory: z.string().min(1), baseUrl: z.string().url().optional() }).strict(),
  // validated by the store's own schema when it is built (its SDK loads only then)
  z.object({ type: z.literal('s3') }).catchall(z.unknown()),
  z.object({ type: z.literal('azure') }).catchall(z.unknown()),
]);
export type AssetStoreSpec = z.output<typeof AssetStoreSpec>;

const Milliseconds = z.number().int().min(0).max(86_400_000);

export const WorkerProcessConfig = z
  .object({
    redis_url: z.string().regex(/^rediss?:\/\/\S+$/, 'a Redis URL starts with redis:// or rediss://'),
    /** the broker's key namespace and lease; the broker's defaults otherwise */
    namespace: z.string().optional(),
    lease_ms: z.number().int().min(100).optional(),
    worker_id: WorkerId,
    pool: PoolName,
    machine_id: MachineId.default('local'),
    concurrency: z.number().int().min(1).max(1_000).default(1),
    /** what the worker offers besides its connectors' services (hardware, models, labels, ...) */
    capabilities: WorkerCapabilities.omit({ services: true }).partial().default({}),
    connectors: z.array(ConnectorSpec).min(1).max(16),
    assets: AssetStoreSpec.optional(),
    /** GET each URL until it answers 2xx before the first claim (the service this worker drives) */
    wait_for: z.array(z.string().url()).max(16).default([]),
    /** how long to wait for them before giving up (the process then exits 1 and its supervisor restarts it) */
    ready_timeout_ms: Milliseconds.default(600_000),
    /**
     * the machine agent's model routes (its health server, on loopback): a job
     * whose requirements name models waits there until they are on disk, as
     * `downloading_model` progress; without it, models are the connector's business
     */
    models_url: z.url({ protocol: /^https?$/, error: 'the model routes are an http(s) URL' }).optional(),
    /** models of its last completed jobs the worker reports as loaded in memory (docs/broker.md, "Model affinity"); default 4 */
    warm_models: z.number().int().min(0).max(64).optional(),
    /** the broker's affinityWaitMs for this worker's claims (how long a job is left for a worker holding its models); default 0 (none) */
    affinity_wait_ms: z.number().int().min(0).optional(),
    /** on SIGTERM, how long running jobs may finish before they are handed back (0: at once, the spot-preemption default) */
    grace_ms: Milliseconds.default(0),
    region: z.string().max(64).optional(),
    deployment_env: z.string().max(64).optional(),
    log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict()
  .superRefine((config, ctx) => {
    const seen = new Set<string>();
    config.connectors.forEach((connector, index) => {
      const service = connector.options.service;
      if (seen.has(service)) ctx.addIssue({ code: 'custom', path: ['connectors', index, 'options', 'service'], message: `a second connector for service '${service}'` });
      seen.add(service);
      if ((connector.type === 'comfyui' || connector.type === 'comfyui-remote') && !config.assets) {
        ctx.addIssue({ code: 'custom', path: ['assets'], message: `connector ${connector.type} writes result files: configure an asset store` });
      }
    });
  });
export type WorkerProcessConfig = z.output<typeof WorkerProcessConfig>;
export type WorkerProcessConfigInput = z.input<typeof WorkerProcessConfig>;

/**
 * The worker process's entry: dist/worker.js from the build, else the worker's
 * main.ts (run it with `node --import tsx`). The machine agent starts workers
 * by this path and never loads their code.
 */
export const WORKER_MAIN = processEntry(fileURLToPath(new URL('../../../../apps/worker/src/main.ts', import.meta.url)), 'worker');

/** The environment variable holding a worker process's config as JSON. */
export const WORKER_CONFIG_ENV = 'EMP_WORKER_CONFIG';

/** Reads the worker process's config from EMP_WORKER_CONFIG (JSON); every problem names the field. */
export function workerConfigFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerProcessConfig {
  const what = `worker config ${WORKER_CONFIG_ENV}`;
  const text = env[WORKER_CONFIG_ENV];
  if (text === undefined || text.trim() === '') throw new ValidationError(what, [{ path: '', message: 'not set: it holds the config as JSON' }]);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ValidationError(what, [{ path: '', message: `not JSON: ${(error as Error).message}` }]);
  }
  return parseWith(WorkerProcessConfig, raw, what);
}

/** What a worker process tells its supervisor over the IPC channel (when it has one). */
export const WorkerProcessMessage = z.discriminatedUnion('type', [
  /** waiting for these services to answer before claiming */
  z.object({ type: z.literal('waiting'), urls: z.array(z.string()) }),
  /** registered and claiming */
  z.object({ type: z.literal('ready'), worker_id: z.string() }),
  /** jobs in flight changed */
  z.object({ type: z.literal('jobs'), running: z.number().int().min(0) }),
  /** draining: no more claims; unfinished jobs go back */
  z.object({ type: z.literal('stopping') }),
  /** the outcome of a `load` the supervisor asked for (same id), with why */
  z.object({ type: z.literal('load_done'), id: z.string().min(1), outcome: z.enum(['ok', 'failed']), message: z.string() }),
]);
export type WorkerProcessMessage = z.infer<typeof WorkerProcessMessage>;

/** What the supervisor tells a worker process over the IPC channel. */
export const SupervisorMessage = z.discriminatedUnion('type', [
  /** what the machine offers changed (a model arrived or was evicted): register again with these */
  z
    .object({
      type: z.literal('capabilities'),
      // without their defaults: a message that leaves one out leaves it as it is
      capabilities: z
        .object({ models: WorkerCapabilities.shape.models.unwrap().optional(), custom_nodes: WorkerCapabilities.shape.custom_nodes.unwrap().optional() })
        .strict(),
    })
    .strict(),
  /**
   * load a model into the GPU's memory through the connector of the service that
   * runs it, with no job (the planner's warm load, a `load` machine command):
   * answered by a `load_done` of the same id; refused while the worker runs a job
   */
  z.object({ type: z.literal('load'), id: z.string().min(1), model: ModelName }).strict(),
]);
export type SupervisorMessage = z.infer<typeof SupervisorMessage>;
