import { NewApiKey, ROLES } from '@emp/core';
import type { Command } from 'commander';
import { z } from 'zod';
import { withBroker } from '../connection';
import { CommandError } from '../errors';
import { parseFlags, redisFlag } from '../flags';
import { json, table, timestamp } from '../format';

const CreateFlags = z.object({ role: z.enum(ROLES), tenant: z.string().optional(), name: z.string().optional(), json: z.boolean().default(false) });

/** `emp keys create|list|revoke`: API keys, kept in Redis as SHA-256 hashes only. */
export function registerKeys(program: Command): void {
  const keys = program.command('keys').description('API keys: create (the key is shown once), list, revoke');

  keys
    .command('create')
    .description('create an API key; it is printed once and stored only as its hash')
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`)
    .option('--tenant <id>', 'the tenant a client (or a tenant-bound service) key acts for')
    .option('--name <text>', 'what the key is for, shown in lists')
    .option('--json', 'print JSON for scripts')
    .action(async (options: Record<string, unknown>, command: Command) => {
      const flags = parseFlags(CreateFlags, options);
      // an empty --tenant or --name counts as not given
      const spec = parseFlags(NewApiKey, { role: flags.role, tenant: flags.tenant || undefined, name: flags.name || undefined });
      await withBroker(redisFlag(command), async (broker) => {
        const { key, record } = await broker.apiKeys().create(spec);
        if (flags.json) {
          process.stdout.write(`${json({ key, ...record })}\n`);
          return;
        }
        process.stdout.write(`${key}\n`);
        process.stderr.write(`created key ${record.id} (role ${record.role}${record.tenant ? `, tenant ${record.tenant}` : ''}); it is shown only now: send it as \`Authorization: Bearer <key>\`\n`);
      });
    });

  keys
    .command('list')
    .description('every key: id, role, tenant, name, created, revoked (never the key itself)')
    .option('--json', 'print JSON for scripts')
    .action(async (options: { json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const records = await broker.apiKeys().list();
        if (options.json) {
          process.stdout.write(`${json({ keys: records })}\n`);
          return;
        }
        if (records.length === 0) {
          process.stdout.write('no API keys yet: `emp keys create --role operator`\n');
          return;
        }
        const rows = records.map((r) => [r.id, r.role, r.tenant ?? '-', r.name ?? '-', timestamp(r.created_at), r.revoked_at ? timestamp(r.revoked_at) : '-']);
        process.stdout.write(`${table(['ID', 'ROLE', 'TENANT', 'NAME', 'CREATED', 'REVOKED'], rows)}\n`);
      });
    });

  keys
    .command('revoke')
    .description('revoke a key by its id (at once on every running API server, its open live feeds closed)')
    .argument('<id>', 'the key id `emp keys list` shows')
    .option('--json', 'print JSON for scripts')
    .action(async (id: string, options: { json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const revoked = await broker.apiKeys().revoke(id);
        if (!revoked) throw new CommandError(`no API key has the id ${id} (see \`emp keys list\`)`);
        process.stdout.write(options.json ? `${json({ id, revoked: true })}\n` : `${id} revoked\n`);
      });
    });
}
