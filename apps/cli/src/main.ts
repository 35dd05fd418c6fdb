import { Command } from 'commander';
import { registerAssets } from './commands/assets';
import { registerCancel } from './commands/cancel';
import { registerJob } from './commands/job';
import { registerJobs } from './commands/jobs';
import { registerKeys } from './commands/keys';
import { registerMachine } from './commands/machine';
import { registerMachines } from './commands/machines';
import { registerQueues } from './commands/queues';
import { registerRetry } from './commands/retry';
import { registerStart } from './commands/start';
import { registerSubmit } from './commands/submit';
import { registerWatch } from './commands/watch';
import { registerWebhooks } from './commands/webhooks';
import { registerWorkers } from './commands/workers';
import { reportError } from './errors';
import { EMP_VERSION } from './version';

/** `emp`: start the local stack or a machine agent, submit and follow jobs, inspect queues, workers and machines, manage API keys, sign asset URLs. */
export function empProgram(): Command {
  const program = new Command('emp')
    .description('EMP Job Queue: run the local stack, submit and follow jobs, inspect queues and workers')
    .version(EMP_VERSION, '-V, --version', 'print the version')
    .option('--redis <url>', 'Redis to use (default: REDIS_URL, else the one `npm start` recorded in .emp/redis.url)')
    // commander's own errors (unknown flag, missing argument) are thrown, not printed: reportError prints every error alike
    .configureOutput({ outputError: () => undefined })
    .exitOverride();
  for (const register of [registerStart, registerSubmit, registerJob, registerJobs, registerCancel, registerRetry, registerQueues, registerWorkers, registerMachines, registerMachine, registerWatch, registerKeys, registerAssets, registerWebhooks]) {
    register(program);
  }
  return program;
}

// an error no command awaited is still reported in the one style, then ends the process as Node would
const crash = (error: unknown) => process.exit(reportError(error));
process.on('uncaughtException', crash);
process.on('unhandledRejection', crash);

try {
  await empProgram().parseAsync(process.argv);
} catch (error) {
  process.exitCode = reportError(error);
}
