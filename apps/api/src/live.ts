import { JobId, PoolName, ValidationError, parseWith } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import { type Principal, mayAccess } from './auth';
import { toHttpError } from './errors';
import type { JobFeedItem } from './job-follow';
import { followJob, followPool } from './job-follow';
import { eventBody } from './routes/jobs';
import type { ApiContext } from './server';

/** A subscriber whose unsent data passes this is closed (4008) instead of growing memory without bound. */
export const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
export const CLOSE_SLOW_CONSUMER = 4008;
const MAX_SUBSCRIPTIONS = 1_000;

const Cursor = z.string().regex(/^\d+-\d+$/, 'an event id looks like <ms>-<seq>');
const ClientMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('subscribe'), job_id: JobId, after: Cursor.optional() }).strict(),
  z.object({ type: z.literal('unsubscribe'), job_id: JobId }).strict(),
  /** operators: every event of the given pools (all pools when omitted), from `after` per pool when given */
  z.object({ type: z.literal('subscribe_all'), pools: z.array(PoolName).max(100).optional(), after: z.record(PoolName, Cursor).optional() }).strict(),
]);

/**
 * `GET /v1/live`: one WebSocket, many subscriptions. A client subscribes to its
 * jobs (a snapshot, then every event; with `after`, every event since that id);
 * an operator may subscribe to whole pools. Messages out:
 * `{type: 'snapshot', job}`, `{type: 'event', pool, event}`, `{type: 'error', code, message}`.
 */
export function liveRoutes(app: FastifyInstance, context: ApiContext): void {
  app.get('/v1/live', { websocket: true }, (socket, request) => {
    const session = new LiveSession(socket, request.principal, context);
    socket.on('message', (data) => void session.receive(String(data)));
    socket.on('close', () => session.close());
  });
}

class LiveSession {
  private readonly subscriptions = new Map<string, () => void>();
  private closed = false;

  constructor(
    private readonly socket: WebSocket,
    private readonly principal: Principal,
    private readonly context: ApiContext,
  ) {}

  async receive(text: string): Promise<void> {
    try {
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch {
        throw new ValidationError('message', [{ path: '', message: 'not JSON' }]);
      }
      const message = parseWith(ClientMessage, raw, 'message');
      if (message.type === 'subscribe') await this.subscribeJob(message.job_id, message.after);
      else if (message.type === 'unsubscribe') this.drop(`job:${message.job_id}`);
      else await this.subscribeAll(message.pools, message.after ?? {});
    } catch (error) {
      const { body } = toHttpError(error);
      this.send({ type: 'error', ...body.error });
    }
  }

  close(): void {
    this.closed = true;
    for (const unsubscribe of this.subscriptions.values()) unsubscribe();
    this.subscriptions.clear();
  }

  private async subscribeJob(jobId: string, after: string | undefined): Promise<void> {
    const key = `job:${jobId}`;
    if (this.subscriptions.has(key)) return;
    this.checkLimit();
    const { broker, feed } = this.context;
    const job = await broker.getJob(jobId);
    if (!job || !mayAccess(this.principal, job)) {
      this.send({ type: 'error', code: 'NOT_FOUND', message: `job ${jobId} does not exist`, job_id: jobId });
      return;
    }
    const unsubscribe = await followJob({ feed, broker, jobId, after, send: (item) => this.sendItem(item) });
    if (unsubscribe) this.keep(key, unsubscribe);
  }

  private async subscribeAll(pools: string[] | undefined, after: Record<string, string>): Promise<void> {
    if (this.principal.role !== 'operator') {
      this.send({ type: 'error', code: 'FORBIDDEN', message: `a ${this.principal.role} key may not follow the whole feed` });
      return;
    }
    const { broker, feed } = this.context;
    for (const pool of pools ?? (await broker.pools())) {
      const key = `pool:${pool}`;
      if (this.subscriptions.has(key)) continue;
      this.checkLimit();
      const unsubscribe = await followPool({
        feed,
        pool,
        after: after[pool],
        accept: () => true,
        send: (event) => this.send({ type: 'event', pool, event: eventBody(event) }),
      });
      if (unsubscribe) this.keep(key, unsubscribe);
    }
  }

  private sendItem(item: JobFeedItem): void {
    if (item.kind === 'snapshot') this.send({ type: 'snapshot', job: item.job });
    else this.send({ type: 'event', pool: item.event.pool, event: eventBody(item.event) });
  }

  private send(message: unknown): void {
    if (this.closed) return;
    if (this.socket.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.close();
      this.socket.close(CLOSE_SLOW_CONSUMER, 'slow consumer: too much unsent data');
      return;
    }
    this.socket.send(JSON.stringify(message));
  }

  private keep(key: string, unsubscribe: () => void): void {
    if (this.closed) unsubscribe();
    else this.subscriptions.set(key, unsubscribe);
  }

  private drop(key: string): void {
    this.subscriptions.get(key)?.();
    this.subscriptions.delete(key);
  }

  private checkLimit(): void {
    if (this.subscriptions.size >= MAX_SUBSCRIPTIONS) {
      throw new ValidationError('subscription', [{ path: '', message: `at most ${MAX_SUBSCRIPTIONS} per connection` }]);
    }
  }
}
