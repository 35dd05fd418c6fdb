import { readFile } from 'node:fs/promises';
import { AssetStoreSpec, COMFYUI_CONNECTOR_TYPES, ComfyNodePolicy, ConnectorSpec, MachineId, PoolName, ServiceName, ValidationError, parseWith } from '@emp/core';
import { z } from 'zod';
import { HardwareOverrides } from './hardware';

const EnvName = z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'an environment variable name is capitals, digits and _');

/**
 * A service started once per GPU (ComfyUI, say), on `port_base + gpu index`, with
 * CUDA_VISIBLE_DEVICES set to its GPU. In `args` and `env` values `{port}` and
 * `{gpu}` are replaced by the process's port and GPU index; PORT is set too.
 */
export const ServiceSpec = z
  .object({
    name: ServiceName,
    command: z.string().min(1),
    args: z.array(z.string()).default([]),
    port_base: z.number().int().min(1).max(65_000),
    env: z.record(EnvName, z.string()).default({}),
    /** the folder it runs in; the agent's by default */
    cwd: z.string().min(1).optional(),
    /** GET this path until it answers 2xx before the GPU's worker claims */
    ready_path: z.string().startsWith('/').default('/'),
  })
  .strict();
export type ServiceSpec = z.output<typeof ServiceSpec>;

export const ModelSpec = z
  .object({
    name: z.string().min(1).max(200),
    url: z.string().url(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'a sha256 is 64 lowercase hex digits').optional(),
    /** folder under the model cache, e.g. checkpoints */
    folder: z.string().regex(/^[a-z0-9_/-]+$/).default('checkpoints'),
  })
  .strict();

/** The URL in `git clone --depth 1 <url> [dir]`, or the text itself when it is no such line. */
function repositoryOf(text: string): string {
  const words = text.trim().split(/\s+/);
  if (words[0] !== 'git' || words[1] !== 'clone') return text.trim();
  return words.slice(2).find((word) => !word.startsWith('-') && /^[a-z+]+:\/\/|^git@/.test(word)) ?? text.trim();
}

export const CustomNodeSpec = z
  .object({
    /** a repository URL; a line copied as `git clone [flags] <url> [dir]` is accepted too */
    url: z.string().transform(repositoryOf).pipe(z.string().url()),
    branch: z.string().optional(),
    recursive: z.boolean().default(false),
    /** pip-install its requirements.txt */
    requirements: z.boolean().default(false),
    /** written to the node's .env */
    env: z.record(EnvName, z.string()).default({}),
  })
  .strict();

/**
 * A connector each worker runs: its type alone (`"comfyui"`), or the type with
 * options and `uses`, the service (in `services`) it drives: the worker gets that
 * service's URL on its GPU as `baseUrl` and waits for it before claiming. By
 * default a connector uses the service of its own name, when there is one.
 */
const MachineConnector = z.preprocess(
  (value) => (typeof value === 'string' ? { type: value } : value),
  z.discriminatedUnion(
    'type',
    ConnectorSpec.options.map((option) => option.extend({ uses: ServiceName.optional() })) as unknown as [typeof ConnectorSpec.options[0]],
  ),
) as unknown as z.ZodType<ConnectorSpec & { uses?: string }, unknown>;
export type MachineConnector = z.output<typeof MachineConnector>;

const Milliseconds = z.number().int().min(0).max(86_400_000);

/** How dead processes are restarted, and when a crash loop makes one `failed`. */
export const SupervisionSpec = z
  .object({
    /** wait before the first restart; doubled for each further exit within the window */
    restart_backoff_ms: Milliseconds.default(1_000),
    max_restart_backoff_ms: Milliseconds.default(30_000),
    /** more exits than this within `crash_loop_window_ms`: the process is `failed` and left alone (until a restart command) */
    crash_loop_restarts: z.number().int().min(0).max(1_000).default(5),
    crash_loop_window_ms: Milliseconds.default(120_000),
    /** SIGTERM to a process group, then SIGKILL after this long */
    stop_timeout_ms: Milliseconds.default(10_000),
  })
  .strict();

/** What every worker process gets besides its connectors. */
export const WorkerSpec = z
  .object({
    concurrency: z.number().int().min(1).max(64).default(1),
    /** on drain or SIGTERM, how long running jobs may finish before they are handed back (0: at once) */
    grace_ms: Milliseconds.default(0),
    /** the lease its claims carry (its heartbeat renews it at a third of this); the broker's default (30 s) otherwise */
    lease_ms: z.number().int().min(100).max(86_400_000).optional(),
    /** how long a worker waits for its service to answer `ready_path` */
    ready_timeout_ms: Milliseconds.default(600_000),
    /** extra capability labels (the GPU's name and the region are added) */
    labels: z.record(z.string(), z.unknown()).default({}),
    /** where result files go (required by the ComfyUI connectors) */
    assets: AssetStoreSpec.optional(),
    log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict();

/** Rotated files of every supervised process's output (the same lines go to Redis). */
export const LogsSpec = z
  .object({
    dir: z.string().min(1).default('./logs'),
    max_file_bytes: z.number().int().min(1_024).default(10 * 1024 * 1024),
    files_kept: z.number().int().min(0).max(100).default(3),
  })
  .strict();

export const MachineConfig = z
  .object({
    machine_id: MachineId,
    pool: PoolName,
    region: z.string().max(64).optional(),
    /** services each GPU runs, each with a worker in front (no GPUs: one worker on the CPU) */
    services: z.array(ServiceSpec).max(8).default([]),
    /** connectors each worker runs (simulation, comfyui, comfyui-remote, ollama, openai, http) */
    connectors: z.array(MachineConnector).min(1).max(16),
    models: z.array(ModelSpec).default([]),
    custom_nodes: z.array(CustomNodeSpec).default([]),
    /** ComfyUI's custom_nodes folder: where `custom_nodes` are installed, once per machine, before any process starts */
    custom_nodes_dir: z.string().min(1).optional(),
    /** the command that installs a node's requirements.txt, run as `[...pip, '-r', file]` (e.g. the python of ComfyUI's venv with `-m pip install`) */
    custom_nodes_pip: z.array(z.string().min(1)).min(1).max(16).default(['pip', 'install']),
    /**
     * which node types (class_type) this machine's ComfyUI connectors submit:
     * `{allow?, deny}`; every worker gets it as its connectors' `nodePolicy`.
     * Absent: any node the workflow names
     */
    comfyui_node_policy: ComfyNodePolicy.optional(),
    storage: z
      .object({
        models_dir: z.string().min(1).default('./models'),
        budget_gb: z.number().positive().default(100),
      })
      .strict()
      .default({ models_dir: './models', budget_gb: 100 }),
    health_port: z.number().int().min(0).max(65_535).default(9090),
    /** address the health server listens on */
    health_host: z.string().min(1).default('0.0.0.0'),
    hardware: HardwareOverrides.optional(),
    /** the broker's Redis (REDIS_URL or the CLI's --redis otherwise) */
    redis_url: z.string().regex(/^rediss?:\/\/\S+$/, 'a Redis URL starts with redis:// or rediss://').optional(),
    /** workers on a machine without GPUs (each with its services, on port_base + i) */
    cpu_workers: z.number().int().min(1).max(64).default(1),
    worker: WorkerSpec.prefault({}),
    supervision: SupervisionSpec.prefault({}),
    logs: LogsSpec.prefault({}),
    /** how often the full status snapshot is written (changes are written at once) */
    status_interval_ms: z.number().int().min(100).max(300_000).default(15_000),
    /** a command older than this when the agent reads it (issued while no agent ran) is refused, not executed */
    command_max_age_ms: Milliseconds.default(600_000),
  })
  .strict()
  .superRefine((config, ctx) => {
    const names = new Set<string>();
    config.services.forEach((service, index) => {
      if (names.has(service.name)) ctx.addIssue({ code: 'custom', path: ['services', index, 'name'], message: `a second service named ${service.name}` });
      names.add(service.name);
    });
    if (config.custom_nodes.length > 0 && config.custom_nodes_dir === undefined) {
      ctx.addIssue({ code: 'custom', path: ['custom_nodes_dir'], message: 'custom_nodes are installed into ComfyUI\'s custom_nodes folder: name it (e.g. /opt/ComfyUI/custom_nodes)' });
    }
    const connectorServices = new Set<string>();
    config.connectors.forEach((connector, index) => {
      if (connector.uses !== undefined && !names.has(connector.uses)) {
        ctx.addIssue({ code: 'custom', path: ['connectors', index, 'uses'], message: `no service named ${connector.uses} (services: ${[...names].join(', ') || 'none'})` });
      }
      const service = connector.options.service;
      if (connectorServices.has(service)) ctx.addIssue({ code: 'custom', path: ['connectors', index], message: `a second connector for service '${service}'` });
      connectorServices.add(service);
      if ((connector.type === 'comfyui' || connector.type === 'comfyui-remote') && !config.worker.assets) {
        ctx.addIssue({ code: 'custom', path: ['worker', 'assets'], message: `connector ${connector.type} writes result files: configure an asset store` });
      }
      if (config.comfyui_node_policy && COMFYUI_CONNECTOR_TYPES.includes(connector.type) && (connector.options as { nodePolicy?: unknown }).nodePolicy !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['connectors', index, 'options', 'nodePolicy'],
          message: 'comfyui_node_policy already sets the node policy of every ComfyUI connector: set it in one place',
        });
      }
    });
  });
export type MachineConfig = z.output<typeof MachineConfig>;

const REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/**
 * Replaces `${VAR}` (and `${VAR:-default}`) in every string of `value` with the
 * environment's value; `$${` stays a literal `${`. A variable that is neither
 * set nor defaulted is an error naming where it was used.
 */
export function expandEnv(value: unknown, env: NodeJS.ProcessEnv, path: string[] = []): unknown {
  if (typeof value === 'string') {
    const missing: string[] = [];
    const expanded = value
      .split('$${')
      .map((part) =>
        part.replace(REFERENCE, (_match, name: string, fallback: string | undefined) => {
          const found = env[name];
          if (found !== undefined && found !== '') return found;
          if (fallback !== undefined) return fallback;
          missing.push(name);
          return '';
        }),
      )
      .join('${');
    if (missing.length > 0) {
      throw new ValidationError('machine config', [
        { path: path.join('.'), message: `environment variable ${missing.join(', ')} is not set (use \${NAME:-default} for a default)` },
      ]);
    }
    return expanded;
  }
  if (Array.isArray(value)) return value.map((item, i) => expandEnv(item, env, [...path, String(i)]));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, expandEnv(item, env, [...path, key])]));
  }
  return value;
}

/** Reads, expands and validates a machine config (JSON); every problem names the file and the field. */
export async function loadMachineConfig(file: string, env: NodeJS.ProcessEnv = process.env): Promise<MachineConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    throw new ValidationError(`machine config ${file}`, [{ path: '', message: (error as Error).message }]);
  }
  try {
    return parseWith(MachineConfig, expandEnv(raw, env), `machine config ${file}`);
  } catch (error) {
    if (error instanceof ValidationError && error.what === 'machine config') {
      throw new ValidationError(`machine config ${file}`, error.issues);
    }
    throw error;
  }
}
