import {
  type BlockingConnection,
  type Broker,
  EmpError,
  type TracedJob,
  type JobStreamEvent,
  type StreamEvent,
  type Tracing,
  TRACING_OFF,
  endSpan,
  eventView,
  type WebhookEndpoint,
  type WebhookEndpoints,
  type WebhookEventType,
  type WebhookMessageInput,
  type WebhookOutbox,
  endpointWants,
  isJobEvent,
  isWorkflowEvent,
  type WorkflowStreamEvent,
  isOperatorEventType,
  jobView,
  webhookWants,
} from '@emp/core';
import type { Logger } from 'pino';
import type { WebhookServiceConfig } from './config';
import type { WebhookMetrics } from './metrics';

/** What a stream event is called when it reaches a webhook; job.starting (claimed, model loading) is not sent. */
const WEBHOOK_TYPE: Partial<Record<JobStreamEvent['type'], WebhookEventType>> = {
  'job.queued': 'job.queued',
  'job.running': 'job.started',
  'job.progress': 'job.progress',
  'job.retrying': 'job.retrying',
  'job.succeeded': 'job.succeeded',
  'job.failed': 'job.failed',
  'job.canceled': 'job.canceled',
  'job.expired': 'job.expired',
};

/**
 * The webhook message id of an event (to a job's own webhook, or to one endpoint): stable, so
 * an event read twice is queued once and a receiver can dedupe.
 */
export function messageId(event: StreamEvent, endpoint?: string): string {
  // per stream: a stream id is unique within its shard's stream (the pool's own name for shard 0)
  return endpoint ? `msg_${event.shard}_${event.id}_${endpoint}` : `msg_${event.shard}_${event.id}`;
}

/** Events read at once. */
const BATCH = 200;
/** most job traces one webhook.intake span links to (a batch holds at most BATCH events) */
const MAX_LINKS = 128;

/** Endpoints an event batch may go to, read once per tenant per batch (new and changed endpoints count from the next batch). */
type EndpointCache = Map<string, Promise<WebhookEndpoint[]>>;

/**
 * Reads every pool's event stream through the consumer group, turns job events
 * into messages for the job's webhook (body fixed now, so every retry sends the
 * same bytes), queues them in the outbox and only then acknowledges the events:
 * a crash in between re-reads them (queueing is idempotent). One instance at a
 * time reads a pool (a lease in Redis, renewed while it reads), so a job's
 * messages join its chain in the order its events happened whichever instances
 * run; an instance that takes a pool over first handles the events its
 * predecessor left pending (XAUTOCLAIM), then new ones.
 */
export class EventIntake {
  private readonly pools = new Map<string, Promise<void>>();
  private readonly connections: BlockingConnection[] = [];
  private stopping = false;
  private scanTimer: NodeJS.Timeout | undefined;
  private firstScan = true;
  private wakeStandby: Array<() => void> = [];

  constructor(
    private readonly broker: Broker,
    private readonly outbox: WebhookOutbox,
    private readonly endpoints: WebhookEndpoints,
    private readonly config: WebhookServiceConfig,
    private readonly consumer: string,
    private readonly metrics: WebhookMetrics,
    private readonly logger: Logger,
    /** called after messages were queued, so the dispatcher looks at once */
    private readonly onQueued: () => void,
    /** where the webhook.intake spans go (one per batch); default: none */
    private readonly tracing: Tracing = TRACING_OFF,
  ) {}

  async start(): Promise<void> {
    await this.scanPools();
    this.firstScan = false;
    const scan = () => {
      this.scanTimer = setTimeout(() => {
        this.scanPools().catch((error: unknown) => this.logger.error({ err: error }, 'webhooks: scanning pools failed')).finally(() => {
          if (!this.stopping) scan();
        });
      }, this.config.poolScanMs);
    };
    scan();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.scanTimer);
    for (const wake of this.wakeStandby.splice(0)) wake();
    for (const connection of this.connections) connection.close();
    await Promise.allSettled(this.pools.values());
    // another instance takes the pools over now instead of after the lease
    await Promise.allSettled([...this.pools.keys()].map((pool) => this.outbox.releaseReader(pool, this.consumer)));
  }

  private async scanPools(): Promise<void> {
    // every shard's stream (a pool's name is its shard 0; pool-shards.ts)
    for (const pool of await this.broker.shards()) {
      if (this.pools.has(pool) || this.stopping) continue;
      // a pool there at the service's first start is read from now on; one that appears later, from its first event
      await this.broker.ensureEventGroup(pool, this.config.group, this.firstScan ? '$' : '0');
      this.pools.set(pool, this.readLoop(pool));
    }
  }

  private async readLoop(pool: string): Promise<void> {
    // errors reach the read that fails, which logs them and retries
    const connection = this.broker.blockingConnection();
    this.connections.push(connection);
    const leaseMs = this.config.readerLeaseMs;
    // blocking reads return often enough to renew the lease in time
    const blockMs = Math.max(10, Math.min(1_000, Math.floor(leaseMs / 3)));
    let holding = false;
    let catchUp = true;
    let renewedAt = 0;
    // the counters are looked at (a MULTI with XINFO) when the last read may have left entries behind,
    // and once a second anyway; a caught-up reader otherwise blocks on the stream at once
    let watch = true;
    let watchedAt = 0;
    while (!this.stopping) {
      try {
        // renewed every half blockMs at least: a batch comes every few ms under load
        const held = holding && Date.now() - renewedAt < blockMs / 2 ? true : await this.outbox.holdReader(pool, this.consumer, leaseMs);
        if (held) renewedAt = Date.now();
        if (!held) {
          if (holding) this.logger.warn({ pool }, 'webhooks: lost the lease of reading this pool (this instance was too slow to renew it)');
          holding = false;
          await this.standBy(blockMs);
          continue;
        }
        if (!holding) {
          holding = true;
          catchUp = true;
          watch = true;
        }
        if (catchUp) {
          // whatever the group has pending (a predecessor's, or ours after an error) goes first, in stream order
          await this.takeOverPending(pool);
          catchUp = false;
        }
        let events: StreamEvent[] = [];
        if (watch || Date.now() - watchedAt >= 1_000) {
          // what is there already, with the group's counters (entries trimmed unread are told)
          const read = await this.broker.readEventGroupWatched(pool, this.config.group, this.consumer, { count: BATCH, connection });
          watchedAt = Date.now();
          if (read.loss) await this.reportLoss(pool, read.loss.count, read.loss.after, read.loss.before);
          events = read.events;
        }
        // none: wait for more
        if (!events.length) events = await this.broker.readEventGroup(pool, this.config.group, this.consumer, { count: BATCH, blockMs, connection });
        // a full batch: more may wait, which the stream's trimming could take before the next read
        watch = events.length >= BATCH;
        if (events.length) await this.handle(pool, events);
      } catch (error) {
        if (this.stopping) break;
        catchUp = true;
        watch = true;
        this.logger.error({ err: error, pool }, 'webhooks: reading the event stream failed; retrying');
        await this.standBy(1_000);
      }
    }
  }

  private standBy(ms: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        clearTimeout(timer);
        this.wakeStandby = this.wakeStandby.filter((wake) => wake !== done);
        resolve();
      };
      timer = setTimeout(done, ms);
      this.wakeStandby.push(done);
    });
  }

  private async takeOverPending(pool: string): Promise<void> {
    let cursor = '0-0';
    do {
      const page = await this.broker.claimStaleEvents(pool, this.config.group, this.consumer, 0, { cursor, count: 200 });
      // read but not acknowledged when the stream's trimming took them: gone, and dropped from the group now
      if (page.trimmed.length) await this.reportLoss(pool, page.trimmed.length, '', '', page.trimmed);
      if (page.events.length) {
        this.logger.info({ pool, events: page.events.length }, 'webhooks: handling events left pending');
        await this.handle(pool, page.events);
      }
      cursor = page.cursor;
    } while (cursor !== '0-0' && !this.stopping);
  }

  /**
   * Events of the pool's stream were trimmed (the broker's `eventsMaxLen`) before they were
   * handled: never delivered. Said in the log, the metric, the outbox's own stream
   * (`webhook.events.lost`, durable) and, best-effort, to the operator-scoped endpoints that ask for it.
   */
  private async reportLoss(pool: string, count: number, after: string, before: string, ids?: string[]): Promise<void> {
    this.metrics.lost.inc({ pool }, count);
    this.logger.error(
      { pool, lost: count, after: after || undefined, before: before || undefined, ids: ids?.slice(0, 20) },
      `webhooks: ${count} events of pool ${pool} were trimmed from its stream before this service handled them: they are not delivered (raise the broker's eventsMaxLen, or run more webhook service instances)`,
    );
    const event = await this.outbox.recordLostEvents({ pool, group: this.config.group, count, after, before });
    const type = 'webhook.events.lost';
    const watchers = (await this.endpoints.list('')).filter((e) => e.enabled && endpointWants(e, { type }));
    if (watchers.length === 0) return;
    const at = Date.now();
    const body = JSON.stringify({ type, timestamp: new Date(at).toISOString(), data: { pool, group: this.config.group, count, after, before } });
    for (const watcher of watchers) {
      await this.outbox.enqueue({ id: `msg_lost_${pool}_${event}_${watcher.id}`, tenant: '', url: watcher.url, job: `pool:${pool}`, type, body, endpoint: watcher.id });
    }
    this.onQueued();
  }

  /**
   * Turns a batch of events into messages and queues them, then acknowledges the batch: a
   * bounded number of round trips whatever its size (the endpoints of its tenants, read at
   * once; its jobs, one pipeline per pool; the messages, pipelines of `enqueueMany` in stream
   * order, so a job's messages join each chain in the order its events happened; one XACK).
   * Nothing is acknowledged before every message of the batch is queued: a crash or a Redis
   * error in between reads the batch again, and queueing it again finds the messages known.
   */
  private async handle(pool: string, events: StreamEvent[]): Promise<void> {
    if (!this.tracing.enabled) {
      await this.handleBatch(pool, events);
      return;
    }
    const startTime = Date.now();
    let span: ReturnType<Tracing['startSpan']> | undefined;
    try {
      const queued = await this.handleBatch(pool, events, (traceparents) => {
        // a batch serves many jobs: its span is a root of its own trace, linked to (not parented by) the jobs' traces
        span = this.tracing.startSpan('webhook.intake', {
          parent: '',
          startTime,
          links: traceparents.slice(0, MAX_LINKS),
          attributes: { 'emp.pool': pool, 'emp.webhook.events': events.length, 'emp.webhook.linked_jobs': Math.min(traceparents.length, MAX_LINKS) },
        });
      });
      span?.setAttribute('emp.webhook.messages_queued', queued);
      if (span) endSpan(span, 'queued');
    } catch (error) {
      if (span) endSpan(span, 'failed', error);
      else endSpan(this.tracing.startSpan('webhook.intake', { parent: '', startTime, attributes: { 'emp.pool': pool, 'emp.webhook.events': events.length } }), 'failed', error);
      throw error;
    }
  }

  /** `handle`'s work; `onJobsRead` hears the traceparents of the batch's jobs once they are read. Resolves with the messages newly queued. */
  private async handleBatch(pool: string, events: StreamEvent[], onJobsRead?: (traceparents: string[]) => void): Promise<number> {
    this.metrics.events.inc({ pool }, events.length);
    const cache: EndpointCache = new Map();
    const jobEvents = events.filter((event): event is JobStreamEvent => isJobEvent(event) && WEBHOOK_TYPE[event.type] !== undefined);
    // every tenant's endpoints (and the operator-scoped ones) and every job at once
    for (const event of jobEvents) void this.endpointsOf(event.tenant, cache).catch(() => undefined);
    for (const event of events) if (isWorkflowEvent(event)) void this.endpointsOf(event.tenant, cache).catch(() => undefined);
    if (events.some((event) => !isJobEvent(event))) void this.endpointsOf('', cache).catch(() => undefined);
    const jobIds = [...new Set(jobEvents.map((event) => event.job))];
    // with each job its submit's traceparent: carried beside the message's body (never in it), so deliveries join the job's trace
    const read = await this.broker.getTracedJobsSettled(jobIds);
    const jobs = new Map(jobIds.map((id, index) => [id, read[index]!]));
    onJobsRead?.([...new Set(read.flatMap((r) => (r.status === 'fulfilled' && r.value?.traceparent ? [r.value.traceparent] : [])))]);
    const messages: WebhookMessageInput[] = [];
    // in stream order: a job's messages join its chains in the order its events happened
    for (const event of events) {
      try {
        messages.push(...(await this.messagesOf(event, cache, jobs)));
      } catch (error) {
        // a job record that does not parse would fail on every re-read: log it and go on; anything else (Redis) retries the batch
        if (!(error instanceof EmpError)) throw error;
        this.logger.error({ err: error, pool, event: event.id, type: event.type }, 'webhooks: an event could not be turned into a message; skipped');
      }
    }
    const results = await this.outbox.enqueueMany(messages);
    for (const result of results) this.metrics.queued.inc({ result });
    await this.broker.ackEvents(pool, this.config.group, events.map((e) => e.id));
    if (results.includes('queued')) this.onQueued();
    return results.filter((result) => result === 'queued').length;
  }

  private async messagesOf(event: StreamEvent, cache: EndpointCache, jobs: Map<string, PromiseSettledResult<TracedJob | null>>): Promise<WebhookMessageInput[]> {
    if (isWorkflowEvent(event)) return this.workflowMessages(event, cache);
    if (!isJobEvent(event)) return this.fleetMessages(event, cache);
    const type = WEBHOOK_TYPE[event.type];
    if (!type) return [];
    // the workflow filter needs the job; type and service the event has
    const candidates = (await this.endpointsOf(event.tenant, cache)).filter((endpoint) =>
      endpointWants({ events: endpoint.events, services: endpoint.services }, { type, service: event.service }),
    );
    const read = jobs.get(event.job);
    if (read?.status === 'rejected') throw read.reason;
    if (!read?.value) return [];
    const { job, traceparent } = read.value;
    const own = job.webhook && webhookWants(job.webhook, type);
    const targets = candidates.filter((endpoint) => endpointWants(endpoint, { type, service: job.service, workflow: job.workflow_id || undefined }));
    if (!own && targets.length === 0) return [];
    const body = JSON.stringify({ type, timestamp: new Date(event.ts).toISOString(), data: jobView(job) });
    const messages: WebhookMessageInput[] = [];
    const trace = traceparent ? { traceparent } : {};
    if (own) messages.push({ id: messageId(event), tenant: job.tenant, url: job.webhook!.url, job: job.id, type, body, ...trace });
    for (const endpoint of targets) {
      messages.push({ id: messageId(event, endpoint.id), tenant: job.tenant, url: endpoint.url, job: job.id, type, body, endpoint: endpoint.id, ...trace });
    }
    return messages;
  }

  /**
   * workflow.* events go to the workflow's tenant's endpoints (and the operator-scoped ones) that ask
   * for them, in order per workflow (its id is the chain's subject).
   */
  private async workflowMessages(event: WorkflowStreamEvent, cache: EndpointCache): Promise<WebhookMessageInput[]> {
    const facts = { type: event.type, workflow: event.workflow };
    const targets = (await this.endpointsOf(event.tenant, cache)).filter((endpoint) => endpointWants(endpoint, facts));
    if (targets.length === 0) return [];
    const { id: _entry, ts, pool: _pool, shard: _shard, type, ...data } = event;
    const body = JSON.stringify({ type, timestamp: new Date(ts).toISOString(), data });
    return targets.map((endpoint) => ({ id: messageId(event, endpoint.id), tenant: event.tenant, url: endpoint.url, job: event.workflow, type, body, endpoint: endpoint.id }));
  }

  /** machine.* / worker.* events go to the operator-scoped endpoints that ask for them, in order per machine or worker. */
  private async fleetMessages(event: StreamEvent, cache: EndpointCache): Promise<WebhookMessageInput[]> {
    if (event.type === 'unknown' || !isOperatorEventType(event.type)) return [];
    const targets = (await this.endpointsOf('', cache)).filter((endpoint) => endpointWants(endpoint, { type: event.type }));
    if (targets.length === 0) return [];
    // as the feeds show it (eventView): the pool, and the shard only where it is not the pool's first
    const { id: _entry, ts, ...data } = eventView(event);
    const subject = 'machine' in event && event.type.startsWith('machine.') ? `machine:${String(event.machine)}` : 'worker' in event ? `worker:${String(event.worker)}` : `fleet:${event.pool}`;
    const body = JSON.stringify({ type: event.type, timestamp: new Date(ts).toISOString(), data });
    return targets.map((endpoint) => ({ id: messageId(event, endpoint.id), tenant: '', url: endpoint.url, job: subject, type: event.type, body, endpoint: endpoint.id }));
  }

  /** The enabled endpoints of a tenant and the operator-scoped ones ('': the operator-scoped ones only). */
  private endpointsOf(tenant: string, cache: EndpointCache): Promise<WebhookEndpoint[]> {
    let found = cache.get(tenant);
    if (!found) {
      found = tenant ? this.endpoints.forDelivery(tenant) : this.endpoints.list('').then((all) => all.filter((e) => e.enabled));
      cache.set(tenant, found);
    }
    return found;
  }
}
