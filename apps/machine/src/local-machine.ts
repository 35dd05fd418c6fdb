import { fileURLToPath } from 'node:url';
import { processEntry } from '@emp/core';
import { freePort, isPortFree } from '@emp/core/redis-server';
import { type MachineConfig, MachineConfig as MachineConfigSchema } from './config';
import { nodeArgsFor } from './plan';

/** The stand-in service `npm start` runs (see simulated-service.ts): dist/simulated-service.js from the build. */
export const SIMULATED_SERVICE = processEntry(fileURLToPath(new URL('./simulated-service.ts', import.meta.url)), 'simulated-service');

export interface LocalMachineOptions {
  machineId?: string;
  pool?: string;
  /** workers (each with its simulated service) */
  workers: number;
  /** how long a simulated job runs */
  jobDurationMs?: number | { min: number; max: number };
  /** folder of the processes' log files */
  logsDir: string;
  /** the health server's port; 0 (default) takes a free one */
  healthPort?: number;
  /** how long the simulated service "loads" before it answers /ready */
  warmupMs?: number;
  /** on stop, how long running jobs may finish before they are handed back (default 0: at once) */
  graceMs?: number;
  /** the workers' lease (and so their heartbeat); the broker's default otherwise */
  leaseMs?: number;
  /** how often the agent sends its full status snapshot */
  statusIntervalMs?: number;
}

/**
 * The machine `npm start` runs: no GPUs (hardware overridden), `workers` CPU
 * slots, each with the simulated service (on free loopback ports) and a worker
 * running the simulation connector, which waits for its service like a real
 * worker waits for ComfyUI.
 */
export async function localMachineConfig(options: LocalMachineOptions): Promise<MachineConfig> {
  return MachineConfigSchema.parse({
    machine_id: options.machineId ?? 'local-sim',
    pool: options.pool ?? 'standard',
    services: [
      {
        name: 'simulation',
        command: process.execPath,
        args: nodeArgsFor(SIMULATED_SERVICE),
        port_base: await freePortRange(options.workers),
        env: { EMP_SIM_WARMUP_MS: String(options.warmupMs ?? 200) },
        ready_path: '/ready',
      },
    ],
    connectors: [{ type: 'simulation', options: { durationMs: options.jobDurationMs } }],
    hardware: { gpus: [] },
    cpu_workers: options.workers,
    health_port: options.healthPort ?? 0,
    health_host: '127.0.0.1',
    logs: { dir: options.logsDir },
    worker: { grace_ms: options.graceMs ?? 0, lease_ms: options.leaseMs },
    status_interval_ms: options.statusIntervalMs,
    supervision: { stop_timeout_ms: (options.graceMs ?? 0) + 5_000 },
  });
}

/** The first of `count` consecutive free loopback ports (`port_base + i` for each slot). */
export async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const base = await freePort();
    if (base + count > 65_000) continue;
    const others = await Promise.all(Array.from({ length: count - 1 }, (_, i) => isPortFree(base + i + 1)));
    if (others.every(Boolean)) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}
