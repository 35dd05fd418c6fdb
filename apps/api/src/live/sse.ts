import { ApiErrorBody, type StreamEvent, StreamId, compareStreamIds, eventTypeMatches, isTerminalEvent, poolOfJobId } from '@emp/core';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { assertSees } from '../auth/plugin';
import { ApiError } from '../errors';
import { isTerminal } from '../job-view';
import { JobParams, StreamQuery } from '../schemas';
import { enrichedJobEvent, jobStartCursor } from './job-feed';

const KEEP_ALIVE_MS = 15_000;

/**
 * Answers with a Server-Sent Events stream kept open with comments; `close()`
 * ends it once (and so does the client going away), calling `onClose` first.
 */
export function openEventStream(reply: FastifyReply, onClose: () => void): { raw: ServerResponse; close(): void; closed(): boolean } {
  // headers hooks already set (CORS for the monitor's origin, say) go out too: a hijacked reply skips the rest
  const set = Object.entries(reply.getHeaders()).filter((entry): entry is [string, string | number | string[]] => entry[1] !== undefined);
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, {
    ...Object.fromEntries(set),
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  raw.write('retry: 1000\n\n');
  let closed = false;
  const keepAlive = setInterval(() => raw.write(': keep-alive\n\n'), KEEP_ALIVE_MS);
  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(keepAlive);
    onClose();
    raw.end();
  };
  raw.once('close', close);
  return { raw, close, closed: () => closed };
}

/** A revoked key sees nothing more, whatever it is following: `close` runs when it is revoked. Returns the unwatch. */
export function closeOnRevocation(app: FastifyInstance, keyId: string, close: () => void): () => void {
  return app.apiKeys.onRevoked((revoked) => {
    if (revoked === keyId) close();
  });
}

/** The response schema of a Server-Sent Events route (a job's stream, a workflow's). */
export const EVENT_STREAM_RESPONSE = {
  200: {
    description: 'text/event-stream: per event `id: <event id>`, `event: <type>`, `data: <the event as JSON>`',
    content: { 'text/event-stream': { schema: z.string() } },
  },
  '4xx': ApiErrorBody,
};

/**
 * Server-Sent Events of one job: every event from its submission (or after
 * `Last-Event-ID` / `?after`), each with its stream id as the SSE id, so a
 * reconnecting EventSource resumes without a gap. The stream ends after the
 * job's terminal event. When events after the cursor were trimmed from the
 * stream, an `events.missed` event (without an id) comes first.
 */
export async function sseRoutes(app: FastifyInstance, options: { maxBufferedBytes: number }): Promise<void> {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { broker, hub } = app;

  api.get('/v1/jobs/:id/stream', {
    config: { access: 'readJobs' },
    schema: {
      summary: "Server-Sent Events of one job's events; resumes after Last-Event-ID",
      tags: ['jobs'],
      params: JobParams,
      querystring: StreamQuery,
      headers: z.object({ 'last-event-id': StreamId.optional() }).loose(),
      response: EVENT_STREAM_RESPONSE,
    },
  }, async (request, reply) => {
    const id = request.params.id;
    const job = await broker.getJob(id);
    if (!job) throw new ApiError(404, 'NOT_FOUND', `job ${id} does not exist (or its retention has passed)`);
    assertSees(request.principal, job);
    let last = request.headers['last-event-id'] ?? request.query.after ?? jobStartCursor(job);
    const types = request.query.events;

    let unsubscribe: (() => void) | undefined;
    let stopWatchingKey = () => {};
    const stream = openEventStream(reply, () => {
      stopWatchingKey();
      unsubscribe?.();
    });
    const { raw, close } = stream;
    stopWatchingKey = closeOnRevocation(app, request.principal.keyId, close);

    // events are enriched (a terminal one with its result) one after another, so they leave in order
    let chain = Promise.resolve();
    const send = (event: StreamEvent) => {
      chain = chain.then(async () => {
        if (stream.closed() || compareStreamIds(event.id, last) <= 0) return;
        if (!eventTypeMatches(types, event.type === 'unknown' ? (event.raw.type ?? '') : event.type)) {
          last = event.id;
          if (isTerminalEvent(event)) close();
          return;
        }
        const view = await enrichedJobEvent(broker, event);
        if (stream.closed()) return;
        last = event.id;
        raw.write(`id: ${event.id}\nevent: ${view.type}\ndata: ${JSON.stringify(view)}\n\n`);
        if (raw.writableLength > options.maxBufferedBytes) {
          request.log.warn({ job_id: id }, 'SSE consumer too slow; closing');
          close();
        } else if (isTerminalEvent(event)) close();
      }).catch((error: unknown) => {
        request.log.warn({ err: error, job_id: id }, 'SSE stream failed');
        close();
      });
    };
    // events after the cursor that the stream no longer holds: say so, without an id (the cursor stays where it was)
    const missed = await hub.missedAfter(poolOfJobId(id), last);
    if (missed) raw.write(`event: ${missed.type}\ndata: ${JSON.stringify({ ...missed, job: id })}\n\n`);
    unsubscribe = await hub.follow(poolOfJobId(id), last, send, id);
    // a job that had already ended when a client resumed past its last event: nothing more will come
    const now = await broker.getJob(id);
    if (!now || isTerminal(now.state)) {
      const rest = await broker.jobEvents(id, { after: last });
      for (const event of rest.events) send(event);
      chain = chain.then(close);
    }
  });
}
