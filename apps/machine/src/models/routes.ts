import type { ServerResponse } from 'node:http';
import { type EnsureLine, EnsureRequest, ModelError, ReleaseRequest, ValidationError, parseWith } from '@emp/core';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { ModelCache, ModelLease } from './model-cache';

interface HeldLease {
  lease: ModelLease;
  response: ServerResponse;
}

/**
 * The model cache's routes on the agent's local HTTP server, for workers in
 * other processes (their httpModelProvider):
 * - `GET /models`: the cache's contents, downloads in progress and free disk;
 * - `POST /models/ensure {models}`: NDJSON, one `progress` line per download
 *   report, then `ready {lease, models}` or `error {code, message}`; after
 *   `ready` the response stays open and the models stay pinned until
 *   `POST /models/release {lease}` or until the client closes the connection;
 * - `POST /models/release {lease}`: unpins and ends that response.
 *
 * A `traceparent` header on `POST /models/ensure` (a worker's job.models span)
 * is the parent of the cache's `model.download` spans (docs/tracing.md).
 *
 * The server may listen on every interface (the agent's health server does):
 * the two POST routes, which download and pin, answer only callers on this
 * machine (loopback, or a connection to its own address), 403 otherwise.
 */
export function registerModelRoutes(app: FastifyInstance, cache: ModelCache): void {
  const held = new Map<string, HeldLease>();

  app.get('/models', async () => ({ ...cache.contents(), free_disk_bytes: await cache.freeDiskBytes() }));

  app.post('/models/ensure', { onRequest: fromThisMachine }, async (request, reply) => {
    const body = parseBody(EnsureRequest, request.body, reply);
    if (!body) return reply;
    reply.hijack();
    const response = reply.raw;
    response.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    const send = (line: EnsureLine) => {
      if (!response.writableEnded) response.write(`${JSON.stringify(line)}\n`);
    };
    const gone = new AbortController();
    let leaseId: string | undefined;
    response.on('close', () => {
      gone.abort(new Error('the client closed the connection'));
      if (leaseId !== undefined) release(leaseId);
    });
    try {
      const traceparent = request.headers.traceparent;
      const lease = await cache.acquire(body.models, {
        signal: gone.signal,
        // '' (none sent): each model.download span starts a trace of its own
        parent: typeof traceparent === 'string' ? traceparent : '',
        onProgress: (progress) => send({ type: 'progress', ...progress }),
      });
      if (gone.signal.aborted) {
        lease.release();
        return;
      }
      leaseId = lease.id;
      held.set(lease.id, { lease, response });
      send({ type: 'ready', lease: lease.id, models: [...lease.models] });
    } catch (error) {
      if (gone.signal.aborted) return;
      const line: EnsureLine =
        error instanceof ModelError
          ? { type: 'error', code: error.code, message: error.message }
          : { type: 'error', code: 'download_failed', message: error instanceof Error ? error.message : String(error) };
      if (!(error instanceof ModelError)) request.log.error({ err: error }, 'ensuring models failed');
      send(line);
      response.end();
    }
  });

  app.post('/models/release', { onRequest: fromThisMachine }, async (request, reply) => {
    const body = parseBody(ReleaseRequest, request.body, reply);
    if (!body) return reply;
    const lease = held.get(body.lease);
    if (!lease) {
      return reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no lease ${body.lease} is held (released already, or its connection closed)` } });
    }
    release(body.lease);
    return { released: body.lease, models: lease.lease.models };
  });

  function release(id: string): void {
    const lease = held.get(id);
    if (!lease) return;
    held.delete(id);
    lease.lease.release();
    lease.response.end();
  }
}

/** Refuses a caller from another machine: only this machine's workers download and pin models. */
async function fromThisMachine(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const { remoteAddress, localAddress } = request.socket;
  // a connection to one of this machine's own addresses comes from that same address
  if (isLoopbackAddress(remoteAddress) || (remoteAddress !== undefined && remoteAddress === localAddress)) return;
  await reply.code(403).send({ error: { code: 'FORBIDDEN', message: `${request.url} answers only callers on this machine (loopback), not ${request.socket.remoteAddress}` } });
}

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 addresses. */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return v4.startsWith('127.') || address === '::1';
}

/** The parsed body, or undefined after answering 400 with every field's path and reason. */
function parseBody<S extends z.ZodType>(schema: S, body: unknown, reply: FastifyReply): z.output<S> | undefined {
  try {
    return parseWith(schema, body, 'request body');
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    void reply.code(400).send({ error: { code: 'VALIDATION', message: error.message, issues: error.issues } });
    return undefined;
  }
}
