import type { Command } from 'commander';
import { withBroker } from '../connection';
import { redisFlag } from '../flags';
import { duration, json, table } from '../format';
import { listAcrossPools } from '../registry-listing';

export function registerMachines(program: Command): void {
  program
    .command('machines')
    .description('registered machines: state, last status, last operator command (offline ones stay listed)')
    .option('--pool <name>', 'only this pool')
    .option('--json', 'print JSON for scripts')
    .action(async (options: { pool?: string; json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const { now, entries: machines } = await listAcrossPools(broker, options.pool, (pool) => broker.machines(pool));
        if (options.json) {
          process.stdout.write(`${json({ now, machines })}\n`);
          return;
        }
        if (machines.length === 0) {
          process.stdout.write('no machines have registered yet (`npm start` runs a simulated one)\n');
          return;
        }
        const rows = machines.map((m) => [
          m.pool ?? '',
          m.id ?? '',
          m.state ?? '',
          m.state_since ? duration(now - Number(m.state_since)) : '-',
          m.last_seen ? `${duration(now - Number(m.last_seen))} ago` : '-',
          m.workers ?? '-',
          m.last_command
            ? `${m.last_command}${m.last_command_service ? ` ${m.last_command_service}` : ''} (${duration(now - Number(m.last_command_at))} ago)`
            : '-',
        ]);
        process.stdout.write(`${table(['POOL', 'MACHINE', 'STATE', 'FOR', 'LAST SEEN', 'WORKERS', 'LAST COMMAND'], rows)}\n`);
      });
    });
}
