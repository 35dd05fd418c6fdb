import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { COMFYUI_CONNECTOR_TYPES, type ConnectorSpec, WORKER_CONFIG_ENV, WORKER_MAIN, type WorkerProcessConfigInput } from '@emp/core';
import type { MachineConfig, MachineConnector, ServiceSpec } from './config';
import type { GpuInfo, Hardware } from './hardware';

/** A process the agent supervises: one service or one worker of one slot (a GPU, or a CPU share). */
export interface ProcessSpec {
  /** `<service>-<slot>` for a service, `worker-<primary>-<slot>` for a worker: the name in logs, status and commands */
  name: string;
  kind: 'service' | 'worker';
  /** `gpu<i>` or `cpu<i>` */
  slot: string;
  /** a service process's service name (what `restart` with a service matches) */
  service?: string;
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd?: string;
  /** a service process's port */
  port?: number;
  /** a worker process's id in the broker */
  workerId?: string;
}

export interface PlanOptions {
  redisUrl: string;
  /** how a worker process is started; `node <worker main>` by default (through tsx when it is TypeScript) */
  workerCommand?: { command: string; args: string[] };
  /** the agent's model routes: workers ensure their jobs' models there */
  modelsUrl?: string;
  /** what the machine offers every worker: models per service (from the model cache), installed custom nodes */
  capabilities?: { models?: Record<string, string[]>; custom_nodes?: string[] };
}

/** The slots of a machine: one per GPU, or `cpu_workers` of them when it has none. */
export function slotsOf(config: MachineConfig, hardware: Hardware): Array<{ name: string; index: number; gpu?: GpuInfo }> {
  if (hardware.gpus.length > 0) return hardware.gpus.map((gpu) => ({ name: `gpu${gpu.index}`, index: gpu.index, gpu }));
  return Array.from({ length: config.cpu_workers }, (_, index) => ({ name: `cpu${index}`, index }));
}

/** The service that names a slot's processes: the first configured service, else the first connector's. */
export function primaryOf(config: MachineConfig): string {
  return config.services[0]?.name ?? config.connectors[0]!.options.service;
}

/** The services every worker runs (one per connector). */
export function workerServicesOf(config: MachineConfig): string[] {
  return config.connectors.map((connector) => connector.options.service);
}

/** The worker id in the broker: unique across the pool because it starts with the machine's id. */
export function workerIdOf(config: MachineConfig, slot: string): string {
  return `${config.machine_id}.${primaryOf(config)}-${slot}`;
}

/**
 * Every process of the machine: for each slot, its services (port
 * `port_base + slot index`, CUDA_VISIBLE_DEVICES = its GPU) and one worker
 * running every connector, told the URLs of the services it drives.
 */
export function planProcesses(config: MachineConfig, hardware: Hardware, options: PlanOptions): ProcessSpec[] {
  const primary = primaryOf(config);
  const workerCommand = options.workerCommand ?? defaultWorkerCommand();
  return slotsOf(config, hardware).flatMap((slot) => {
    const ports = new Map(config.services.map((service) => [service.name, service.port_base + slot.index]));
    const gpuEnv: Record<string, string> = slot.gpu ? { CUDA_VISIBLE_DEVICES: String(slot.gpu.index) } : {};
    const services: ProcessSpec[] = config.services.map((service) => {
      const port = ports.get(service.name)!;
      const fill = (text: string) => text.replaceAll('{port}', String(port)).replaceAll('{gpu}', slot.gpu ? String(slot.gpu.index) : '');
      return {
        name: `${service.name}-${slot.name}`,
        kind: 'service',
        slot: slot.name,
        service: service.name,
        command: service.command,
        args: service.args.map(fill),
        env: { PORT: String(port), ...gpuEnv, ...Object.fromEntries(Object.entries(service.env).map(([key, value]) => [key, fill(value)])) },
        cwd: service.cwd,
        port,
      };
    });

    const urlOf = (service: ServiceSpec) => `http://127.0.0.1:${ports.get(service.name)}`;
    const used = config.connectors.map((connector) => serviceUsedBy(config, connector));
    const connectors = config.connectors.map(({ uses: _uses, ...declared }, index) => {
      const connector = withNodePolicy(config, declared);
      const service = used[index];
      // the simulation connector talks to no service: it only waits for it
      if (!service || connector.type === 'simulation') return connector;
      return { ...connector, options: { ...connector.options, baseUrl: connector.type === 'openai' ? `${urlOf(service)}/v1` : urlOf(service) } };
    });
    const waitFor = [...new Set(used.filter((service) => service !== undefined).map((service) => `${urlOf(service)}${service.ready_path}`))];
    const workerId = workerIdOf(config, slot.name);
    const workerConfig: WorkerProcessConfigInput = {
      redis_url: options.redisUrl,
      worker_id: workerId,
      pool: config.pool,
      machine_id: config.machine_id,
      concurrency: config.worker.concurrency,
      capabilities: {
        hardware: {
          cpu_cores: hardware.cpu_cores,
          ram_gb: hardware.ram_gb,
          gpu_memory_gb: slot.gpu && Math.round((slot.gpu.memory_total_mb / 1024) * 10) / 10,
        },
        labels: {
          gpu: slot.gpu?.name,
          region: config.region || undefined,
          ...(config.worker.labels as Record<string, never>),
        },
        models: options.capabilities?.models,
        custom_nodes: options.capabilities?.custom_nodes,
      },
      connectors: connectors as WorkerProcessConfigInput['connectors'],
      assets: config.worker.assets,
      wait_for: waitFor,
      ready_timeout_ms: config.worker.ready_timeout_ms,
      models_url: options.modelsUrl,
      grace_ms: config.worker.grace_ms,
      lease_ms: config.worker.lease_ms,
      region: config.region || undefined,
      log_level: config.worker.log_level,
    };
    const worker: ProcessSpec = {
      name: `worker-${primary}-${slot.name}`,
      kind: 'worker',
      slot: slot.name,
      command: workerCommand.command,
      args: workerCommand.args,
      env: { ...gpuEnv, [WORKER_CONFIG_ENV]: JSON.stringify(workerConfig) },
      workerId,
    };
    return [...services, worker];
  });
}

/** A ComfyUI connector gets the machine's node policy (the config allows no second one on the connector). */
function withNodePolicy(config: MachineConfig, connector: ConnectorSpec): ConnectorSpec {
  if (!config.comfyui_node_policy || !COMFYUI_CONNECTOR_TYPES.includes(connector.type)) return connector;
  return { ...connector, options: { ...connector.options, nodePolicy: config.comfyui_node_policy } } as ConnectorSpec;
}

/** The service a connector drives: the one it `uses`, else the one of its own type or service name. */
function serviceUsedBy(config: MachineConfig, connector: MachineConnector): ServiceSpec | undefined {
  if (connector.uses !== undefined) return config.services.find((s) => s.name === connector.uses);
  return config.services.find((s) => s.name === connector.type || s.name === connector.options.service);
}

/** `node <worker main>`: the built worker (dist/worker.js) when the agent runs from the build, else its TypeScript through tsx. */
export function defaultWorkerCommand(): { command: string; args: string[] } {
  return { command: process.execPath, args: nodeArgsFor(WORKER_MAIN) };
}

/** The arguments that make `node` run `entry`: a built .js file as it is, a TypeScript file through tsx. */
export function nodeArgsFor(entry: string): string[] {
  if (!entry.endsWith('.ts')) return [entry];
  // tsx found from this package, not from the working folder
  return ['--import', pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href, entry];
}
