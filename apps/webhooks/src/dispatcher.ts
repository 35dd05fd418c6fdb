import {
  type ClaimedWebhookMessage,
  type DeliveryLogEntry,
  type WebhookEndpoints,
  type WebhookOutbox,
  type WebhookOutcome,
  endpointWants,
  type Span,
  SpanKind,
  SpanStatusCode,
  TRACING_OFF,
  type Tracing,
  traceparentOf,
  webhookHeaders,
} from '@emp/core';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { WebhookServiceConfig } from './config';
import { type Resolver, type SendResult, sendWebhook } from './delivery';
import type { WebhookMetrics } from './metrics';

/**
 * Takes due messages from the outbox (each leased while in flight), signs and
 * sends them, and settles each attempt: 2xx delivered; 410 Gone disables the
 * endpoint (a job's own webhook: the URL for the tenant); a refused target
 * fails at once; anything else is retried on the schedule (a 429/503's
 * Retry-After instead), until the schedule runs out. An endpoint's message is
 * signed with the endpoint's secret(s) and carries its custom headers; a job's
 * own webhook, with the tenant's secret(s).
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
    private readonly endpoints: WebhookEndpoints,
    private readonly config: WebhookServiceConfig,
    private readonly metrics: WebhookMetrics,
    private readonly logger: Logger,
    private readonly resolve?: Resolver,
    private readonly tracing: Tracing = TRACING_OFF,
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

  /**
   * One attempt, in a `webhook.deliver` span: a child of the job's submit (the message's
   * traceparent), else a trace of its own; the request carries the span's traceparent.
   */
  private attempt(message: ClaimedWebhookMessage): Promise<void> {
    const attributes = {
      'emp.job.id': message.job,
      'emp.webhook.endpoint': message.endpoint || 'job webhook',
      'emp.webhook.event': message.type,
      'emp.webhook.message': message.id,
      'emp.attempt': message.attempt,
    };
    // '' (none): a root span, not a child of whatever context the claim ran in
    return this.tracing.inSpan('webhook.deliver', { parent: message.traceparent ?? '', kind: SpanKind.CLIENT, attributes }, (span) => this.deliver(message, span));
  }

  private async deliver(message: ClaimedWebhookMessage, span: Span): Promise<void> {
    let url = message.url;
    let signWith: string[];
    let custom: Record<string, string> = {};
    if (message.endpoint) {
      const signing = await this.endpoints.signing(message.endpoint);
      if (!signing) {
        // deleted since it was claimed: nothing to send to
        span.setAttribute('emp.outcome', 'disabled');
        await this.outbox.settle(message, 'disabled', this.entry(message, url, Date.now(), { latencyMs: 0, error: 'the endpoint was deleted' }, 'disabled'));
        return;
      }
      url = signing.endpoint.url;
      signWith = signing.secrets;
      // lower-cased, so that one replaces the delivery's own (user-agent) instead of going out twice
      custom = Object.fromEntries(Object.entries(signing.endpoint.headers ?? {}).map(([name, value]) => [name.toLowerCase(), value]));
    } else {
      const secrets = await this.outbox.secrets(message.tenant);
      signWith = secrets.previous && secrets.previousUntil! > Date.now() ? [secrets.current, secrets.previous] : [secrets.current];
    }
    const at = Date.now();
    // Standard Webhooks receivers ignore headers they do not know; an endpoint's own traceparent header wins
    const traceparent = traceparentOf(span);
    const trace: Record<string, string> = traceparent ? { traceparent } : {};
    const result = await sendWebhook(url, { ...trace, ...custom, ...webhookHeaders(signWith, message.id, message.body, at) }, message.body, {
      allowPrivate: this.config.allowPrivate,
      timeoutMs: this.config.timeoutMs,
      resolve: this.resolve,
    });
    const { outcome, retryInMs } = this.verdict(message, result);
    if (result.status !== undefined) span.setAttribute('http.response.status_code', result.status);
    span.setAttribute('emp.outcome', outcome);
    if (outcome !== 'delivered') span.setStatus({ code: SpanStatusCode.ERROR, message: result.error ?? `HTTP ${result.status}` });
    const log = this.entry(message, url, at, result, outcome, retryInMs);
    this.metrics.deliveries.inc({ outcome, type: message.type });
    if (result.status !== undefined) this.metrics.latency.observe({ outcome }, result.latencyMs / 1000);
    if (outcome !== 'retry') this.metrics.lag.observe({ outcome }, Math.max(0, at + result.latencyMs - message.createdAt) / 1000);
    if (outcome !== 'delivered') {
      this.logger.info({ message: message.id, job_id: message.job, endpoint: message.endpoint, url, status: result.status, error: result.error, outcome }, 'webhook attempt not delivered');
    }
    const settled = await this.outbox.settleAttempt(message, outcome, log, retryInMs);
    if (settled === 'endpoint-disabled') await this.announceDisabled(message.endpoint!, at);
  }

  /**
   * Tells the operator-scoped endpoints that ask for `webhook.endpoint.disabled`
   * (the outbox's events stream has the durable record; this copy is best-effort).
   */
  private async announceDisabled(endpointId: string, at: number): Promise<void> {
    const disabled = await this.endpoints.get(endpointId);
    if (!disabled) return;
    this.logger.warn({ endpoint: endpointId, tenant: disabled.tenant, url: disabled.url, reason: disabled.disabled_reason }, 'webhook endpoint disabled');
    const type = 'webhook.endpoint.disabled';
    const watchers = (await this.endpoints.list('')).filter((e) => e.enabled && e.id !== endpointId && endpointWants(e, { type }));
    if (watchers.length === 0) return;
    const body = JSON.stringify({ type, timestamp: new Date(at).toISOString(), data: disabled });
    const event = `msg_endpoint_${at}_${randomBytes(3).toString('hex')}`;
    for (const watcher of watchers) {
      await this.outbox.enqueue({ id: `${event}_${watcher.id}`, tenant: '', url: watcher.url, job: `endpoint:${endpointId}`, type, body, endpoint: watcher.id });
    }
    this.wake();
  }

  private entry(
    message: ClaimedWebhookMessage,
    url: string,
    at: number,
    result: SendResult,
    outcome: WebhookOutcome,
    retryInMs?: number,
  ): DeliveryLogEntry {
    return {
      at,
      message: message.id,
      type: message.type,
      url,
      job: message.job,
      endpoint: message.endpoint || undefined,
      attempt: message.attempt,
      latency_ms: result.latencyMs,
      outcome,
      ...(result.status === undefined ? {} : { status: result.status }),
      error: result.error || undefined,
      response: result.response || undefined,
      ...(retryInMs === undefined ? {} : { next_at: at + Math.round(result.latencyMs) + retryInMs }),
    };
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
