import { type ClaimedWebhookMessage, type DeliveryLogEntry, type WebhookOutbox, type WebhookOutcome, webhookHeaders } from '@emp/core';
import type { Logger } from 'pino';
import type { WebhookServiceConfig } from './config';
import { type Resolver, type SendResult, sendWebhook } from './delivery';
import type { WebhookMetrics } from './metrics';

/**
 * Takes due messages from the outbox (each leased while in flight), signs and
 * sends them, and settles each attempt: 2xx delivered; 410 Gone disables the
 * URL for the tenant; a refused target fails at once; anything else is retried
 * on the schedule (a 429/503's Retry-After instead), until the schedule runs out.
 */
export class Dispatcher {
  private inFlight = 0;
  private stopping = false;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private readonly sends = new Set<Promise<void>>();

  constructor(
    private readonly outbox: WebhookOutbox,
    private readonly config: WebhookServiceConfig,
    private readonly metrics: WebhookMetrics,
    private readonly logger: Logger,
    private readonly resolve?: Resolver,
  ) {}

  start(): void {
    this.wake();
  }

  /** Looks for due messages now (and then every `pollMs`). */
  wake(): void {
    if (this.stopping) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.running = this.pass()
      .catch((error: unknown) => this.logger.error({ err: error }, 'webhooks: claiming due messages failed'))
      .finally(() => {
        this.running = undefined;
        if (this.stopping) return;
        if (this.again) {
          this.again = false;
          this.wake();
        } else {
          this.timer = setTimeout(() => this.wake(), this.config.pollMs);
        }
      });
  }

  /** Stops claiming; waits for the attempts in flight unless `abandon` (they then stay leased and are retried later). */
  async stop(abandon = false): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    await this.running;
    if (!abandon) await Promise.allSettled([...this.sends]);
  }

  private async pass(): Promise<void> {
    while (!this.stopping && this.inFlight < this.config.concurrency) {
      const messages = await this.outbox.claimDue(this.config.concurrency - this.inFlight, this.config.leaseMs, {
        perUrl: this.config.concurrencyPerUrl,
        busyMs: this.config.pollMs,
      });
      if (messages.length === 0) return;
      for (const message of messages) {
        this.inFlight += 1;
        const send = this.attempt(message)
          .catch((error: unknown) => this.logger.error({ err: error, message: message.id }, 'webhooks: an attempt could not be settled; it is retried when its lease ends'))
          .finally(() => {
            this.inFlight -= 1;
            this.sends.delete(send);
            this.wake();
          });
        this.sends.add(send);
      }
    }
  }

  private async attempt(message: ClaimedWebhookMessage): Promise<void> {
    const secrets = await this.outbox.secrets(message.tenant);
    const signWith = secrets.previous && secrets.previousUntil! > Date.now() ? [secrets.current, secrets.previous] : [secrets.current];
    const at = Date.now();
    const result = await sendWebhook(message.url, webhookHeaders(signWith, message.id, message.body, at), message.body, {
      allowPrivate: this.config.allowPrivate,
      timeoutMs: this.config.timeoutMs,
      ...(this.resolve ? { resolve: this.resolve } : {}),
    });
    const { outcome, retryInMs } = this.verdict(message, result);
    const log: DeliveryLogEntry = {
      at,
      message: message.id,
      type: message.type,
      url: message.url,
      attempt: message.attempt,
      latency_ms: result.latencyMs,
      outcome,
      ...(result.status === undefined ? {} : { status: result.status }),
      ...(result.error ? { error: result.error } : {}),
      ...(result.response ? { response: result.response } : {}),
      ...(retryInMs === undefined ? {} : { next_at: at + Math.round(result.latencyMs) + retryInMs }),
    };
    this.metrics.deliveries.inc({ outcome, type: message.type });
    if (result.status !== undefined) this.metrics.latency.observe(result.latencyMs / 1000);
    if (outcome !== 'delivered') {
      this.logger.info({ message: message.id, job_id: message.job, url: message.url, status: result.status, error: result.error, outcome }, 'webhook attempt not delivered');
    }
    await this.outbox.settle(message, outcome, log, retryInMs);
  }

  private verdict(message: ClaimedWebhookMessage, result: SendResult): { outcome: WebhookOutcome; retryInMs?: number } {
    const status = result.status;
    if (status !== undefined && status >= 200 && status < 300) return { outcome: 'delivered' };
    if (status === 410) return { outcome: 'disabled' };
    if (result.refused) return { outcome: 'failed' };
    const schedule = this.config.retryScheduleMs;
    if (message.attempt >= schedule.length) return { outcome: 'failed' };
    let delay = this.jittered(schedule[message.attempt]!);
    if ((status === 429 || status === 503) && result.retryAfterMs !== undefined) delay = Math.min(result.retryAfterMs, this.config.maxRetryAfterMs);
    return { outcome: 'retry', retryInMs: delay };
  }

  private jittered(delay: number): number {
    return Math.max(0, Math.round(delay * (1 + (Math.random() * 2 - 1) * this.config.retryJitter)));
  }
}
