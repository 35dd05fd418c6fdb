import type { Command } from 'commander';
import { withBroker } from '../connection';
import { redisFlag } from '../flags';
import { duration, json, table } from '../format';
import { listAcrossPools } from '../registry-listing';

export function registerWorkers(program: Command): void {
  program
    .command('workers')
    .description('registered workers: state, machine, services, last seen (offline ones stay listed)')
    .option('--pool <name>', 'only this pool')
    .option('--json', 'print JSON for scripts')
    .action(async (options: { pool?: string; json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const { now, entries: workers } = await listAcrossPools(broker, options.pool, (pool) => broker.workers(pool));
        if (options.json) {
          process.stdout.write(`${json({ now, workers })}\n`);
          return;
        }
        if (workers.length === 0) {
          process.stdout.write('no workers have registered yet (`npm start` runs two simulated ones)\n');
          return;
        }
        const rows = workers.map((w) => [
          w.pool ?? '',
          w.id ?? '',
          w.machine ?? '',
          w.state ?? '',
          w.state_since ? duration(now - Number(w.state_since)) : '-',
          w.last_seen ? `${duration(now - Number(w.last_seen))} ago` : '-',
          servicesOf(w.capabilities),
          w.concurrency ?? '',
        ]);
        process.stdout.write(`${table(['POOL', 'WORKER', 'MACHINE', 'STATE', 'FOR', 'LAST SEEN', 'SERVICES', 'SLOTS'], rows)}\n`);
      });
    });
}

function servicesOf(capabilities: string | undefined): string {
  if (!capabilities) return '';
  try {
    const parsed = JSON.parse(capabilities) as { services?: unknown };
    return Array.isArray(parsed.services) ? parsed.services.join(',') : '';
  } catch {
    return '';
  }
}
