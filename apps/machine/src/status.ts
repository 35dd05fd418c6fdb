import type { MachineState } from '@emp/core';
import type { CustomNodeResult } from './custom-nodes';
import type { Hardware } from './hardware';
import type { ModelCacheContents } from './models';
import type { ProcessStatus } from './supervisor';

/**
 * starting: until every worker has started once; ready: every process runs and
 * every worker claims; degraded: a process is down (restarting, or failed after
 * a crash loop); draining: workers stopped on purpose (drain, shutdown, SIGTERM);
 * offline: the agent stopped (the broker also marks a silent machine offline).
 */
export { MACHINE_STATES, type MachineState } from '@emp/core';

/** What a worker process told the agent over IPC. */
export interface WorkerView {
  ready: boolean;
  /** jobs in flight */
  running: number;
  /** waiting for its service to answer before it claims */
  waiting_for?: string[];
}

export interface MachineProcessStatus extends ProcessStatus {
  worker?: WorkerView;
}

export interface MachineStatus {
  machine_id: string;
  pool: string;
  region?: string;
  state: MachineState;
  state_since: number;
  registered: boolean;
  hostname: string;
  pid: number;
  started_at: number;
  health_url?: string;
  hardware: Hardware;
  processes: MachineProcessStatus[];
  /** the model cache (when the config lists models): what is on disk, pinned by jobs, downloading */
  models?: ModelCacheContents;
  /** the custom nodes (when the config lists some): installed once, before any process starts */
  custom_nodes?: CustomNodesStatus;
  last_command?: { id: string; action: string; service?: string; model?: string; outcome: 'ok' | 'failed'; message: string; at: number };
}

export interface CustomNodesStatus {
  state: 'installing' | 'installed';
  /** ComfyUI's custom_nodes folder */
  dir: string;
  /** one per node as soon as it is known (credentials in URLs and errors removed) */
  results: CustomNodeResult[];
}

/** `scheme://user:secret@host` -> `scheme://host`, wherever it appears in `text` (URLs, and errors that quote them). */
export function withoutCredentials(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)[^@/\s]*@/gi, '$1');
}

/** The machine's state from its processes (draining and offline are set by the agent, not derived). */
export function derivedState(processes: MachineProcessStatus[], startedOnce: boolean): MachineState {
  const healthy = processes.every((p) => p.state === 'running' && (p.kind !== 'worker' || p.worker?.ready));
  if (healthy) return 'ready';
  if (processes.some((p) => p.state === 'failed')) return 'degraded';
  return startedOnce ? 'degraded' : 'starting';
}
