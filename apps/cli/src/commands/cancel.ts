import type { Command } from 'commander';
import { withBroker } from '../connection';
import { redisFlag } from '../flags';
import { json } from '../format';

export function registerCancel(program: Command): void {
  program
    .command('cancel')
    .description('cancel a job (a running one is stopped by its worker); a finished job is left as it is')
    .argument('<id>', 'job id')
    .option('--reason <text>', 'why, kept on the job')
    .option('--json', 'print JSON for scripts')
    .action(async (id: string, options: { reason?: string; json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const outcome = await broker.cancel(id, options.reason ?? '');
        if (options.json) process.stdout.write(`${json({ id, ...outcome })}\n`);
        else process.stdout.write(outcome.changed ? `${id} canceled\n` : `${id} is already ${outcome.state}; unchanged\n`);
      });
    });
}
