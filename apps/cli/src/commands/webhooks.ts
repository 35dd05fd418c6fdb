import { DEFAULT_TENANT, WebhookOutbox } from '@emp/core';
import type { Command } from 'commander';
import { withBroker } from '../connection';
import { UsageError } from '../errors';
import { redisFlag } from '../flags';
import { clockTime, json, table } from '../format';

/** `emp webhooks`: what the webhook service delivered (docs/webhooks.md). */
export function registerWebhooks(program: Command): void {
  const webhooks = program.command('webhooks').description("jobs' webhook deliveries and signing secrets");

  webhooks
    .command('deliveries')
    .description("a job's delivery attempts (time, event, status, latency, outcome, error); without --job, the messages waiting")
    .option('--job <id>', 'the job whose attempts to show')
    .option('--json', 'print JSON for scripts')
    .action(async (options: { job?: string; json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const outbox = new WebhookOutbox(broker);
        if (!options.job) {
          const backlog = await outbox.backlog();
          if (options.json) process.stdout.write(`${json(backlog)}\n`);
          else process.stdout.write(`${backlog.messages} message(s) waiting or in flight${backlog.nextDueAt ? `; next due ${clockTime(backlog.nextDueAt)}` : ''}\n`);
          return;
        }
        const log = await outbox.deliveryLog(options.job);
        if (options.json) {
          process.stdout.write(`${json({ job: options.job, deliveries: log })}\n`);
          return;
        }
        if (log.length === 0) {
          process.stdout.write(`no delivery attempts for ${options.job} (no webhook, none due yet, or older than the retention)\n`);
          return;
        }
        const rows = log.map((e) => [
          clockTime(e.at),
          e.type,
          String(e.attempt),
          e.status === undefined ? '-' : String(e.status),
          `${Math.round(e.latency_ms)} ms`,
          e.outcome + (e.next_at ? ` (next ${clockTime(e.next_at)})` : ''),
          e.error ?? '',
          e.message,
        ]);
        process.stdout.write(`${table(['TIME', 'EVENT', 'ATTEMPT', 'STATUS', 'LATENCY', 'OUTCOME', 'ERROR', 'MESSAGE'], rows)}\n`);
      });
    });

  webhooks
    .command('resend')
    .description('send a delivered, failed or disabled message again (same webhook-id and body); its id is in `deliveries`')
    .argument('<message-id>', 'the webhook-id, e.g. msg_standard_1733500000000-0')
    .action(async (id: string, _options: unknown, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const outcome = await new WebhookOutbox(broker).resend(id);
        if (outcome === 'queued') {
          process.stdout.write(`${id} queued again\n`);
          return;
        }
        const why = { unknown: 'no such message (or older than the retention)', pending: 'it is still waiting or in flight', disabled: 'its URL answered 410 Gone and is disabled for the tenant' }[outcome];
        throw new UsageError(`${id} not resent: ${why}`);
      });
    });

  webhooks
    .command('secret')
    .description("the secret a tenant's job webhooks are signed with (made on first use); --rotate replaces it")
    .option('--tenant <tenant>', 'the tenant', DEFAULT_TENANT)
    .option('--rotate', 'replace it; the old one stays valid (both signatures sent) for --grace-seconds')
    .option('--grace-seconds <n>', 'how long the old secret stays valid after --rotate', '86400')
    .option('--json', 'print JSON for scripts')
    .action(async (options: { tenant: string; rotate?: boolean; graceSeconds: string; json?: boolean }, command: Command) => {
      const graceSeconds = Number(options.graceSeconds);
      if (!Number.isInteger(graceSeconds) || graceSeconds < 0) throw new UsageError(`--grace-seconds: expected a whole number of seconds, got '${options.graceSeconds}'`);
      await withBroker(redisFlag(command), async (broker) => {
        const outbox = new WebhookOutbox(broker);
        const secrets = options.rotate ? await outbox.rotateSecret(options.tenant, graceSeconds * 1000) : await outbox.secrets(options.tenant);
        if (options.json) {
          process.stdout.write(`${json({ tenant: options.tenant, secret: secrets.current, ...(secrets.previousUntil ? { previous_valid_until: secrets.previousUntil } : {}) })}\n`);
          return;
        }
        process.stdout.write(`${secrets.current}\n`);
        if (secrets.previousUntil) process.stdout.write(`(the previous secret is signed with too until ${new Date(secrets.previousUntil).toISOString()})\n`);
      });
    });
}
