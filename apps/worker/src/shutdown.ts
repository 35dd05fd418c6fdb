import type { Worker } from './worker';

export interface StopOnSignalsOptions {
  /** how long running jobs may finish before they are handed back (default 10 s; spot notices give ~30 s) */
  graceMs?: number;
  signals?: NodeJS.Signals[];
  /** after the worker stopped: close connections; the process then exits */
  onStopped?: () => Promise<void> | void;
  /** exits the process by default; tests and embedders may do otherwise */
  exit?: (code: number) => void;
}

/**
 * Makes SIGTERM / SIGINT a graceful stop: the worker drains, hands back what
 * is still running at once (kind `infrastructure`, so the jobs are queued
 * again immediately instead of waiting out their leases), goes offline, and
 * the process exits. Returns a function that removes the handlers.
 */
export function stopOnSignals(worker: Worker, options: StopOnSignalsOptions = {}): () => void {
  const signals = options.signals ?? ['SIGTERM', 'SIGINT'];
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    void (async () => {
      let code = 0;
      try {
        await worker.stop({ graceMs: options.graceMs });
        await options.onStopped?.();
      } catch {
        code = 1;
      }
      exit(code === 0 && signal === 'SIGINT' ? 130 : code);
    })();
  };
  for (const signal of signals) process.on(signal, onSignal);
  return () => {
    for (const signal of signals) process.off(signal, onSignal);
  };
}
