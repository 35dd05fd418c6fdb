import {
  type Broker,
  type StreamEvent,
  eventView,
  isEventOfWorkflow,
  CLOSE_KEY_REVOKED,
  CLOSE_SLOW_CONSUMER,
  EmpError,
  LiveClientMessage,
  type LiveServerMessage,
  ValidationError,
  parseWith,
  poolOfJobId,
  poolOfShard,
} from '@emp/core';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import { assertSees } from '../auth/plugin';
import type { Principal } from '../auth/roles';
import { jobAnswer } from '../job-view';
import type { QueueEta } from '../queue-eta';
import { queueReport } from '../routes/fleet';
import type { EventHub } from './event-hub';
import { enrichedJobEvent, jobStartCursor } from './job-feed';
import { LogThrottle } from './log-throttle';

export interface LiveOptions {
  /** a socket whose unsent data passes this is closed with 4008 instead of buffering without bound */
  maxBufferedBytes: number;
  /** ping interval; a socket that did not answer the previous ping is dropped */
  pingMs: number;
  /** most jobs one socket may follow at once */
  maxSubscriptions: number;
  /** error lines one socket may cause before they are only counted (default 5) */
  errorLogBurst: number;
  /** after the burst, at most one summary line per this many ms (default 60 s) */
  errorLogIntervalMs: number;
}

/** Why a client's frame was refused: not a valid message (not JSON, binary, not a known shape), or the server failed on it. */
export type InvalidFrameReason = 'validation' | 'error';

interface JobSubscription {
  pool: string;
  unsubscribe: () => void;
  state: string;
  position?: number;
}

/**
 * One WebSocket client of /v1/live. Clients follow their jobs (snapshot or
 * resume, then queued / position / starting / running / progress / terminal
 * with result); operators may follow the whole feed (snapshot, then deltas).
 * Every event comes from the hub's shared per-pool readers.
 */
class LiveConnection {
  private readonly jobs = new Map<string, JobSubscription>();
  /** the workflows this socket follows: each one's unsubscribe */
  private readonly workflows = new Map<string, () => void>();
  private readonly monitor: Array<() => void> = [];
  private readonly cleanups: Array<() => void> = [];
  private chain = Promise.resolve();
  private closed = false;
  private readonly errorLog: LogThrottle;

  constructor(
    private readonly socket: WebSocket,
    private readonly principal: Principal,
    private readonly broker: Broker,
    private readonly hub: EventHub,
    private readonly queueEta: QueueEta,
    private readonly log: FastifyBaseLogger,
    private readonly options: LiveOptions,
    private readonly onInvalidFrame: (reason: InvalidFrameReason) => void,
  ) {
    this.errorLog = new LogThrottle(log, options.errorLogBurst, options.errorLogIntervalMs);
    socket.on('message', (data, isBinary) => this.enqueue(() => this.onMessage(isBinary ? null : data.toString()), { frame: true }));
    socket.on('close', () => this.dispose());
    socket.on('error', () => this.dispose());
  }

  /**
   * Handles messages and events one at a time, so that what this socket is sent
   * keeps its order. A client's frame that is refused is counted (metrics); the
   * error lines a socket causes are throttled, since a client can send bad
   * frames in a loop.
   */
  private enqueue(work: () => Promise<void> | void, source: { frame?: boolean } = {}): void {
    this.chain = this.chain.then(work).catch((error: unknown) => {
      if (error instanceof EmpError) {
        if (source.frame && error instanceof ValidationError) this.onInvalidFrame('validation');
        this.send({ type: 'error', code: error.code, message: error.message, issues: error instanceof ValidationError ? error.issues : undefined });
      } else {
        if (source.frame) this.onInvalidFrame('error');
        this.errorLog.error({ err: error, key_id: this.principal.keyId }, source.frame ? 'live socket failed on a client frame' : 'live socket failed');
        this.send({ type: 'error', code: 'INTERNAL', message: 'internal error; it has been logged' });
      }
    });
  }

  private send(message: LiveServerMessage): void {
    if (this.closed || this.socket.readyState !== this.socket.OPEN) return;
    if (this.socket.bufferedAmount > this.options.maxBufferedBytes) {
      this.log.warn({ key_id: this.principal.keyId, buffered: this.socket.bufferedAmount }, 'live consumer too slow; closing');
      this.socket.close(CLOSE_SLOW_CONSUMER, 'slow consumer: too many unsent messages');
      this.dispose();
      return;
    }
    this.socket.send(JSON.stringify(message));
  }

  private async onMessage(text: string | null): Promise<void> {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text ?? '');
    } catch {
      throw new ValidationError('message', [{ path: '', message: 'a message is a JSON text frame' }]);
    }
    const message = parseWith(LiveClientMessage, parsed, 'message');
    if (message.type === 'subscribe') await this.subscribe(message.job, message.after);
    else if (message.type === 'unsubscribe') this.unsubscribe(message.job);
    else if (message.type === 'subscribe_workflow') await this.subscribeWorkflow(message.workflow, message.after);
    else if (message.type === 'unsubscribe_workflow') this.unsubscribeWorkflow(message.workflow);
    else await this.follow(message.after);
  }

  private async subscribe(id: string, after: string | undefined): Promise<void> {
    if (this.jobs.has(id)) return;
    if (this.jobs.size >= this.options.maxSubscriptions) {
      this.send({ type: 'error', code: 'TOO_MANY_SUBSCRIPTIONS', job: id, message: `a socket follows at most ${this.options.maxSubscriptions} jobs; unsubscribe from some first` });
      return;
    }
    const pool = poolOfJobId(id);
    // taken before the snapshot, so that nothing between the two is missed
    const cursor = after === undefined ? await this.hub.latestId(pool) : undefined;
    const job = await this.broker.getJob(id);
    if (!job) throw new EmpError('NOT_FOUND', `job ${id} does not exist (or its retention has passed)`);
    assertSees(this.principal, job);
    if (this.closed || this.jobs.has(id)) return;
    const subscription: JobSubscription = { pool, unsubscribe: () => undefined, state: job.state, position: job.position };
    this.jobs.set(id, subscription);
    if (cursor !== undefined) this.send({ type: 'snapshot', job: await jobAnswer(this.queueEta, job), cursor });
    const from = after === 'start' ? jobStartCursor(job) : (after ?? cursor!);
    if (after !== undefined) {
      const missed = await this.hub.missedAfter(pool, from);
      if (missed) this.send({ ...missed, job: id });
    }
    subscription.unsubscribe = await this.hub.follow(
      pool,
      from,
      (event) => this.enqueue(() => this.onJobEvent(subscription, event)),
      id,
    );
    if (this.closed) subscription.unsubscribe();
  }

  private async onJobEvent(subscription: JobSubscription, event: StreamEvent): Promise<void> {
    if (this.closed) return;
    const { type, ...view } = await enrichedJobEvent(this.broker, event);
    if (event.type !== 'job.progress' && event.type !== 'unknown' && 'state' in event) subscription.state = event.state;
    this.send({ type: 'event', event: type, ...view });
  }

  /** Every event of one workflow (its workflow.* events and its steps' job events) from `after` ('start': its submission). */
  private async subscribeWorkflow(id: string, after: string | undefined): Promise<void> {
    if (this.workflows.has(id)) return;
    if (this.jobs.size + this.workflows.size >= this.options.maxSubscriptions) {
      this.send({ type: 'error', code: 'TOO_MANY_SUBSCRIPTIONS', workflow: id, message: `a socket follows at most ${this.options.maxSubscriptions} jobs and workflows; unsubscribe from some first` });
      return;
    }
    const workflow = await this.broker.getWorkflow(id);
    // another tenant's workflow is answered as one that does not exist
    if (!workflow || (this.principal.tenant !== undefined && this.principal.tenant !== workflow.tenant)) {
      this.send({ type: 'error', code: 'NOT_FOUND', workflow: id, message: `workflow ${id} does not exist (or its retention has passed)` });
      return;
    }
    if (this.closed || this.workflows.has(id)) return;
    this.workflows.set(id, () => undefined);
    const pool = workflow.pool;
    const from = after === undefined || after === 'start' ? `${Math.max(0, workflow.submitted_at - 1)}-0` : after;
    const missed = await this.hub.missedAfter(pool, from);
    if (missed) this.send({ ...missed, workflow: id });
    const stop = await this.hub.follow(pool, from, (event) => {
      if (!isEventOfWorkflow(id, event)) return;
      this.enqueue(() => {
        const { type, ...view } = eventView(event);
        this.send({ type: 'event', event: type, ...view });
      });
    });
    if (this.closed || !this.workflows.has(id)) stop();
    else this.workflows.set(id, stop);
  }

  private unsubscribeWorkflow(id: string): void {
    this.workflows.get(id)?.();
    this.workflows.delete(id);
  }

  private unsubscribe(id: string): void {
    this.jobs.get(id)?.unsubscribe();
    this.jobs.delete(id);
  }

  /** Queued jobs this socket follows may have moved up: tell it their new positions. */
  onQueueMove(pool: string): void {
    for (const [id, subscription] of this.jobs) {
      if (subscription.pool !== pool || subscription.state !== 'queued') continue;
      this.enqueue(async () => {
        const job = await this.broker.getJob(id);
        if (!job || job.position === undefined || job.position === subscription.position) return;
        subscription.position = job.position;
        const eta = await this.queueEta.etaMs(job);
        this.send({ type: 'position', job: id, position: job.position, eta_ms: eta });
      });
    }
  }

  private async follow(after: Record<string, string> | undefined): Promise<void> {
    if (this.principal.role !== 'operator') {
      this.send({ type: 'error', code: 'FORBIDDEN', message: 'only an operator key may follow the whole feed' });
      return;
    }
    if (this.monitor.length > 0) return;
    // cursors are per stream, so per shard (a pool's name is its shard 0); the snapshot is per pool
    const shards = [...new Set([...(await this.broker.shards()), ...Object.keys(after ?? {})])];
    let cursors: Record<string, string> = {};
    if (after) {
      cursors = Object.fromEntries(shards.map((shard) => [shard, after[shard] ?? '0-0']));
      for (const shard of shards) {
        const missed = await this.hub.missedAfter(shard, cursors[shard]!);
        if (missed) this.send(missed);
      }
    } else {
      for (const shard of shards) cursors[shard] = await this.hub.latestId(shard);
      const pools = [...new Set(shards.map(poolOfShard))];
      const [queues, workers, machines] = await Promise.all([
        queueReport(this.broker, pools),
        Promise.all(pools.map(async (pool) => (await this.broker.workers(pool)).map((w) => ({ pool, ...w })))),
        Promise.all(pools.map(async (pool) => (await this.broker.machines(pool)).map((m) => ({ pool, ...m })))),
      ]);
      this.send({ type: 'monitor.snapshot', cursors, queues, workers: workers.flat(), machines: machines.flat() });
    }
    const deliver = (event: StreamEvent) => this.enqueue(() => {
      const { type, ...view } = eventView(event);
      this.send({ type: 'event', event: type, ...view });
    });
    for (const shard of shards) this.monitor.push(await this.hub.follow(shard, cursors[shard]!, deliver));
    // a pool that appears later is followed from its first event
    this.cleanups.push(this.hub.onPool((pool) => {
      if (!(pool in cursors)) void this.hub.follow(pool, '0-0', deliver).then((stop) => (this.closed ? stop() : this.monitor.push(stop)));
    }));
  }

  dispose(): void {
    if (this.closed) return;
    this.closed = true;
    this.errorLog.flush();
    for (const subscription of this.jobs.values()) subscription.unsubscribe();
    this.jobs.clear();
    for (const stop of this.workflows.values()) stop();
    this.workflows.clear();
    for (const stop of [...this.monitor, ...this.cleanups]) stop();
  }

  /** The key this socket was opened with was revoked: it may see nothing more. */
  keyRevoked(keyId: string): void {
    if (this.closed || keyId !== this.principal.keyId) return;
    this.socket.close(CLOSE_KEY_REVOKED, 'API key revoked');
    this.dispose();
  }

  addCleanup(cleanup: () => void): void {
    this.cleanups.push(cleanup);
  }
}

/** /v1/live: the WebSocket feed. The key may come as `?api_key=` since browsers cannot set headers on a WebSocket. */
export async function liveRoutes(app: FastifyInstance, options: LiveOptions): Promise<void> {
  const { broker, hub, queueEta } = app;
  const alive = new WeakSet<WebSocket>();
  const pinger = setInterval(() => {
    for (const client of app.websocketServer.clients) {
      if (!alive.has(client)) {
        client.terminate();
        continue;
      }
      alive.delete(client);
      client.ping();
    }
  }, options.pingMs);
  pinger.unref();
  app.addHook('onClose', async () => clearInterval(pinger));

  app.get('/v1/live', {
    websocket: true,
    config: { access: 'readJobs' },
    schema: {
      summary: 'WebSocket: follow jobs ({type:"subscribe", job, after?}), workflows ({type:"subscribe_workflow", workflow, after?}) or, as an operator, the whole feed ({type:"monitor", after?})',
      tags: ['live'],
      querystring: z.object({ api_key: z.string().optional() }).strict(),
    },
  }, (socket, request) => {
    alive.add(socket);
    socket.on('pong', () => alive.add(socket));
    const connection = new LiveConnection(socket, request.principal, broker, hub, queueEta, request.log, options, (reason) => app.apiMetrics.invalidLiveFrames.inc({ reason }));
    connection.addCleanup(hub.onQueueMove((pool) => connection.onQueueMove(pool)));
    connection.addCleanup(app.apiKeys.onRevoked((keyId) => connection.keyRevoked(keyId)));
  });
}
