import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The service's Prometheus metrics (served at /metrics). */
/** What the backlog gauges read (WebhookService: the outbox's backlog, ages in seconds by this process's clock). */
export interface WebhookBacklog {
  messages: number;
  oldestDueAgeSeconds: number;
  oldestUndeliveredAgeSeconds: number;
}

export class WebhookMetrics {
  readonly registry = new Registry();
  readonly deliveries = new Counter({
    name: 'emp_webhook_deliveries_total',
    help: 'Delivery attempts by outcome (delivered, retry, failed, disabled) and event type',
    labelNames: ['outcome', 'type'],
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: 'emp_webhook_delivery_duration_seconds',
    help: 'Time from sending a webhook to its complete answer, by the attempt\'s outcome',
    labelNames: ['outcome'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15],
    registers: [this.registry],
  });
  readonly lag = new Histogram({
    name: 'emp_webhook_message_age_seconds',
    help: 'Time from a message being queued (its job event) to its last attempt, by how it ended (delivered, failed, disabled)',
    labelNames: ['outcome'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 1800, 3600, 21600, 86400],
    registers: [this.registry],
  });
  readonly queued = new Counter({
    name: 'emp_webhook_messages_total',
    help: 'Messages made from job events, by result (queued, merged into a pending progress message, known: read twice, disabled)',
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly events = new Counter({
    name: 'emp_webhook_events_read_total',
    help: "Events read from the pools' streams through the consumer group",
    labelNames: ['pool'],
    registers: [this.registry],
  });

  readonly lost = new Counter({
    name: 'emp_webhook_events_lost_total',
    help: "Events of a pool's stream trimmed (the stream's MAXLEN, eventsMaxLen) before the service read or handled them: never delivered",
    labelNames: ['pool'],
    registers: [this.registry],
  });

  constructor(backlog: () => Promise<WebhookBacklog>) {
    collectDefaultMetrics({ register: this.registry, prefix: 'emp_webhooks_' });
    let reading: Promise<WebhookBacklog> | undefined;
    const read = () => (reading ??= backlog().finally(() => setTimeout(() => (reading = undefined), 500)));
    const gauges: Array<[name: string, help: string, value: (backlog: WebhookBacklog) => number]> = [
      [
        'emp_webhook_backlog_messages',
        'Messages not yet delivered or given up: waiting for an attempt, in flight, or behind an earlier message of their job',
        (b) => b.messages,
      ],
      ['emp_webhook_oldest_due_age_seconds', 'How long the most overdue message has been due (0: none overdue)', (b) => b.oldestDueAgeSeconds],
      [
        'emp_webhook_oldest_undelivered_age_seconds',
        'Age of the oldest message not yet delivered or given up, from when it was queued or resent (0: none)',
        (b) => b.oldestUndeliveredAgeSeconds,
      ],
    ];
    // one backlog read serves the three gauges of a scrape
    for (const [name, help, value] of gauges) {
      new Gauge({
        name,
        help,
        registers: [this.registry],
        async collect() {
          this.set(value(await read()));
        },
      });
    }
  }
}
