// Only for test files: useTestAgents registers vitest hooks.
/** What the machine agent's tests share: a config around the simulated service, agents stopped after each test, and reading a machine's record and events. */
import type { Broker, StreamEventOf, StreamEventType } from '@emp/core';
import { MachineAgent, type MachineAgentOptions, MachineConfig, SIMULATED_SERVICE, freePortRange, nodeArgsFor } from '@emp/machine';
import { pino } from 'pino';
import { afterEach } from 'vitest';
import { temporaryFolder } from './temporary-folder';

export const POOL = 'standard';

/** A service entry running the simulated service (ready after `warmupMs`). */
export async function simulatedServiceSpec(name: string, slots: number, warmupMs = 100) {
  return {
    name,
    command: process.execPath,
    args: nodeArgsFor(SIMULATED_SERVICE),
    port_base: await freePortRange(slots),
    env: { EMP_SIM_WARMUP_MS: String(warmupMs) },
    ready_path: '/ready',
  };
}

/** A machine without GPUs, fast restarts and a short status interval; `overrides` replace top-level fields. */
export function testMachineConfig(logsDir: string, overrides: Record<string, unknown>): MachineConfig {
  return MachineConfig.parse({
    machine_id: 'm1',
    pool: POOL,
    connectors: [{ type: 'simulation', options: { durationMs: 100, steps: 1 } }],
    hardware: { gpus: [] },
    health_port: 0,
    health_host: '127.0.0.1',
    logs: { dir: logsDir },
    storage: { models_dir: logsDir },
    supervision: { restart_backoff_ms: 50, max_restart_backoff_ms: 400, crash_loop_restarts: 3, crash_loop_window_ms: 60_000, stop_timeout_ms: 5_000 },
    status_interval_ms: 1_000,
    ...overrides,
  });
}

export interface TestAgents {
  /** a temporary folder, removed after the test */
  folder(): Promise<string>;
  /** an agent on the test's Redis, not started yet; stopped after the test */
  create(config: MachineConfig, options?: Partial<MachineAgentOptions>): MachineAgent;
  /** the same, started */
  start(config: MachineConfig, options?: Partial<MachineAgentOptions>): Promise<MachineAgent>;
}

/** Agents and folders made by a test, stopped and removed after it (the last made first). Call it at the top level of a test file. */
export function useTestAgents(redisUrl: () => string): TestAgents {
  const cleanup: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });
  const create = (config: MachineConfig, options: Partial<MachineAgentOptions> = {}) => {
    const agent = new MachineAgent({ config, redisUrl: redisUrl(), logger: pino({ level: 'silent' }), ...options });
    cleanup.push(() => agent.stop());
    return agent;
  };
  return {
    async folder() {
      const folder = await temporaryFolder();
      cleanup.push(folder.remove);
      return folder.path;
    },
    create,
    async start(config, options) {
      const agent = create(config, options);
      await agent.start();
      return agent;
    },
  };
}

export async function machineRecord(broker: Broker, id = 'm1'): Promise<Record<string, string>> {
  return (await broker.machine(POOL, id)) ?? {};
}

export async function machineEvents<T extends StreamEventType>(broker: Broker, type: T, id = 'm1'): Promise<Array<StreamEventOf<T>>> {
  const events = await broker.readEvents(POOL, '0', { count: 100_000 });
  return events.filter((e): e is StreamEventOf<T> => e.type === type && 'machine' in e && e.machine === id);
}

/** Whether a process with this pid is still alive. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
