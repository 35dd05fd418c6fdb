import type { Command } from 'commander';
import { withBroker } from '../connection';
import { redisFlag } from '../flags';
import { json } from '../format';

export function registerRetry(program: Command): void {
  program
    .command('retry')
    .description('put a failed, canceled or expired job back in its queue, under the same id')
    .argument('<id>', 'job id')
    .option('--json', 'print JSON for scripts')
    .action(async (id: string, options: { json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const state = await broker.retry(id);
        process.stdout.write(options.json ? `${json({ id, state })}\n` : `${id} ${state}\n`);
      });
    });
}
