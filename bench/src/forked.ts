import { type ChildProcess, fork } from 'node:child_process';

/** A bench process forked with forkReady, once it said it is ready. */
export interface Forked<Ready> {
  child: ChildProcess;
  /** resolves when the process has exited */
  exited: Promise<void>;
  /** its `{type: 'ready', ...}` message */
  ready: Ready;
}

/**
 * Forks a bench process (a TypeScript entry run through tsx) and waits for its
 * `{type: 'ready'}` message; rejects with the process's own reason when it sends
 * `{type: 'error', message}` or exits first. `what` names it in those errors;
 * `cpuProfileDir` (from an EMP_BENCH_*_CPU_PROF variable) writes a V8 CPU profile of it.
 */
export async function forkReady<Ready extends { type: 'ready' }>(
  entry: string,
  what: string,
  options: { env: Record<string, string>; cwd?: string; cpuProfileDir?: string },
): Promise<Forked<Ready>> {
  const child = fork(entry, [], {
    execArgv: ['--import', 'tsx', ...(options.cpuProfileDir ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`] : [])],
    ...(options.cwd ? { cwd: options.cwd } : {}),
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = await new Promise<Ready>((resolve, reject) => {
    child.on('message', (message: { type: string; message?: string }) => {
      if (message.type === 'ready') resolve(message as Ready);
      if (message.type === 'error') reject(new Error(`${what} did not start: ${message.message}`));
    });
    child.once('exit', (code) => reject(new Error(`${what} exited (${code}) before it was ready`)));
  });
  return { child, exited, ready };
}

/**
 * A forked bench process once ready (forkReady): its `ready` message, and stop(),
 * which asks it to close what it serves and exit (stopForked).
 */
export class ForkedProcess<Ready extends { type: 'ready' }> {
  readonly child: ChildProcess;
  readonly ready: Ready;
  readonly #exited: Promise<void>;

  constructor(forked: Forked<Ready>) {
    this.child = forked.child;
    this.ready = forked.ready;
    this.#exited = forked.exited;
  }

  stop(): Promise<void> {
    return stopForked(this.child, this.#exited);
  }
}

/**
 * Stops a forked bench process (api-server-process.ts, workers-process.ts, webhook-service-process.ts):
 * asks it with a `'stop'` message to close what it serves and exit, kills it after
 * 15 s if it has not, and resolves once it has exited.
 */
export async function stopForked(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || !child.connected) {
    child.kill();
    return exited;
  }
  child.send('stop');
  const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(killer);
}
