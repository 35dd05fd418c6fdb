import type { ChildProcess } from 'node:child_process';

/**
 * Stops a forked bench process (api-server-process.ts, webhook-service-process.ts):
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
