import {
  CreatedWebhookEndpoint,
  DEFAULT_TENANT,
  type DeliveryLogEntry,
  RotatedWebhookSecret,
  WebhookDeliveryList,
  WebhookEndpoint,
  WebhookEndpointList,
  WebhookOutbox,
} from '@emp/core';
import type { Command } from 'commander';
import { z } from 'zod';
import { type ApiFlags, callApi } from '../api-call';
import { withBroker } from '../connection';
import { UsageError } from '../errors';
import { TIME_FORMS, parseInstant, redisFlag } from '../flags';
import { clockTime, json, table } from '../format';

function apiOptions(command: Command): Command {
  return command
    .option('--api <url>', 'the API (default: EMP_API_URL, else http://127.0.0.1:3331)', process.env.EMP_API_URL || 'http://127.0.0.1:3331')
    .option('--api-key <key>', 'an API key: a client key manages its tenant\'s endpoints, an operator\'s all (default: EMP_API_KEY)', process.env.EMP_API_KEY);
}

/** `--since` (TIME_FORMS) as ms since the epoch. */
export function parseSince(text: string, now = Date.now()): number {
  const ms = parseInstant(text, now);
  if (ms === undefined) throw new UsageError(`--since: expected ${TIME_FORMS}; got '${text}'`);
  return ms;
}

/** `--header name=value`, repeatable. */
function collectHeader(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const at = value.indexOf('=');
  if (at <= 0) throw new UsageError(`--header: expected name=value, got '${value}'`);
  return { ...previous, [value.slice(0, at).trim()]: value.slice(at + 1) };
}

const list = (value: string) => value.split(',').map((part) => part.trim()).filter(Boolean);

function endpointRows(endpoints: WebhookEndpoint[]): string {
  return table(
    ['ID', 'TENANT', 'URL', 'EVENTS', 'ENABLED', 'DESCRIPTION'],
    endpoints.map((e) => [e.id, e.tenant ?? '(operator)', e.url, e.events.join(','), e.enabled ? 'yes' : `no: ${e.disabled_reason ?? ''}`, e.description ?? '']),
  );
}

function deliveryRows(log: DeliveryLogEntry[]): string {
  return table(
    ['TIME', 'EVENT', 'ATTEMPT', 'STATUS', 'LATENCY', 'OUTCOME', 'ERROR', 'MESSAGE'],
    log.map((e) => [
      clockTime(e.at),
      e.type,
      String(e.attempt),
      e.status === undefined ? '-' : String(e.status),
      `${Math.round(e.latency_ms)} ms`,
      e.outcome + (e.next_at ? ` (next ${clockTime(e.next_at)})` : ''),
      e.error ?? '',
      e.message,
    ]),
  );
}

/** `emp webhooks`: tenants' endpoints (through the API) and what the webhook service delivered (docs/webhooks.md). */
export function registerWebhooks(program: Command): void {
  const webhooks = program.command('webhooks').description("webhook endpoints (through the API), deliveries and signing secrets");

  apiOptions(
    webhooks
      .command('create')
      .description('register an endpoint; prints its id and its signing secret, which is shown only now (POST /v1/webhooks)')
      .requiredOption('--url <url>', 'where to send events (http or https)')
      .requiredOption('--events <types>', 'comma-separated event types: job.queued, job.started, job.progress, job.succeeded, job.failed, job.canceled, job.expired, job.retrying, job.*; operator endpoints also worker.*, machine.*, webhook.*')
      .option('--tenant <tenant>', "whose jobs (an operator key: without it, an operator-scoped endpoint; a client key: its own tenant's)")
      .option('--services <names>', 'only jobs of these services (comma-separated)')
      .option('--workflows <ids>', 'only jobs of these workflow ids (comma-separated)')
      .option('--description <text>', 'what it is for')
      .option('--header <name=value>', 'a header sent with every request (repeatable)', collectHeader)
      .option('--rate-limit <n>', 'at most this many requests per second')
      .option('--disabled', 'make it disabled')
      .option('--json', 'print JSON for scripts'),
  ).action(async (options: ApiFlags & { url: string; events: string; tenant?: string; services?: string; workflows?: string; description?: string; header?: Record<string, string>; rateLimit?: string; disabled?: boolean; json?: boolean }) => {
    let rateLimit: number | undefined;
    if (options.rateLimit !== undefined) {
      rateLimit = Number(options.rateLimit);
      if (!Number.isInteger(rateLimit) || rateLimit < 1) throw new UsageError(`--rate-limit: expected a whole number of requests per second, got '${options.rateLimit}'`);
    }
    const body = {
      url: options.url,
      events: list(options.events),
      // an empty flag (--tenant '') counts as not given
      tenant: options.tenant || undefined,
      services: options.services ? list(options.services) : undefined,
      workflows: options.workflows ? list(options.workflows) : undefined,
      description: options.description || undefined,
      headers: options.header,
      rate_limit: rateLimit,
      enabled: options.disabled ? false : undefined,
    };
    const created = await callApi(options, 'POST', '/v1/webhooks', CreatedWebhookEndpoint, body);
    if (options.json) {
      process.stdout.write(`${json(created)}\n`);
      return;
    }
    process.stdout.write(`${created.id}\nsecret: ${created.secret}\n`);
    process.stderr.write('keep the secret now: it is not shown again (rotate-secret makes a new one)\n');
  });

  apiOptions(
    webhooks
      .command('list')
      .description('the endpoints the key may see (GET /v1/webhooks)')
      .option('--tenant <tenant>', "only this tenant's (an operator key)")
      .option('--json', 'print JSON for scripts'),
  ).action(async (options: ApiFlags & { tenant?: string; json?: boolean }) => {
    const { endpoints } = await callApi(options, 'GET', `/v1/webhooks${options.tenant ? `?tenant=${encodeURIComponent(options.tenant)}` : ''}`, WebhookEndpointList);
    if (options.json) process.stdout.write(`${json({ endpoints })}\n`);
    else process.stdout.write(endpoints.length ? `${endpointRows(endpoints)}\n` : 'no webhook endpoints\n');
  });

  for (const [name, description] of [
    ['enable', 'enable an endpoint (also one disabled by a 410 or by failing for days)'],
    ['disable', "disable an endpoint: its messages are dropped until it is enabled"],
  ] as const) {
    apiOptions(webhooks.command(name).description(description).argument('<endpoint-id>', 'the endpoint, e.g. ep_...').option('--json', 'print JSON for scripts')).action(
      async (id: string, options: ApiFlags & { json?: boolean }) => {
        const endpoint = await callApi(options, 'POST', `/v1/webhooks/${encodeURIComponent(id)}/${name}`, WebhookEndpoint);
        if (options.json) process.stdout.write(`${json(endpoint)}\n`);
        else process.stdout.write(`${endpoint.id} ${endpoint.enabled ? 'enabled' : 'disabled'}\n`);
      },
    );
  }

  apiOptions(webhooks.command('delete').description('delete an endpoint; its messages not yet delivered are dropped').argument('<endpoint-id>', 'the endpoint')).action(
    async (id: string, options: ApiFlags) => {
      await callApi(options, 'DELETE', `/v1/webhooks/${encodeURIComponent(id)}`, z.null());
      process.stdout.write(`${id} deleted\n`);
    },
  );

  apiOptions(webhooks.command('test').description('send a webhook.test event to an endpoint, signed like every other').argument('<endpoint-id>', 'the endpoint')).action(
    async (id: string, options: ApiFlags) => {
      const sent = await callApi(options, 'POST', `/v1/webhooks/${encodeURIComponent(id)}/test`, z.object({ endpoint: z.string(), message_id: z.string() }));
      process.stdout.write(`test message ${sent.message_id} queued; see \`emp webhooks deliveries --endpoint ${id}\`\n`);
    },
  );

  apiOptions(
    webhooks
      .command('recover')
      .description('send again every failed message of an endpoint made since a time (same webhook-id and body)')
      .argument('<endpoint-id>', 'the endpoint')
      .requiredOption('--since <when>', TIME_FORMS),
  ).action(async (id: string, options: ApiFlags & { since: string }) => {
    const since = parseSince(options.since);
    const result = await callApi(options, 'POST', `/v1/webhooks/${encodeURIComponent(id)}/recover`, z.object({ queued: z.number(), left: z.number() }), { since });
    process.stdout.write(`${result.queued} failed message(s) since ${new Date(since).toISOString()} queued again${result.left ? `; ${result.left} more left: run it again` : ''}\n`);
  });

  apiOptions(
    webhooks
      .command('rotate-secret')
      .description("give an endpoint a new signing secret (shown only now); the old one keeps signing too for --grace-seconds")
      .argument('<endpoint-id>', 'the endpoint')
      .option('--grace-seconds <n>', 'how long the old secret stays valid', '86400')
      .option('--json', 'print JSON for scripts'),
  ).action(async (id: string, options: ApiFlags & { graceSeconds: string; json?: boolean }) => {
    const grace = Number(options.graceSeconds);
    if (!Number.isInteger(grace) || grace < 0) throw new UsageError(`--grace-seconds: expected a whole number of seconds, got '${options.graceSeconds}'`);
    const rotated = await callApi(options, 'POST', `/v1/webhooks/${encodeURIComponent(id)}/rotate-secret`, RotatedWebhookSecret, { grace_seconds: grace });
    if (options.json) {
      process.stdout.write(`${json(rotated)}\n`);
      return;
    }
    process.stdout.write(`${rotated.secret}\n`);
    process.stderr.write(`the previous secret signs too until ${new Date(rotated.previous_secret_valid_until).toISOString()}\n`);
  });

  apiOptions(
    webhooks
      .command('deliveries')
      .description("delivery attempts (time, event, status, latency, outcome, error): an endpoint's (--endpoint, through the API) or a job's (--job); neither: the messages waiting")
      .option('--endpoint <id>', "the endpoint whose attempts to show, newest first")
      .option('--job <id>', 'the job whose attempts to show')
      .option('--limit <n>', 'at most this many attempts of an endpoint', '100')
      .option('--json', 'print JSON for scripts'),
  ).action(async (options: ApiFlags & { endpoint?: string; job?: string; limit: string; json?: boolean }, command: Command) => {
      if (options.endpoint) {
        const limit = Number(options.limit);
        if (!Number.isInteger(limit) || limit < 1 || limit > 1_000) throw new UsageError(`--limit: expected a whole number from 1 to 1000, got '${options.limit}'`);
        const answer = await callApi(options, 'GET', `/v1/webhooks/${encodeURIComponent(options.endpoint)}/deliveries?limit=${limit}`, WebhookDeliveryList);
        if (options.json) process.stdout.write(`${json(answer)}\n`);
        else process.stdout.write(answer.deliveries.length ? `${deliveryRows(answer.deliveries)}\n` : `no delivery attempts for ${options.endpoint} yet (or older than the retention)\n`);
        return;
      }
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
        process.stdout.write(`${deliveryRows(log)}\n`);
      });
    });

  apiOptions(
    webhooks
      .command('resend')
      .description('send a delivered, failed or dropped message again (same webhook-id and body); its id is in `deliveries`')
      .argument('<message-id>', 'the webhook-id, e.g. msg_standard_1733500000000-0')
      .option('--endpoint <id>', "the endpoint it went to: resends through the API (a tenant's key); without it, directly in Redis"),
  ).action(async (id: string, options: ApiFlags & { endpoint?: string }, command: Command) => {
    if (options.endpoint) {
      await callApi(options, 'POST', `/v1/webhooks/${encodeURIComponent(options.endpoint)}/messages/${encodeURIComponent(id)}/resend`, z.object({ message_id: z.string() }));
      process.stdout.write(`${id} queued again\n`);
      return;
    }
    await withBroker(redisFlag(command), async (broker) => {
      const outcome = await new WebhookOutbox(broker).resend(id);
      if (outcome === 'queued') {
        process.stdout.write(`${id} queued again\n`);
        return;
      }
      const why = { unknown: 'no such message (or older than the retention)', pending: 'it is still waiting or in flight', disabled: 'its endpoint is disabled, or its URL answered 410 Gone and is disabled for the tenant' }[outcome];
      throw new UsageError(`${id} not resent: ${why}`);
    });
  });

  webhooks
    .command('secret')
    .description("the secret a tenant's jobs' own webhooks are signed with (made on first use; endpoints have their own, see rotate-secret); --rotate replaces it")
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
          process.stdout.write(`${json({ tenant: options.tenant, secret: secrets.current, previous_valid_until: secrets.previousUntil || undefined })}\n`);
          return;
        }
        process.stdout.write(`${secrets.current}\n`);
        if (secrets.previousUntil) process.stdout.write(`(the previous secret is signed with too until ${new Date(secrets.previousUntil).toISOString()})\n`);
      });
    });
}
