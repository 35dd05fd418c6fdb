import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { LineSplitter } from './output-lines';
import type { ProcessSpec } from './plan';

/** How dead processes are restarted (see SupervisionSpec in the machine config). */
export interface RestartPolicy {
  restartBackoffMs: number;
  maxRestartBackoffMs: number;
  /** more exits than this within the window: `failed`, no more restarts */
  crashLoopRestarts: number;
  crashLoopWindowMs: number;
  /** SIGTERM, then SIGKILL after this long */
  stopTimeoutMs: number;
}

/** running: alive; backoff: exited, restarting after a delay; stopping / stopped: on purpose; failed: crash loop, left alone. */
export type ProcessState = 'running' | 'backoff' | 'stopping' | 'stopped' | 'failed';

export interface ProcessExit {
  code: number | null;
  signal: string | null;
  at: number;
  /** it could not be started at all (command not found, say) */
  error?: string;
}

export interface ProcessStatus {
  name: string;
  kind: ProcessSpec['kind'];
  slot: string;
  service?: string;
  workerId?: string;
  port?: number;
  state: ProcessState;
  pid?: number;
  /** starts after the first: after exits and by command */
  restarts: number;
  started_at?: number;
  last_exit?: ProcessExit;
  next_restart_at?: number;
  /** why it is `failed` */
  reason?: string;
}

/** What happened to a process: the `machine.process` events are made of these. */
export interface ProcessTransition {
  process: string;
  kind: ProcessSpec['kind'];
  /** started, exited (code/signal), restarting (in delayMs), failed (crash loop), stopped (on purpose) */
  change: 'started' | 'exited' | 'restarting' | 'failed' | 'stopped';
  state: ProcessState;
  restarts: number;
  pid?: number;
  exit?: ProcessExit;
  delayMs?: number;
  reason?: string;
}

export interface SupervisorEvents {
  transition: [transition: ProcessTransition];
  output: [process: string, stream: 'stdout' | 'stderr', line: string];
  /** an IPC message from a worker process */
  message: [process: string, message: unknown];
}

interface Managed {
  spec: ProcessSpec;
  state: ProcessState;
  /** should be running: false once stopped on purpose or failed */
  wanted: boolean;
  child?: ChildProcess;
  startedAt?: number;
  restarts: number;
  /** times of exits within the crash-loop window */
  recentExits: number[];
  lastExit?: ProcessExit;
  restartTimer?: NodeJS.Timeout;
  nextRestartAt?: number;
  reason?: string;
  exitWaiters: Array<() => void>;
}

/**
 * Runs processes and keeps them running: each in a process group of its own
 * (so a stop reaches whatever it started, and the terminal's Ctrl-C reaches
 * only the agent, which stops them in order), restarted after an exit with
 * exponential backoff, and marked `failed` after a crash loop. Output is cut
 * into lines; worker processes also get an IPC channel.
 *
 * Written on node:child_process rather than with a process manager: PM2
 * (what the system this replaces used) is AGPL-3.0 and runs a daemon that
 * outlives its parent, which neither a container's single process nor a test
 * can have. See docs/machine.md.
 */
export class Supervisor extends EventEmitter<SupervisorEvents> {
  private readonly processes = new Map<string, Managed>();

  constructor(
    specs: ProcessSpec[],
    private readonly policy: RestartPolicy,
    private readonly logger: Logger,
  ) {
    super();
    for (const spec of specs) {
      if (this.processes.has(spec.name)) throw new Error(`two processes named ${spec.name}`);
      this.processes.set(spec.name, { spec, state: 'stopped', wanted: false, restarts: 0, recentExits: [], exitWaiters: [] });
    }
  }

  names(filter: (spec: ProcessSpec) => boolean = () => true): string[] {
    return [...this.processes.values()].filter((p) => filter(p.spec)).map((p) => p.spec.name);
  }

  statuses(): ProcessStatus[] {
    return [...this.processes.values()].map((p) => this.statusOf(p));
  }

  status(name: string): ProcessStatus | undefined {
    const p = this.processes.get(name);
    return p && this.statusOf(p);
  }

  /** Starts the named processes (all by default) that are not running; a failed one gets a fresh crash-loop budget. */
  start(names = this.names()): void {
    for (const p of this.managed(names)) {
      p.wanted = true;
      if (p.state === 'failed') {
        p.recentExits = [];
        p.reason = undefined;
      }
      if (p.child) continue;
      if (p.restartTimer) clearTimeout(p.restartTimer);
      p.restartTimer = undefined;
      p.nextRestartAt = undefined;
      this.spawn(p);
    }
  }

  /** Stops the named processes (all by default) and keeps them stopped: SIGTERM to the group, SIGKILL after the stop timeout. */
  async stop(names = this.names()): Promise<void> {
    await Promise.all(this.managed(names).map((p) => this.stopOne(p)));
  }

  /** Stops and starts again (a failed process too), counted as a restart. */
  async restart(names = this.names()): Promise<void> {
    const managed = this.managed(names);
    await Promise.all(managed.map((p) => this.stopOne(p)));
    for (const p of managed) p.restarts++;
    this.start(names);
  }

  /** An IPC message to a worker process; false when it has no channel (or is not running). */
  send(name: string, message: unknown): boolean {
    const child = this.processes.get(name)?.child;
    if (!child?.connected) return false;
    child.send(message as object, undefined, undefined, () => undefined);
    return true;
  }

  private managed(names: string[]): Managed[] {
    return names.map((name) => {
      const p = this.processes.get(name);
      if (!p) throw new Error(`no process named ${name}`);
      return p;
    });
  }

  private statusOf(p: Managed): ProcessStatus {
    const { spec } = p;
    return {
      name: spec.name,
      kind: spec.kind,
      slot: spec.slot,
      service: spec.service,
      workerId: spec.workerId,
      port: spec.port,
      state: p.state,
      pid: p.child?.pid,
      restarts: p.restarts,
      started_at: p.startedAt,
      last_exit: p.lastExit,
      next_restart_at: p.nextRestartAt,
      reason: p.reason,
    };
  }

  private spawn(p: Managed): void {
    const { spec } = p;
    let child: ChildProcess;
    try {
      child = spawn(spec.command, spec.args, {
        env: { ...process.env, ...spec.env },
        cwd: spec.cwd,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe', ...(spec.kind === 'worker' ? (['ipc'] as const) : [])],
      });
    } catch (error) {
      // bad arguments (an unusable cwd, say): the same as a process that could not start
      this.onExit(p, undefined, null, null, (error as Error).message);
      return;
    }
    p.child = child;
    p.state = 'running';
    p.startedAt = Date.now();
    for (const stream of ['stdout', 'stderr'] as const) {
      const splitter = new LineSplitter((line) => this.emit('output', spec.name, stream, line));
      child[stream]!.setEncoding('utf8');
      child[stream]!.on('data', (chunk: string) => splitter.push(chunk));
      child[stream]!.on('end', () => splitter.end());
    }
    child.on('message', (message) => this.emit('message', spec.name, message));
    child.once('error', (error) => {
      // spawning failed (no pid): there will be no exit of a running process to wait for
      if (child.pid === undefined) this.onExit(p, child, null, null, error.message);
      else this.logger.warn({ err: error, process: spec.name }, 'process error');
    });
    child.once('exit', (code, signal) => this.onExit(p, child, code, signal));
    if (child.pid !== undefined) this.transition(p, 'started');
  }

  private onExit(p: Managed, child: ChildProcess | undefined, code: number | null, signal: string | null, error?: string): void {
    if (child !== undefined && p.child !== child) return;
    if (child?.pid !== undefined) killGroup(child.pid, 'SIGKILL'); // whatever it started and left behind
    p.child = undefined;
    p.startedAt = undefined;
    p.lastExit = { code, signal, at: Date.now(), error };
    for (const resolve of p.exitWaiters.splice(0)) resolve();

    if (!p.wanted) {
      p.state = 'stopped';
      this.transition(p, 'stopped', { exit: p.lastExit });
      return;
    }
    p.state = 'backoff';
    this.transition(p, 'exited', { exit: p.lastExit });
    const now = Date.now();
    p.recentExits = [...p.recentExits.filter((at) => now - at < this.policy.crashLoopWindowMs), now];
    if (p.recentExits.length > this.policy.crashLoopRestarts) {
      p.wanted = false;
      p.state = 'failed';
      p.reason = `exited ${p.recentExits.length} times within ${this.policy.crashLoopWindowMs} ms (last: ${describeExit(p.lastExit)}); not restarted again until a restart command`;
      this.transition(p, 'failed', { reason: p.reason });
      return;
    }
    const delayMs = Math.min(this.policy.restartBackoffMs * 2 ** (p.recentExits.length - 1), this.policy.maxRestartBackoffMs);
    p.nextRestartAt = now + delayMs;
    this.transition(p, 'restarting', { delayMs });
    p.restartTimer = setTimeout(() => {
      p.restartTimer = undefined;
      p.nextRestartAt = undefined;
      if (!p.wanted || p.child) return;
      p.restarts++;
      this.spawn(p);
    }, delayMs);
  }

  private async stopOne(p: Managed): Promise<void> {
    p.wanted = false;
    if (p.restartTimer) clearTimeout(p.restartTimer);
    p.restartTimer = undefined;
    p.nextRestartAt = undefined;
    const child = p.child;
    if (!child?.pid) {
      if (p.state === 'backoff') {
        p.state = 'stopped';
        this.transition(p, 'stopped');
      }
      return;
    }
    const exited = new Promise<void>((resolve) => p.exitWaiters.push(resolve));
    if (p.state !== 'stopping') {
      p.state = 'stopping';
      killGroup(child.pid, 'SIGTERM');
    }
    const timer = setTimeout(() => {
      this.logger.warn({ process: p.spec.name, pid: child.pid, after_ms: this.policy.stopTimeoutMs }, 'process did not stop; killing it');
      killGroup(child.pid!, 'SIGKILL');
    }, this.policy.stopTimeoutMs);
    await exited;
    clearTimeout(timer);
  }

  private transition(p: Managed, change: ProcessTransition['change'], extra: Partial<ProcessTransition> = {}): void {
    const transition: ProcessTransition = {
      process: p.spec.name,
      kind: p.spec.kind,
      change,
      state: p.state,
      restarts: p.restarts,
      pid: p.child?.pid,
      ...extra,
    };
    const level = change === 'failed' ? 'error' : change === 'exited' || change === 'restarting' ? 'warn' : 'info';
    this.logger[level]({ ...transition, exit: transition.exit && describeExit(transition.exit) }, `process ${change}`);
    this.emit('transition', transition);
  }
}

export function describeExit(exit: ProcessExit): string {
  if (exit.error) return `could not start: ${exit.error}`;
  return exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
}

/** Signals a process group (the supervised process and whatever it started); one already gone is fine. */
function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}
