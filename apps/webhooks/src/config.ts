import { parseWith } from '@emp/core';
import { z } from 'zod';

export const DEFAULT_WEBHOOKS_PORT = 3332;

const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

/** Standard Webhooks / Svix: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about a day in all). */
export const DEFAULT_RETRY_SCHEDULE_MS = [0, 5 * SECOND, 5 * MINUTE, 30 * MINUTE, 2 * HOUR, 5 * HOUR, 10 * HOUR, 10 * HOUR];

export const WebhookServiceConfig = z
  .object({
    host: z.string().default('127.0.0.1'),
    /** 0: any free port */
    port: z.number().int().min(0).max(65_535).default(DEFAULT_WEBHOOKS_PORT),
    /**
     * let deliveries reach loopback, private, link-local and CGNAT addresses
     * (local development: `emp start` turns it on); off, such a target is refused
     * on the address actually connected to
     */
    allowPrivate: z.boolean().default(false),
    /** delay before each attempt: the first is the first attempt's (0: at once); one attempt per entry */
    retryScheduleMs: z.array(z.number().int().min(0)).min(1).max(50).default(DEFAULT_RETRY_SCHEDULE_MS),
    /** each retry delay is moved by up to this fraction either way, so failing receivers are not hit in waves */
    retryJitter: z.number().min(0).max(1).default(0.1),
    /** a longer Retry-After (429/503) is cut to this */
    maxRetryAfterMs: z.number().int().min(0).default(10 * HOUR),
    /** an attempt with no complete answer by then has failed */
    timeoutMs: z.number().int().min(1).default(15 * SECOND),
    /** an attempt's lease: an instance that dies mid-delivery leaves the message due again after this (keep above timeoutMs) */
    leaseMs: z.number().int().min(1).default(60 * SECOND),
    /**
     * one instance at a time reads each pool's stream, holding a lease it renews; one that
     * stops renewing for this long (it crashed) is replaced, and its pending events taken over
     */
    readerLeaseMs: z.number().int().min(30).default(10 * SECOND),
    /** a job's progress reaches each URL at most once per this, the latest value always */
    progressThrottleMs: z.number().int().min(0).default(SECOND),
    /** deliveries in flight at once, per instance */
    concurrency: z.number().int().min(1).max(10_000).default(64),
    /** attempts in flight to one URL at once, over every instance (0: no limit), so one slow receiver cannot take every slot */
    concurrencyPerUrl: z.number().int().min(0).max(10_000).default(8),
    /** how often due messages are looked for when nothing woke the dispatcher */
    pollMs: z.number().int().min(1).default(250),
    /** how often new pools are looked for */
    poolScanMs: z.number().int().min(1).default(5 * SECOND),
    /** an endpoint whose every attempt failed for this long, none delivered, is disabled (with an operator event); 0: never */
    failureDisableMs: z.number().int().min(0).default(5 * 24 * HOUR),
    /** how long ended messages and delivery logs are kept */
    retentionMs: z.number().int().min(1).default(7 * 24 * HOUR),
    /** consumer group on the pools' event streams */
    group: z.string().min(1).default('webhooks'),
  })
  .strict();
export type WebhookServiceConfig = z.output<typeof WebhookServiceConfig>;
export type WebhookServiceConfigInput = z.input<typeof WebhookServiceConfig>;

export function webhookServiceConfig(input: WebhookServiceConfigInput = {}): WebhookServiceConfig {
  return parseWith(WebhookServiceConfig, input, 'webhook service config');
}

/** Settings from the environment (EMP_WEBHOOKS_*), for `main.ts`. */
export function configFromEnv(env: NodeJS.ProcessEnv): WebhookServiceConfigInput {
  const input: Record<string, unknown> = {};
  const num = (name: string, key: string) => {
    const value = env[name];
    if (value !== undefined && value !== '') input[key] = Number(value);
  };
  if (env.EMP_WEBHOOKS_HOST) input.host = env.EMP_WEBHOOKS_HOST;
  num('EMP_WEBHOOKS_PORT', 'port');
  const allow = env.EMP_WEBHOOK_ALLOW_PRIVATE;
  if (allow !== undefined) input.allowPrivate = allow === '1' || allow === 'true';
  if (env.EMP_WEBHOOKS_RETRY_SCHEDULE_MS) input.retryScheduleMs = env.EMP_WEBHOOKS_RETRY_SCHEDULE_MS.split(',').map(Number);
  num('EMP_WEBHOOKS_RETRY_JITTER', 'retryJitter');
  num('EMP_WEBHOOKS_TIMEOUT_MS', 'timeoutMs');
  num('EMP_WEBHOOKS_LEASE_MS', 'leaseMs');
  num('EMP_WEBHOOKS_READER_LEASE_MS', 'readerLeaseMs');
  num('EMP_WEBHOOKS_PROGRESS_THROTTLE_MS', 'progressThrottleMs');
  num('EMP_WEBHOOKS_CONCURRENCY', 'concurrency');
  num('EMP_WEBHOOKS_CONCURRENCY_PER_URL', 'concurrencyPerUrl');
  num('EMP_WEBHOOKS_POLL_MS', 'pollMs');
  num('EMP_WEBHOOKS_FAILURE_DISABLE_MS', 'failureDisableMs');
  num('EMP_WEBHOOKS_RETENTION_MS', 'retentionMs');
  num('EMP_WEBHOOKS_POOL_SCAN_MS', 'poolScanMs');
  return input as WebhookServiceConfigInput;
}
