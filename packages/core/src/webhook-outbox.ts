import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { Broker } from './broker';
import { contextOf } from './broker/broker';
import type { BrokerContext } from './broker/context';
import { type ArgsOf, FUNCTIONS } from './broker/functions';
import { newWebhookSecret } from './webhook-signing';

/**
 * The webhook service's state in Redis (keys: KeyLayout, `{_webhooks}`): every
 * message still to be delivered, when its next attempt is due, the chains that
 * keep one job's messages to one URL in order, delivery logs, disabled URLs and
 * tenants' signing secrets. Each change is one call of the function library
 * (webhook_*.lua), so several service instances and a crash at any point leave
 * it consistent; nothing lives only in a process's memory.
 */

export interface WebhookMessageInput {
  /** the `webhook-id`: stable across retries, and the key that makes queueing idempotent */
  id: string;
  tenant: string;
  url: string;
  job: string;
  type: string;
  body: string;
  /** the tenant's (or operator's) endpoint it goes to; absent: the job's own `webhook` */
  endpoint?: string;
  /**
   * the W3C traceparent of the job the message is about (its submit's), when it has one: each
   * delivery attempt's span joins the job's trace, and the request carries it (docs/tracing.md).
   * Kept beside the body, never in it: the job view customers get has no trace context.
   */
  traceparent?: string;
}

export interface ClaimedWebhookMessage extends WebhookMessageInput {
  /** 1 for the first attempt; the fencing token of `settle` */
  attempt: number;
  createdAt: number;
}

/** Enqueue calls per pipeline of `enqueueMany`: one round trip, a few MB at most (bodies are jobs' views). */
const ENQUEUE_PIPELINE = 500;

export type WebhookEnqueueResult = 'queued' | 'merged' | 'known' | 'disabled';
export type WebhookOutcome = 'delivered' | 'retry' | 'failed' | 'disabled';
/** settled; settled and its endpoint disabled by it (410 Gone, or failing too long); or no longer the message's latest attempt */
export type WebhookSettleResult = 'settled' | 'endpoint-disabled' | 'stale';
/** queued again; unknown (or expired); still pending or in flight; its target is disabled */
export type WebhookResendResult = 'queued' | 'unknown' | 'pending' | 'disabled';

/** One delivery attempt as the log keeps it. */
export const DeliveryLogEntry = z.object({
  /** when the attempt started (ms) */
  at: z.number(),
  message: z.string(),
  type: z.string(),
  url: z.string(),
  /** the job (or `machine:<id>`, `worker:<id>`, `test:<endpoint>`) the message is about */
  job: z.string().optional(),
  /** the endpoint it went to; absent for a job's own webhook */
  endpoint: z.string().optional(),
  attempt: z.number().int(),
  /** the HTTP status, absent when there was no response */
  status: z.number().int().optional(),
  latency_ms: z.number(),
  outcome: z.enum(['delivered', 'retry', 'failed', 'disabled']),
  error: z.string().optional(),
  /** the first 1 KiB of the response body */
  response: z.string().optional(),
  /** when the next attempt is due (outcome retry) */
  next_at: z.number().optional(),
});
export type DeliveryLogEntry = z.infer<typeof DeliveryLogEntry>;

export interface TenantWebhookSecrets {
  current: string;
  /** the secret rotated out, still signed with until `previousUntil` */
  previous?: string;
  previousUntil?: number;
}

export interface WebhookOutboxOptions {
  /** a job's progress messages to one URL go out at most once per this many ms (the latest value always) */
  progressThrottleMs?: number;
  /** how long an ended message and a job's delivery log are kept */
  retentionMs?: number;
  /** attempts kept in a job's delivery log (ten times as many in an endpoint's) */
  logLength?: number;
  /** an endpoint whose every attempt failed for this long is disabled (0: never); default 5 days */
  failureDisableMs?: number;
}

/** The chain of a job's messages to one URL (its own webhook) or to one endpoint. */
export function webhookChain(jobId: string, url: string, endpoint?: string): string {
  return endpoint ? `${jobId}:${endpoint}` : `${jobId}:${createHash('sha1').update(url).digest('hex').slice(0, 16)}`;
}

export class WebhookOutbox {
  readonly progressThrottleMs: number;
  readonly retentionMs: number;
  readonly logLength: number;
  readonly failureDisableMs: number;
  readonly #ctx: BrokerContext;

  constructor(
    readonly broker: Broker,
    options: WebhookOutboxOptions = {},
  ) {
    this.#ctx = contextOf(broker);
    this.progressThrottleMs = options.progressThrottleMs ?? 1_000;
    this.retentionMs = options.retentionMs ?? 7 * 86_400_000;
    this.logLength = options.logLength ?? 200;
    this.failureDisableMs = options.failureDisableMs ?? 5 * 86_400_000;
  }

  /** The key layout (the outbox's keys are under `{_webhooks}`). */
  get keys(): Broker['keys'] {
    return this.broker.keys;
  }

  /** Queues a message (idempotent on its id). */
  async enqueue(message: WebhookMessageInput): Promise<WebhookEnqueueResult> {
    return this.#ctx.calls.callWebhooks(FUNCTIONS.webhookEnqueue, this.enqueueArgs(message));
  }

  /**
   * Queues messages in this order, `ENQUEUE_PIPELINE` calls per round trip (pipelines one
   * after another: a later message of a chain never goes before an earlier one). Each call is
   * `enqueue`'s (idempotent on the id). When any fails this throws once every call sent has
   * answered: the ones before it (and after it) may be queued, which queueing them again finds known.
   */
  async enqueueMany(messages: readonly WebhookMessageInput[]): Promise<WebhookEnqueueResult[]> {
    const results: WebhookEnqueueResult[] = [];
    for (let start = 0; start < messages.length; start += ENQUEUE_PIPELINE) {
      const chunk = messages.slice(start, start + ENQUEUE_PIPELINE);
      const pipeline = this.#ctx.redis.pipeline();
      for (const message of chunk) this.#ctx.calls.queueWebhooks(pipeline, FUNCTIONS.webhookEnqueue, this.enqueueArgs(message));
      const replies = await pipeline.exec();
      if (!replies) throw new Error(`queueing ${chunk.length} webhook messages: the pipeline was discarded`);
      for (const entry of replies) results.push(this.#ctx.calls.decode(FUNCTIONS.webhookEnqueue, entry));
    }
    return results;
  }

  private enqueueArgs(message: WebhookMessageInput): ArgsOf<typeof FUNCTIONS.webhookEnqueue> {
    return [
      message.id,
      webhookChain(message.job, message.url, message.endpoint),
      message.tenant,
      message.url,
      message.job,
      message.type,
      message.body,
      this.progressThrottleMs,
      this.retentionMs,
      message.endpoint ?? '',
      message.traceparent ?? '',
    ];
  }

  /**
   * Takes up to `limit` due messages, each leased for `leaseMs` (then due again,
   * unless settled); at most `perUrl` in flight to one endpoint (a job's own
   * webhook: to one URL; 0: no limit), a due message over it put off by
   * `busyMs`; an endpoint's rate limit holds its messages to the next second.
   * A message whose endpoint was disabled or deleted is ended, not returned.
   */
  async claimDue(limit: number, leaseMs: number, options: { perUrl?: number; busyMs?: number } = {}): Promise<ClaimedWebhookMessage[]> {
    return this.#ctx.calls.callWebhooks(FUNCTIONS.webhookClaim, [
      limit,
      leaseMs,
      options.perUrl ?? 0,
      options.busyMs ?? 250,
      this.retentionMs,
      this.progressThrottleMs,
    ]);
  }

  /**
   * Records an attempt's outcome (and its log entry); `retryInMs`: when the next
   * attempt is due (outcome retry). False when the attempt was no longer the message's latest.
   */
  async settle(message: ClaimedWebhookMessage, outcome: WebhookOutcome, log: DeliveryLogEntry, retryInMs?: number): Promise<boolean> {
    return (await this.settleAttempt(message, outcome, log, retryInMs)) !== 'stale';
  }

  /**
   * `settle`, telling also whether the attempt disabled the message's endpoint
   * (410 Gone, or its attempts failing for `failureDisableMs`).
   */
  async settleAttempt(message: ClaimedWebhookMessage, outcome: WebhookOutcome, log: DeliveryLogEntry, retryInMs?: number): Promise<WebhookSettleResult> {
    return this.#ctx.calls.callWebhooks(FUNCTIONS.webhookSettle, [
      message.id,
      message.attempt,
      outcome,
      retryInMs ?? 0,
      JSON.stringify(log),
      this.logLength,
      this.retentionMs,
      this.progressThrottleMs,
      this.failureDisableMs,
    ]);
  }

  /**
   * Sends an ended message again (same id and body, attempts from 1), after
   * whatever of its job is still pending for that URL.
   */
  async resend(id: string): Promise<WebhookResendResult> {
    return this.#ctx.calls.callWebhooks(FUNCTIONS.webhookResend, [id]);
  }

  /** A message's stored fields (state: pending | inflight | delivered | failed | disabled | merged), or null once gone. */
  async message(id: string): Promise<Record<string, string> | null> {
    const hash = await this.#ctx.redis.hgetall(this.broker.keys.webhookMessage(id));
    return Object.keys(hash).length ? hash : null;
  }

  /** A job's delivery attempts, oldest first. */
  async deliveryLog(jobId: string): Promise<DeliveryLogEntry[]> {
    const entries = await this.#ctx.redis.lrange(this.broker.keys.webhookLog(jobId), 0, -1);
    return entries.flatMap((text) => {
      const parsed = DeliveryLogEntry.safeParse(JSON.parse(text));
      return parsed.success ? [parsed.data] : [];
    });
  }

  /** URLs of the tenant that answered 410 Gone, with when. */
  async disabledUrls(tenant: string): Promise<Record<string, number>> {
    const hash = await this.#ctx.redis.hgetall(this.broker.keys.webhookDisabled(tenant));
    return Object.fromEntries(Object.entries(hash).map(([url, at]) => [url, Number(at)]));
  }

  /**
   * Messages not yet ended (waiting, in flight, or behind another of their chain),
   * when the oldest of them was queued (or resent), and when the next attempt is due.
   */
  async backlog(): Promise<{ messages: number; oldestQueuedAt?: number; nextDueAt?: number }> {
    const redis = this.#ctx.redis;
    const undelivered = this.broker.keys.webhookUndelivered();
    const [count, oldest, due] = await Promise.all([
      redis.zcard(undelivered),
      redis.zrange(undelivered, 0, 0, 'WITHSCORES'),
      redis.zrange(this.broker.keys.webhookDue(), 0, 0, 'WITHSCORES'),
    ]);
    return {
      messages: count,
      oldestQueuedAt: oldest[1] === undefined ? undefined : Number(oldest[1]),
      nextDueAt: due[1] === undefined ? undefined : Number(due[1]),
    };
  }

  /**
   * Takes or renews the lease of reading `pool`'s event stream for `consumer`
   * (one reader per pool, so a job's events are queued in order); false while
   * another instance holds it.
   */
  async holdReader(pool: string, consumer: string, leaseMs: number): Promise<boolean> {
    return this.#ctx.calls.callWebhooks(FUNCTIONS.webhookReader, [pool, consumer, leaseMs, '0']);
  }

  /** Gives the pool's reader lease up (when it is `consumer`'s), so another instance takes over at once. */
  async releaseReader(pool: string, consumer: string): Promise<void> {
    await this.#ctx.calls.callWebhooks(FUNCTIONS.webhookReader, [pool, consumer, 0, '1']);
  }

  /**
   * Records on the outbox's own stream (`webhook.events.lost`) that `count` entries of `pool`'s
   * event stream were trimmed before `group` read them (after `after`, before `before`: the
   * group's position and the oldest entry kept; '' when not known). Returns the event's id.
   */
  async recordLostEvents(loss: { pool: string; group: string; count: number; after?: string; before?: string }): Promise<string> {
    return this.#ctx.calls.callWebhooks(FUNCTIONS.webhookLost, [loss.pool, loss.group, loss.count, loss.after ?? '', loss.before ?? '']);
  }

  /** The tenant's signing secrets, the current one made on first use. */
  async secrets(tenant: string): Promise<TenantWebhookSecrets> {
    return this.#ctx.calls.callWebhooks(FUNCTIONS.webhookSecret, [tenant, newWebhookSecret(), '0', 0]);
  }

  /** Replaces the tenant's secret; the old one stays valid (both signatures are sent) for `graceMs`. */
  async rotateSecret(tenant: string, graceMs: number): Promise<TenantWebhookSecrets> {
    return this.#ctx.calls.callWebhooks(FUNCTIONS.webhookSecret, [tenant, newWebhookSecret(), '1', graceMs]);
  }
}
