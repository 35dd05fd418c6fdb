import { type Broker, type MachineLogEntry, StreamId } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ApiError } from '../errors';
import { closeOnRevocation, openEventStream } from '../live/sse';
import { MachineLogParams, MachineLogQuery } from '../schemas';

const FOLLOW_BLOCK_MS = 5_000;

/** The pool a machine is registered in: the one named (when it is there), else the one it is found in. */
export async function poolOfMachine(broker: Broker, id: string, pool: string | undefined): Promise<string> {
  for (const candidate of pool ? [pool] : await broker.pools()) {
    if (await broker.isMachineRegistered(candidate, id)) return candidate;
  }
  throw new ApiError(404, 'NOT_FOUND', `machine ${id} is not registered in ${pool ? `pool ${pool}` : 'any pool'}`);
}

/**
 * Output lines of a machine's supervised processes, from the capped stream its
 * agent writes (`machine-logs:<machine>`): a JSON page, or with `follow=1`
 * Server-Sent Events that stay open for new lines (resumable with Last-Event-ID).
 */
export async function machineLogRoutes(app: FastifyInstance, options: { maxBufferedBytes: number }): Promise<void> {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { broker } = app;

  api.get('/v1/machines/:id/logs', {
    config: { access: 'operate' },
    schema: {
      summary: "Output lines of a machine's processes (services and workers)",
      description: 'Without `after`, the newest `limit` lines; with it, the lines after that id. `cursor` in the answer is the `after` of the next page. With `follow=1` the answer is an SSE stream of `log` events (each with its stream id), kept open for new lines.',
      tags: ['operator'],
      params: MachineLogParams,
      querystring: MachineLogQuery,
      headers: z.object({ 'last-event-id': StreamId.optional() }).loose(),
    },
  }, async (request, reply) => {
    const { id } = request.params;
    const query = request.query;
    const pool = await poolOfMachine(broker, id, query.pool);
    const filter = query.process === undefined ? {} : { process: query.process };
    const after = request.headers['last-event-id'] ?? query.after;
    const page = after === undefined
      ? await lastPage(broker, pool, id, filter, query.limit)
      : await broker.readMachineLogs(pool, id, after, { ...filter, count: query.limit });
    if (!query.follow) return { machine: id, pool, entries: page.entries, cursor: page.cursor };

    // a blocking read of its own: following holds a connection for as long as the client stays
    const connection = broker.blockingConnection({ onError: (error) => request.log.debug({ err: error }, 'log follower connection error') });
    let stopWatchingKey = () => {};
    const stream = openEventStream(reply, () => {
      stopWatchingKey();
      connection.close();
    });
    const { raw, close } = stream;
    stopWatchingKey = closeOnRevocation(app, request.principal.keyId, close);
    const send = (entries: MachineLogEntry[]) => {
      for (const entry of entries) raw.write(`id: ${entry.id}\nevent: log\ndata: ${JSON.stringify(entry)}\n\n`);
      if (raw.writableLength > options.maxBufferedBytes) {
        request.log.warn({ machine: id }, 'log follower too slow; closing');
        close();
      }
    };
    send(page.entries);
    let cursor = page.cursor;
    while (!stream.closed()) {
      try {
        const next = await broker.readMachineLogs(pool, id, cursor, { ...filter, count: 500, blockMs: FOLLOW_BLOCK_MS, connection });
        cursor = next.cursor;
        if (!stream.closed()) send(next.entries);
      } catch (error) {
        if (!stream.closed()) request.log.warn({ err: error, machine: id }, 'following machine logs failed');
        close();
      }
    }
  });
}

async function lastPage(broker: Broker, pool: string, id: string, filter: { process?: string }, limit: number) {
  const entries = await broker.tailMachineLogs(pool, id, { ...filter, limit });
  // continue after the newest line of the stream, not just the newest matching one
  return { entries, cursor: await broker.latestMachineLogId(pool, id) };
}
