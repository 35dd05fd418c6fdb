import { ApiKeys, CreateKeyInput } from '@emp/api';
import type { Command } from 'commander';
import { withBroker } from '../connection';
import { parseFlags, redisFlag } from '../flags';
import { CommandError } from '../errors';
import { json, table, timestamp } from '../format';

/** `emp keys create|list|revoke`: API keys, stored hashed in Redis; a new key is printed once. */
export function registerKeys(program: Command): void {
  const keys = program.command('keys').description('API keys for the HTTP/WebSocket API (roles: client, worker, service, operator)');

  keys
    .command('create')
    .description('create a key and print it (shown only now; Redis keeps only its hash)')
    .requiredOption('--role <role>', 'client | worker | service | operator')
    .option('--tenant <tenant>', 'the tenant a client key acts for (required for client keys)')
    .option('--name <name>', 'a note to recognise the key by')
    .option('--json', 'print JSON for scripts')
    .action(async (options: { role: string; tenant?: string; name?: string; json?: boolean }, command: Command) => {
      const input = parseFlags(CreateKeyInput, { role: options.role, tenant: options.tenant, name: options.name });
      await withBroker(redisFlag(command), async (broker) => {
        const { key, info } = await new ApiKeys(broker.redis, broker.config.namespace).create(input);
        process.stdout.write(options.json ? `${json({ key, ...info })}\n` : `${key}\n`);
      });
    });

  keys
    .command('list')
    .description('the keys: id, role, tenant, name, created (never the keys themselves)')
    .option('--json', 'print JSON for scripts')
    .action(async (options: { json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const all = await new ApiKeys(broker.redis, broker.config.namespace).list();
        if (options.json) {
          process.stdout.write(`${json({ keys: all })}\n`);
          return;
        }
        const rows = all.map((k) => [k.id, k.role, k.tenant ?? '-', k.name ?? '-', timestamp(k.created_at)]);
        process.stdout.write(`${table(['ID', 'ROLE', 'TENANT', 'NAME', 'CREATED'], rows)}\n`);
      });
    });

  keys
    .command('revoke <id>')
    .description('revoke the key with this id (as `emp keys list` shows it)')
    .action(async (id: string, _options: unknown, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        if (!(await new ApiKeys(broker.redis, broker.config.namespace).revoke(id))) {
          throw new CommandError(`no key with id ${id}`);
        }
        process.stdout.write(`revoked ${id}\n`);
      });
    });
}
