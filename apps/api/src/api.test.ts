import { Broker } from '@emp/core';
import { usePrivateRedis } from '@emp/core/testing/vitest';
import { Worker, simulationConnector } from '@emp/worker';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { ApiKeys, type Role } from './auth';
import { buildApiServer } from './server';

// The API against a real Redis, a real worker and, for streams, a real socket.

const { redis } = usePrivateRedis();
const silent = pino({ level: 'silent' });
const open: Array<{ close(): unknown }> = [];

afterEach(async () => {
  for (const thing of open.splice(0).reverse()) await thing.close();
});

async function api(options: { auth?: 'keys' | 'off'; maxPayloadBytes?: number } = {}) {
  const broker = await Broker.connect({ redis, config: { maxPayloadBytes: options.maxPayloadBytes ?? 1024 * 1024 } });
  const app = await buildApiServer({ broker, logger: silent, auth: options.auth ?? 'off' });
  open.push(app);
  return { app, broker };
}

async function listening(app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  if (!address || typeof address === 'string') throw new Error('no port');
  return `127.0.0.1:${address.port}`;
}

async function startWorker(broker: Broker, durationMs = 300) {
  const worker = new Worker({
    broker,
    id: 'w1',
    pool: 'standard',
    capabilities: { services: ['simulation'] },
    connectors: [simulationConnector({ durationMs, steps: 4 })],
    logger: silent,
  });
  await worker.start();
  open.push({ close: () => worker.stop({ graceMs: 0 }) });
  return worker;
}

describe('jobs over HTTP', () => {
  it('submits, waits for the result, and shows the finished job with its timings', async () => {
    const { app, broker } = await api();
    await startWorker(broker);
    const reply = await app.inject({ method: 'POST', url: '/v1/jobs?wait=20', payload: { service: 'simulation', payload: { result: { ok: 1 } } } });
    expect(reply.statusCode).toBe(200);
    const job = reply.json();
    expect(job).toMatchObject({ state: 'succeeded', result: { ok: 1 }, service: 'simulation', worker: 'w1' });
    expect(job.timestamps.finished_at).toBeGreaterThanOrEqual(job.timestamps.started_at);

    const again = await app.inject({ method: 'GET', url: `/v1/jobs/${job.id}` });
    expect(again.json()).toMatchObject({ id: job.id, state: 'succeeded' });
  });

  it('answers 201 with the id at once, and 202 when a wait runs out first', async () => {
    const { app } = await api();
    const now = await app.inject({ method: 'POST', url: '/v1/jobs', payload: { service: 'simulation' } });
    expect(now.statusCode).toBe(201);
    expect(now.json()).toMatchObject({ pool: 'standard', state: 'queued', duplicate: false, routable: false });
    const waited = await app.inject({ method: 'POST', url: '/v1/jobs?wait=0.2', payload: { service: 'simulation' } });
    expect(waited.statusCode).toBe(202);
    expect(waited.json()).toMatchObject({ state: 'queued', position: 1 });
  });

  it('Idempotency-Key: the same key and body give the same job; another body is 422', async () => {
    const { app } = await api();
    const send = (payload: unknown) =>
      app.inject({ method: 'POST', url: '/v1/jobs', headers: { 'idempotency-key': 'order-7' }, payload: { service: 'simulation', payload } });
    const first = await send({ a: 1 });
    const second = await send({ a: 1 });
    expect(first.statusCode).toBe(201);
    expect(second.statusCode).toBe(200);
    expect(second.json()).toMatchObject({ id: first.json().id, duplicate: true });
    const conflict = await send({ a: 2 });
    expect(conflict.statusCode).toBe(422);
    expect(conflict.json().error.code).toBe('IDEMPOTENCY_CONFLICT');
  });

  it('a batch submits each job on its own: one bad job is that job\'s error', async () => {
    const { app } = await api();
    const reply = await app.inject({
      method: 'POST',
      url: '/v1/jobs/batch',
      payload: { jobs: [{ service: 'simulation' }, { service: 'dalle' }, { service: 'simulation', priority: 5000 }, null] },
    });
    expect(reply.statusCode).toBe(200);
    const { results } = reply.json();
    expect(results.map((r: { status: number }) => r.status)).toEqual([201, 400, 400, 400]);
    expect(results[1].error.code).toBe('UNKNOWN_SERVICE');
    expect(results[2].error.issues[0].path).toBe('priority');
  });

  it('cancel is idempotent and retry puts the job back under its id', async () => {
    const { app } = await api();
    const { id } = (await app.inject({ method: 'POST', url: '/v1/jobs', payload: { service: 'simulation' } })).json();
    const cancel = () => app.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel`, payload: { reason: 'changed my mind' } });
    expect((await cancel()).json()).toEqual({ id, state: 'canceled', changed: true });
    expect((await cancel()).json()).toEqual({ id, state: 'canceled', changed: false });
    const retried = await app.inject({ method: 'POST', url: `/v1/jobs/${id}/retry` });
    expect(retried.json()).toEqual({ id, state: 'queued' });
    const notYet = await app.inject({ method: 'POST', url: `/v1/jobs/${id}/retry` });
    expect(notYet.statusCode).toBe(409);
    expect(notYet.json().error.code).toBe('NOT_RETRYABLE');
  });

  it('a service key completes a job on behalf of an external system, fenced by the attempt token', async () => {
    const { app, broker } = await api();
    await broker.registerWorker({ id: 'external', pool: 'standard', capabilities: { services: ['http'] } });
    const { id } = (await app.inject({ method: 'POST', url: '/v1/jobs', payload: { service: 'http' } })).json();
    const claim = await broker.claim('standard', 'external');
    const stale = await app.inject({ method: 'POST', url: `/v1/jobs/${id}/complete`, payload: { token: '999', result: {} } });
    expect(stale.statusCode).toBe(409);
    expect(stale.json().error.code).toBe('LEASE_LOST');
    const done = await app.inject({ method: 'POST', url: `/v1/jobs/${id}/complete`, payload: { token: claim.job!.lease.token, result: { url: 'x' } } });
    expect(done.json()).toEqual({ id, state: 'succeeded' });
    expect((await broker.getJob(id))?.result).toEqual({ url: 'x' });
  });
});

describe('bad input gets a precise 4xx and changes nothing', () => {
  it.each([
    ['malformed JSON', { method: 'POST', url: '/v1/jobs', body: '{"service":', headers: { 'content-type': 'application/json' } }, 400, /JSON/],
    ['an unknown field', { method: 'POST', url: '/v1/jobs', payload: { service: 'simulation', colour: 'red' } }, 400, /colour/],
    ['a wrong type, with its path', { method: 'POST', url: '/v1/jobs', payload: { service: 'simulation', requirements: { hardware: { gpu_memory_gb: 'lots' } } } }, 400, /body\.requirements\.hardware\.gpu_memory_gb/],
    ['an unknown service', { method: 'POST', url: '/v1/jobs', payload: { service: 'dalle' } }, 400, /unknown service 'dalle'/],
    ['a malformed job id', { method: 'GET', url: '/v1/jobs/nope' }, 400, /a job id looks like/],
    ['a job that does not exist', { method: 'GET', url: '/v1/jobs/standard.0000000000000000' }, 404, /does not exist/],
    ['a wait over 90 s', { method: 'POST', url: '/v1/jobs?wait=600', payload: { service: 'simulation' } }, 400, /querystring\.wait/],
    ['an unknown route', { method: 'GET', url: '/v2/everything' }, 404, /no route GET \/v2\/everything/],
  ] as const)('%s', async (_name, request, status, message) => {
    const { app } = await api();
    const before = await redis.dbsize();
    const reply = await app.inject(request as never);
    expect(reply.statusCode).toBe(status);
    expect(reply.json().error.message).toMatch(message);
    expect(await redis.dbsize()).toBe(before);
  });

  it('a body over the limit is 413', async () => {
    const { app } = await api({ maxPayloadBytes: 1024 });
    const reply = await app.inject({ method: 'POST', url: '/v1/jobs', payload: { service: 'simulation', payload: { blob: 'x'.repeat(200_000) } } });
    expect(reply.statusCode).toBe(413);
  });

  it('random bodies never get a 5xx (fast-check)', async () => {
    const { app } = await api();
    const body = fc.oneof(
      fc.jsonValue(),
      fc.record({ service: fc.oneof(fc.constant('simulation'), fc.string()), payload: fc.jsonValue(), requirements: fc.jsonValue(), priority: fc.jsonValue(), tenant: fc.jsonValue() }, { requiredKeys: [] }),
    );
    await fc.assert(
      fc.asyncProperty(body, fc.constantFrom('/v1/jobs', '/v1/jobs/batch', '/v1/jobs/standard.0000000000000000/cancel'), async (payload, url) => {
        const reply = await app.inject({ method: 'POST', url, body: JSON.stringify(payload), headers: { 'content-type': 'application/json' } });
        expect(reply.statusCode, reply.body).toBeLessThan(500);
      }),
      { numRuns: 300 },
    );
  });
});

describe('authorization', () => {
  const ROUTE_ROLES: Array<[string, (ids: { own: string; other: string }) => { method: 'GET' | 'POST'; url: string; payload?: unknown }, Record<Role, number>, Record<Role, number>?]> = [
    ['submit', () => ({ method: 'POST', url: '/v1/jobs', payload: { service: 'simulation' } }), { client: 201, worker: 403, service: 201, operator: 201 }],
    ['get own', ({ own }) => ({ method: 'GET', url: `/v1/jobs/${own}` }), { client: 200, worker: 200, service: 200, operator: 200 }],
    ['get another tenant\'s', ({ other }) => ({ method: 'GET', url: `/v1/jobs/${other}` }), { client: 404, worker: 200, service: 200, operator: 200 }],
    ['cancel another tenant\'s', ({ other }) => ({ method: 'POST', url: `/v1/jobs/${other}/cancel`, payload: {} }), { client: 404, worker: 403, service: 200, operator: 200 }],
    // rows run in order on the same jobs: the service key canceled it above, so its retry succeeds and the operator's finds it queued
    ['retry another tenant\'s', ({ other }) => ({ method: 'POST', url: `/v1/jobs/${other}/retry` }), { client: 404, worker: 403, service: 200, operator: 409 }],
    ['events of another tenant\'s', ({ other }) => ({ method: 'GET', url: `/v1/jobs/${other}/events?after=0-0` }), { client: 404, worker: 200, service: 200, operator: 200 }],
    ['queues', () => ({ method: 'GET', url: '/v1/queues' }), { client: 403, worker: 200, service: 200, operator: 200 }],
    ['workers', () => ({ method: 'GET', url: '/v1/workers' }), { client: 403, worker: 200, service: 200, operator: 200 }],
    ['complete', ({ other }) => ({ method: 'POST', url: `/v1/jobs/${other}/complete`, payload: { token: '1', result: {} } }), { client: 403, worker: 409, service: 409, operator: 409 }],
    ['submit for another tenant', () => ({ method: 'POST', url: '/v1/jobs', payload: { service: 'simulation', tenant: 'globex' } }), { client: 403, worker: 403, service: 201, operator: 201 }],
  ];

  it('every route x every role x own/other tenant', async () => {
    const { app, broker } = await api({ auth: 'keys' });
    const keys = new ApiKeys(redis);
    const keyOf = {} as Record<Role, string>;
    for (const role of ['client', 'worker', 'service', 'operator'] as const) {
      keyOf[role] = (await keys.create({ role, ...(role === 'client' ? { tenant: 'acme' } : {}) })).key;
    }
    const own = (await broker.submit({ service: 'simulation', tenant: 'acme' })).id;
    const other = (await broker.submit({ service: 'simulation', tenant: 'globex' })).id;
    const seen: string[] = [];
    for (const [name, request, expected] of ROUTE_ROLES) {
      for (const role of Object.keys(expected) as Role[]) {
        // SSE holds the connection open: only its status matters here, so it is read from a real socket
        const spec = request({ own, other });
        let status: number;
        if (spec.url.includes('/events')) {
          const base = await ensureListening(app);
          const controller = new AbortController();
          const response = await fetch(`http://${base}${spec.url}`, { headers: { authorization: `Bearer ${keyOf[role]}` }, signal: controller.signal });
          status = response.status;
          controller.abort();
        } else {
          const reply = await app.inject({ ...spec, headers: { authorization: `Bearer ${keyOf[role]}` } } as never);
          status = reply.statusCode;
        }
        seen.push(`${name} as ${role}: ${status}`);
      }
    }
    const wanted = ROUTE_ROLES.flatMap(([name, , expected]) => Object.entries(expected).map(([role, status]) => `${name} as ${role}: ${status}`));
    expect(seen).toEqual(wanted);
  });

  it('no key, an unknown key and a revoked key are 401; health and metrics stay open', async () => {
    const { app } = await api({ auth: 'keys' });
    const keys = new ApiKeys(redis);
    const { key, info } = await keys.create({ role: 'operator', name: 'ci' });
    expect((await app.inject({ method: 'GET', url: '/v1/queues' })).statusCode).toBe(401);
    expect((await app.inject({ method: 'GET', url: '/v1/queues', headers: { authorization: 'Bearer emp_operator_xxxxxxxxxxxxxxxxxxxxxxxx' } })).statusCode).toBe(401);
    expect((await app.inject({ method: 'GET', url: '/v1/queues', headers: { authorization: `Bearer ${key}` } })).statusCode).toBe(200);
    expect(await keys.revoke(info.id)).toBe(true);
    expect((await app.inject({ method: 'GET', url: '/v1/queues', headers: { authorization: `Bearer ${key}` } })).statusCode).toBe(401);
    expect((await app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/ready' })).statusCode).toBe(200);
    const metrics = await app.inject({ method: 'GET', url: '/metrics' });
    expect(metrics.body).toMatch(/emp_http_request_duration_seconds_bucket/);
    expect(metrics.body).toMatch(/emp_queue_depth/);
  });

  it('keys are stored hashed: Redis never holds the key itself', async () => {
    const keys = new ApiKeys(redis);
    const { key } = await keys.create({ role: 'client', tenant: 'acme' });
    const stored = JSON.stringify(await redis.hgetall('emp:apikeys'));
    expect(stored).not.toContain(key);
    await expect(keys.create({ role: 'client' })).rejects.toThrow(/a client key needs the tenant/);
  });
});

const listeningApps = new WeakMap<FastifyInstance, string>();
async function ensureListening(app: FastifyInstance): Promise<string> {
  let base = listeningApps.get(app);
  if (!base) {
    base = await listening(app);
    listeningApps.set(app, base);
  }
  return base;
}

interface StreamedEvent {
  id: string;
  type: string;
}

/** Opens an SSE response: `opened` once the first message (the snapshot or the first event) arrived, `events` when it ends. */
function openSse(url: string, headers: Record<string, string> = {}): { opened: Promise<void>; events: Promise<StreamedEvent[]> } {
  let markOpened: () => void = () => undefined;
  const opened = new Promise<void>((resolve) => (markOpened = resolve));
  const events = (async () => {
    const response = await fetch(url, { headers });
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    let text = '';
    const decoder = new TextDecoder();
    for await (const chunk of response.body!) {
      text += decoder.decode(chunk as Uint8Array, { stream: true });
      if (text.includes('\n\n')) markOpened();
    }
    markOpened();
    return text
      .split('\n\n')
      .filter((block) => block.trim() !== '')
      .map((block) => {
        const field = (name: string) => block.split('\n').find((line) => line.startsWith(`${name}: `))?.slice(name.length + 2) ?? '';
        return { id: field('id'), type: field('event') };
      });
  })();
  return { opened, events };
}

const readSse = (url: string, headers: Record<string, string> = {}) => openSse(url, headers).events;

describe('live events', () => {
  it('SSE: a snapshot then every event to the end; Last-Event-ID resumes with exactly the rest', async () => {
    const { app, broker } = await api();
    const base = await listening(app);
    const { id } = (await app.inject({ method: 'POST', url: '/v1/jobs', payload: { service: 'simulation' } })).json();
    const streamed = openSse(`http://${base}/v1/jobs/${id}/events`);
    await streamed.opened;
    await startWorker(broker);
    const events = await streamed.events;
    expect(events[0]!.type).toBe('snapshot');
    const types = events.slice(1).map((e) => e.type);
    expect(types[0]).toBe('job.starting');
    expect(types).toContain('job.running');
    expect(types.at(-1)).toBe('job.succeeded');

    const all = await readSse(`http://${base}/v1/jobs/${id}/events`, { 'last-event-id': '0-0' });
    expect(all.map((e) => e.type)).toEqual(['job.queued', ...types]);
    const cut = 2;
    const rest = await readSse(`http://${base}/v1/jobs/${id}/events`, { 'last-event-id': all[cut]!.id });
    expect(rest).toEqual(all.slice(cut + 1));
  });

  it('WebSocket: every event of a job once and in order, also across a forced reconnect', async () => {
    const { app, broker } = await api();
    const base = await listening(app);
    const { id } = (await app.inject({ method: 'POST', url: '/v1/jobs', payload: { service: 'simulation' } })).json();

    const received: Array<{ id: string; type: string }> = [];
    const connect = (after?: string) =>
      new Promise<WebSocket>((resolve, reject) => {
        const socket = new WebSocket(`ws://${base}/v1/live`);
        socket.on('open', () => {
          socket.send(JSON.stringify({ type: 'subscribe', job_id: id, ...(after ? { after } : {}) }));
          resolve(socket);
        });
        socket.on('error', reject);
        socket.on('message', (data) => {
          const message = JSON.parse(String(data));
          if (message.type === 'event') received.push({ id: message.event.id, type: message.event.type });
        });
      });
    const first = await connect('0-0');
    const worker = await startWorker(broker, 1_500);
    await waitUntil(() => received.some((e) => e.type === 'job.running'));
    first.terminate(); // dropped mid-job, without a goodbye
    const cursor = received.at(-1)!.id;
    const second = await connect(cursor);
    await waitUntil(() => received.some((e) => e.type === 'job.succeeded'));
    second.close();
    await worker.stop({ graceMs: 0 });

    const stream = (await broker.readEvents('standard', '0', { count: 1000 })).filter((e) => e.fields.job === id);
    expect(received).toEqual(stream.map((e) => ({ id: e.id, type: e.type })));
  });

  it('a client cannot follow another tenant\'s job or the whole feed', async () => {
    const { app, broker } = await api({ auth: 'keys' });
    const base = await listening(app);
    const { key } = await new ApiKeys(redis).create({ role: 'client', tenant: 'acme' });
    const other = (await broker.submit({ service: 'simulation', tenant: 'globex' })).id;
    const socket = new WebSocket(`ws://${base}/v1/live?api_key=${key}`);
    const messages: Array<{ type: string; code?: string }> = [];
    socket.on('message', (data) => messages.push(JSON.parse(String(data))));
    await new Promise((resolve) => socket.on('open', resolve));
    socket.send(JSON.stringify({ type: 'subscribe', job_id: other }));
    socket.send(JSON.stringify({ type: 'subscribe_all' }));
    socket.send('not json');
    await waitUntil(() => messages.length >= 3);
    socket.close();
    expect(messages.map((m) => m.code).sort()).toEqual(['FORBIDDEN', 'NOT_FOUND', 'VALIDATION']);
  });
});

async function waitUntil(condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
