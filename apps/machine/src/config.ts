import { readFile } from 'node:fs/promises';
import { MachineId, PoolName, ServiceName, ValidationError, parseWith } from '@emp/core';
import { z } from 'zod';
import { HardwareOverrides } from './hardware';

const EnvName = z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'an environment variable name is capitals, digits and _');

/** A service started once per GPU (ComfyUI, say), on `port_base + gpu index`, with CUDA_VISIBLE_DEVICES set to its GPU. */
export const ServiceSpec = z
  .object({
    name: ServiceName,
    command: z.string().min(1),
    args: z.array(z.string()).default([]),
    port_base: z.number().int().min(1).max(65_000),
    env: z.record(EnvName, z.string()).default({}),
    /** GET this path until it answers 2xx before the GPU's worker claims */
    ready_path: z.string().startsWith('/').default('/'),
  })
  .strict();

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

export const MachineConfig = z
  .object({
    machine_id: MachineId,
    pool: PoolName,
    region: z.string().max(64).optional(),
    /** services each GPU runs, each with a worker in front (no GPUs: one worker on the CPU) */
    services: z.array(ServiceSpec).max(8).default([]),
    /** connectors each worker runs, named by service (simulation, comfyui, ollama, ...) */
    connectors: z.array(ServiceName).min(1),
    models: z.array(ModelSpec).default([]),
    custom_nodes: z.array(CustomNodeSpec).default([]),
    storage: z
      .object({
        models_dir: z.string().min(1).default('./models'),
        budget_gb: z.number().positive().default(100),
      })
      .strict()
      .default({ models_dir: './models', budget_gb: 100 }),
    health_port: z.number().int().min(0).max(65_535).default(9090),
    hardware: HardwareOverrides.optional(),
  })
  .strict();
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
