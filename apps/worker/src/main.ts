/**
 * The worker process: `node dist/worker.js` (its build; `node --import tsx
 * apps/worker/src/main.ts` from the sources) with its config as JSON in
 * EMP_WORKER_CONFIG (WorkerProcessConfig, in packages/core/src/machine-protocol/). A machine agent
 * starts one per GPU; it can run on its own too. Logs JSON lines (pino) to
 * stdout. SIGTERM, SIGINT or the loss of its supervisor's IPC channel stop it
 * gracefully: no more claims, running jobs handed back after `grace_ms` (0 by
 * default: at once, as a spot preemption needs), offline, exit 0. Over the
 * same channel the supervisor may send new capabilities (SupervisorMessage).
 * A bad config exits 2 with the field and the reason; a worker that cannot
 * start exits 1.
 */
import { SupervisorMessage, workerConfigFromEnv } from '@emp/core';
import { pino } from 'pino';
import { runWorkerProcess } from './worker-process';

let config;
try {
  config = workerConfigFromEnv();
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(2);
}

const logger = pino({ name: 'emp-worker', level: config.log_level });
const running = runWorkerProcess(config, { logger });
let stopping = false;

const stop = (why: string) => {
  if (stopping) return;
  stopping = true;
  logger.info({ why }, 'stop requested');
  running.stop().then(
    () => process.exit(0),
    (error: unknown) => {
      logger.error({ err: error }, 'stopping failed');
      process.exit(1);
    },
  );
};
process.once('SIGTERM', () => stop('SIGTERM'));
process.once('SIGINT', () => stop('SIGINT'));
// the supervisor is gone (killed without a chance to stop us): do not run on as an orphan
process.once('disconnect', () => stop('supervisor gone'));
process.on('message', (raw) => {
  const message = SupervisorMessage.safeParse(raw);
  if (!message.success) {
    logger.warn({ message: raw, issues: message.error.issues }, 'unexpected message from the supervisor');
    return;
  }
  running.handle(message.data).catch((error: unknown) => logger.warn({ err: error }, 'acting on a message from the supervisor failed'));
});

running.started.catch((error: unknown) => {
  if (stopping) return;
  logger.fatal({ err: error }, 'the worker could not start');
  process.exit(1);
});
