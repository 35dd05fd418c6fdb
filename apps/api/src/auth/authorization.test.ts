import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebhookEndpoints, WebhookOutbox } from '@emp/core';
import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ApiKeyStore } from '@emp/core';
import { requireRouteAccess } from './plugin';
import { ACCESS, type Access, type Role } from './roles';

/** The tenant that owns every job the routes below act on. */
const OWNER = 'acme';

interface Caller {
  name: string;
  role?: Role;
  tenant?: string;
  revoked?: boolean;
}

const callers: Caller[] = [
  { name: 'no key' },
  { name: 'revoked client key', role: 'client', tenant: OWNER, revoked: true },
  { name: 'client of the owner', role: 'client', tenant: OWNER },
  { name: 'client of another tenant', role: 'client', tenant: 'globex' },
  { name: 'worker', role: 'worker' },
  { name: 'service', role: 'service' },
  { name: 'service of another tenant', role: 'service', tenant: 'globex' },
  { name: 'operator', role: 'operator' },
];

interface Request {
  method: string;
  path: string;
  body?: unknown;
  /** open a WebSocket instead (an accepted upgrade counts as 101) */
  websocket?: boolean;
}

interface RouteCase {
  name: string;
  /** the registered route it calls, as `METHOD url` */
  route: string;
  access: Access;
  /** 'job': acts on one job of OWNER (another tenant's key gets 404); 'tenant': names OWNER (another tenant's key gets 403) */
  scope: 'job' | 'tenant' | 'none';
  ok: number;
  /** a fresh request per case, with whatever job it needs */
  prepare(): Promise<Request>;
}

let stack: ApiStack;
let assetsDir: string;
const keys = new Map<string, string>();

async function ownedJob(options: { canceled?: boolean; claimed?: boolean } = {}): Promise<string> {
  // jobs to claim get a service of their own, so the external worker never takes another case's job
  const { id } = await stack.broker.submit({ service: options.claimed ? 'comfyui-remote' : 'http', tenant: OWNER });
  if (options.canceled) await stack.broker.cancel(id);
  if (options.claimed) {
    const claim = await stack.broker.claim('standard', 'external');
    if (claim.job?.id !== id) throw new Error('the external worker did not get the job');
  }
  return id;
}

/** A workflow of OWNER (one step on a service nobody serves here): its id. */
async function ownedWorkflow(options: { canceled?: boolean } = {}): Promise<string> {
  const { id } = await stack.broker.submitWorkflow({ tenant: OWNER, steps: { a: { service: 'http' } } });
  if (options.canceled) await stack.broker.cancelWorkflow(id);
  return id;
}

/** A webhook endpoint of OWNER: its id. */
async function ownedEndpoint(): Promise<string> {
  const endpoints = new WebhookEndpoints(new WebhookOutbox(stack.broker));
  return (await endpoints.create(OWNER, { url: 'https://example.com/hook', events: ['job.queued'], enabled: true }, { allowPrivate: false })).id;
}

/** A failed message of an endpoint of OWNER: the path of its resend. */
async function ownedFailedMessage(): Promise<string> {
  const outbox = new WebhookOutbox(stack.broker);
  const endpoint = await ownedEndpoint();
  const id = `msg_authz_${endpoint}`;
  await outbox.enqueue({ id, tenant: OWNER, url: 'https://example.com/hook', job: 'standard.authzjob000001', type: 'job.queued', body: '{}', endpoint });
  const [claimed] = (await outbox.claimDue(100, 60_000)).filter((m) => m.id === id);
  await outbox.settle(claimed!, 'failed', { at: Date.now(), message: id, type: 'job.queued', url: claimed!.url, attempt: 1, latency_ms: 1, outcome: 'failed' });
  return `/v1/webhooks/${endpoint}/messages/${id}/resend`;
}

/** An asset a worker stored for a job of OWNER: its key. */
async function ownedAsset(): Promise<string> {
  const key = `${await ownedJob()}/1/out.png`;
  await mkdir(join(assetsDir, key, '..'), { recursive: true });
  await writeFile(join(assetsDir, key), 'png');
  return key;
}

const routes: RouteCase[] = [
  { name: 'submit', route: 'POST /v1/jobs', access: 'submit', scope: 'tenant', ok: 201, prepare: async () => ({ method: 'POST', path: '/v1/jobs', body: { service: 'http', tenant: OWNER } }) },
  { name: 'submit a batch', route: 'POST /v1/jobs/batch', access: 'submit', scope: 'tenant', ok: 200, prepare: async () => ({ method: 'POST', path: '/v1/jobs/batch', body: { jobs: [{ service: 'http', tenant: OWNER }] } }) },
  { name: 'get a job', route: 'GET /v1/jobs/:id', access: 'readJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/jobs/${await ownedJob()}` }) },
  { name: 'list jobs of a tenant', route: 'GET /v1/jobs', access: 'readJobs', scope: 'tenant', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/jobs?tenant=${OWNER}` }) },
  { name: 'cancel', route: 'POST /v1/jobs/:id/cancel', access: 'changeJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/jobs/${await ownedJob()}/cancel` }) },
  { name: 'retry', route: 'POST /v1/jobs/:id/retry', access: 'changeJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/jobs/${await ownedJob({ canceled: true })}/retry` }) },
  { name: 'event history', route: 'GET /v1/jobs/:id/events', access: 'readJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/jobs/${await ownedJob()}/events` }) },
  { name: 'event stream (SSE)', route: 'GET /v1/jobs/:id/stream', access: 'readJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/jobs/${await ownedJob({ canceled: true })}/stream` }) },
  { name: 'delegated complete', route: 'POST /v1/jobs/:id/complete', access: 'delegatedCompletion', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/jobs/${await ownedJob({ claimed: true })}/complete`, body: { result: { ok: true } } }) },
  { name: 'delegated fail', route: 'POST /v1/jobs/:id/fail', access: 'delegatedCompletion', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/jobs/${await ownedJob({ claimed: true })}/fail`, body: { error: { kind: 'retryable', message: 'x' } } }) },
  { name: 'submit a workflow', route: 'POST /v1/workflows', access: 'submit', scope: 'tenant', ok: 201, prepare: async () => ({ method: 'POST', path: '/v1/workflows', body: { tenant: OWNER, steps: { a: { service: 'http' } } } }) },
  { name: 'list workflows of a tenant', route: 'GET /v1/workflows', access: 'readJobs', scope: 'tenant', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/workflows?tenant=${OWNER}` }) },
  { name: 'get a workflow', route: 'GET /v1/workflows/:id', access: 'readJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/workflows/${await ownedWorkflow()}` }) },
  { name: 'cancel a workflow', route: 'POST /v1/workflows/:id/cancel', access: 'changeJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/workflows/${await ownedWorkflow()}/cancel` }) },
  { name: 'workflow stream (SSE)', route: 'GET /v1/workflows/:id/stream', access: 'readJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/workflows/${await ownedWorkflow({ canceled: true })}/stream` }) },
  { name: 'whoami', route: 'GET /v1/whoami', access: 'identify', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/whoami' }) },
  { name: 'queues', route: 'GET /v1/queues', access: 'fleet', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/queues' }) },
  { name: 'pools', route: 'GET /v1/pools', access: 'fleet', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/pools' }) },
  { name: 'shards', route: 'GET /v1/shards', access: 'operate', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/shards' }) },
  // a pool of its own, set to the one shard it has: nothing else here changes
  { name: 'set a pool\'s shard count', route: 'PUT /v1/pools/:pool/shards', access: 'operate', scope: 'none', ok: 200, prepare: async () => ({ method: 'PUT', path: '/v1/pools/authz-shards/shards', body: { count: 1 } }) },
  { name: 'workers', route: 'GET /v1/workers', access: 'fleet', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/workers' }) },
  { name: 'machines', route: 'GET /v1/machines', access: 'fleet', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/machines' }) },
  { name: 'pause a service', route: 'POST /v1/services/:service/pause', access: 'operate', scope: 'none', ok: 200, prepare: async () => ({ method: 'POST', path: '/v1/services/comfyui/pause', body: { pool: 'standard' } }) },
  { name: 'resume a service', route: 'POST /v1/services/:service/resume', access: 'operate', scope: 'none', ok: 200, prepare: async () => ({ method: 'POST', path: '/v1/services/comfyui/resume', body: { pool: 'standard' } }) },
  { name: 'drain a machine', route: 'POST /v1/machines/:id/:action', access: 'operate', scope: 'none', ok: 202, prepare: async () => ({ method: 'POST', path: '/v1/machines/m1/drain' }) },
  { name: 'restart a machine service', route: 'POST /v1/machines/:id/:action', access: 'operate', scope: 'none', ok: 202, prepare: async () => ({ method: 'POST', path: '/v1/machines/m1/restart', body: { service: 'comfyui' } }) },
  { name: 'shut down a machine', route: 'POST /v1/machines/:id/:action', access: 'operate', scope: 'none', ok: 202, prepare: async () => ({ method: 'POST', path: '/v1/machines/m1/shutdown' }) },
  { name: 'queue history', route: 'GET /v1/queues/history', access: 'fleet', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/queues/history' }) },
  { name: 'machine events', route: 'GET /v1/machines/:id/events', access: 'fleet', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/machines/m1/events' }) },
  { name: 'planner', route: 'GET /v1/planner', access: 'operate', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/planner' }) },
  { name: 'machine logs', route: 'GET /v1/machines/:id/logs', access: 'operate', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/machines/m1/logs' }) },
  { name: 'live feed (WebSocket)', route: 'GET /v1/live', access: 'readJobs', scope: 'none', ok: 101, prepare: async () => ({ method: 'GET', path: '/v1/live', websocket: true }) },
  { name: 'an asset', route: 'GET /v1/assets/*', access: 'readJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/assets/${await ownedAsset()}` }) },
  { name: 'sign an asset URL', route: 'POST /v1/assets/sign', access: 'readJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: '/v1/assets/sign', body: { key: await ownedAsset() } }) },
  { name: 'webhook secret', route: 'GET /v1/webhooks/secret', access: 'readJobs', scope: 'tenant', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/webhooks/secret?tenant=${OWNER}` }) },
  { name: 'rotate the webhook secret', route: 'POST /v1/webhooks/secret/rotate', access: 'changeJobs', scope: 'tenant', ok: 200, prepare: async () => ({ method: 'POST', path: '/v1/webhooks/secret/rotate', body: { tenant: OWNER, grace_seconds: 60 } }) },
  { name: 'create a webhook endpoint', route: 'POST /v1/webhooks', access: 'changeJobs', scope: 'tenant', ok: 201, prepare: async () => ({ method: 'POST', path: '/v1/webhooks', body: { tenant: OWNER, url: 'https://example.com/hook', events: ['job.succeeded'] } }) },
  { name: 'list webhook endpoints', route: 'GET /v1/webhooks', access: 'readJobs', scope: 'tenant', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/webhooks?tenant=${OWNER}` }) },
  { name: 'get a webhook endpoint', route: 'GET /v1/webhooks/:id', access: 'readJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/webhooks/${await ownedEndpoint()}` }) },
  { name: 'change a webhook endpoint', route: 'PATCH /v1/webhooks/:id', access: 'changeJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'PATCH', path: `/v1/webhooks/${await ownedEndpoint()}`, body: { description: 'x' } }) },
  { name: 'delete a webhook endpoint', route: 'DELETE /v1/webhooks/:id', access: 'changeJobs', scope: 'job', ok: 204, prepare: async () => ({ method: 'DELETE', path: `/v1/webhooks/${await ownedEndpoint()}` }) },
  { name: 'enable a webhook endpoint', route: 'POST /v1/webhooks/:id/enable', access: 'changeJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/webhooks/${await ownedEndpoint()}/enable` }) },
  { name: 'disable a webhook endpoint', route: 'POST /v1/webhooks/:id/disable', access: 'changeJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/webhooks/${await ownedEndpoint()}/disable` }) },
  { name: 'test a webhook endpoint', route: 'POST /v1/webhooks/:id/test', access: 'changeJobs', scope: 'job', ok: 202, prepare: async () => ({ method: 'POST', path: `/v1/webhooks/${await ownedEndpoint()}/test` }) },
  { name: "rotate a webhook endpoint's secret", route: 'POST /v1/webhooks/:id/rotate-secret', access: 'changeJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/webhooks/${await ownedEndpoint()}/rotate-secret`, body: {} }) },
  { name: "a webhook endpoint's deliveries", route: 'GET /v1/webhooks/:id/deliveries', access: 'readJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/webhooks/${await ownedEndpoint()}/deliveries` }) },
  { name: 'resend a message of a webhook endpoint', route: 'POST /v1/webhooks/:id/messages/:message/resend', access: 'changeJobs', scope: 'job', ok: 202, prepare: async () => ({ method: 'POST', path: await ownedFailedMessage() }) },
  { name: "recover a webhook endpoint's failed messages", route: 'POST /v1/webhooks/:id/recover', access: 'changeJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/webhooks/${await ownedEndpoint()}/recover`, body: { since: 0 } }) },
];

/** Routes anyone may call without a key; each says so with `access: 'public'`. */
const PUBLIC_ROUTES = ['GET /health', 'GET /ready', 'GET /metrics', 'OPTIONS *'];
/** Swagger UI and the OpenAPI document: every route of the docs plugin is public. */
const isDocsRoute = (route: string) => /^\w+ \/docs(\/|$)/.test(route);

/** Opens a WebSocket: 101 when the upgrade is accepted, else the refusal's status and error code. */
function upgrade(url: string, key: string | undefined): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url.replace(/^http/, 'ws'), key ? { headers: { authorization: `Bearer ${key}` } } : {});
    socket.once('open', () => {
      socket.close();
      resolve({ status: 101, body: undefined });
    });
    socket.once('unexpected-response', (_request, response) => {
      let text = '';
      response.on('data', (chunk: Buffer) => (text += chunk.toString()));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(text) }));
    });
    socket.once('error', reject);
  });
}

function expectedStatus(route: RouteCase, caller: Caller): number {
  if (!caller.role || caller.revoked) return 401;
  if (!(ACCESS[route.access] as readonly Role[]).includes(caller.role)) return 403;
  if (caller.tenant !== undefined && caller.tenant !== OWNER) {
    if (route.scope === 'job') return 404;
    if (route.scope === 'tenant') return 403;
  }
  return route.ok;
}

beforeAll(async () => {
  assetsDir = await mkdtemp(join(tmpdir(), 'emp-authz-assets-'));
  // with every optional part (assets, CORS), so that every route the server can have is here
  stack = await startApiStack({ worker: false, server: { assetsDir, corsOrigins: ['http://127.0.0.1:3333'] } });
  await stack.broker.registerWorker({ id: 'external', pool: 'standard', capabilities: { services: ['comfyui-remote'] } });
  await stack.broker.registerMachine('standard', 'm1', 'ready');
  const store = new ApiKeyStore(stack.connection);
  for (const caller of callers) {
    if (!caller.role) continue;
    const { key, record } = await store.create({ role: caller.role, ...(caller.tenant ? { tenant: caller.tenant } : {}) });
    if (caller.revoked) await store.revoke(record.id);
    keys.set(caller.name, key);
  }
});
afterAll(async () => {
  await stack?.stop();
  await rm(assetsDir, { recursive: true, force: true });
});

describe('every route names who may call it', () => {
  it('the routes of the server are exactly the matrix below and the public ones: a new route needs its row', () => {
    const registered = stack.server.app.registeredRoutes();
    const byName = new Map(registered.map((route) => [`${route.method} ${route.url}`, route.access]));
    // HEAD mirrors GET with the same rule
    for (const [name, access] of byName) {
      const get = name.replace(/^HEAD /, 'GET ');
      if (name !== get && byName.has(get)) expect({ name, access }).toEqual({ name, access: byName.get(get) });
    }
    const names = [...byName.keys()].filter((name) => !name.startsWith('HEAD '));
    const covered = new Map(routes.map((route) => [route.route, route.access]));
    expect(names.filter((name) => byName.get(name) === 'public' && !isDocsRoute(name)).sort()).toEqual([...PUBLIC_ROUTES].sort());
    expect(names.filter((name) => byName.get(name) !== 'public').sort()).toEqual([...covered.keys()].sort());
    for (const [name, access] of covered) expect({ name, access: byName.get(name) }).toEqual({ name, access });
    expect(names.filter(isDocsRoute).length).toBeGreaterThan(0);
  });

  it('a route without an access rule, or with an unknown one, stops the server from starting', async () => {
    const app = Fastify();
    await app.register(requireRouteAccess);
    app.get('/ruled', { config: { access: 'public' } }, async () => 'ok');
    app.get('/forgotten', async () => 'open?');
    app.post('/misspelled', { config: { access: 'operator' as never } }, async () => 'open?');
    await expect(app.ready()).rejects.toThrow(/GET \/forgotten \(no access rule\).*POST \/misspelled \(unknown rule 'operator'\)/);
  });
});

describe('authorization: every route x every role x own / other tenant', () => {
  const cases = routes.flatMap((route) => callers.map((caller) => [route.name, caller.name, route, caller] as const));
  it.each(cases)('%s as %s', async (_route, _caller, route, caller) => {
    const request = await route.prepare();
    const key = keys.get(caller.name);
    const answer = request.websocket
      ? await upgrade(`${stack.url}${request.path}`, key)
      : await call(stack.url, request.method, request.path, { ...(key ? { key } : {}), ...(request.body !== undefined ? { body: request.body } : {}) });
    const expected = expectedStatus(route, caller);
    expect({ status: answer.status, code: answer.status >= 400 ? answer.body.error?.code : undefined }).toEqual({
      status: expected,
      code: { 401: 'UNAUTHENTICATED', 403: 'FORBIDDEN', 404: 'NOT_FOUND' }[expected as 401 | 403 | 404],
    });
  });
});

describe('tenant isolation', () => {
  it('a client key submits as its own tenant and lists only its own jobs', async () => {
    const key = keys.get('client of another tenant')!;
    const submitted = await call(stack.url, 'POST', '/v1/jobs', { key, body: { service: 'http' } });
    expect(submitted.body.tenant).toBe('globex');
    await ownedJob();
    const listed = await call(stack.url, 'GET', '/v1/jobs?limit=100', { key });
    expect(listed.body.jobs.length).toBeGreaterThan(0);
    expect(listed.body.jobs.every((job: { tenant: string }) => job.tenant === 'globex')).toBe(true);
    const owner = await call(stack.url, 'GET', '/v1/jobs?limit=100', { key: keys.get('client of the owner')! });
    expect(owner.body.jobs.every((job: { tenant: string }) => job.tenant === OWNER)).toBe(true);
  });

  it('the same idempotency key of two tenants names two jobs', async () => {
    const headers = { 'idempotency-key': 'shared-key' };
    const mine = await call(stack.url, 'POST', '/v1/jobs', { key: keys.get('client of the owner')!, headers, body: { service: 'http' } });
    const theirs = await call(stack.url, 'POST', '/v1/jobs', { key: keys.get('client of another tenant')!, headers, body: { service: 'http' } });
    expect(mine.status).toBe(201);
    expect(theirs.status).toBe(201);
    expect(theirs.body.id).not.toBe(mine.body.id);
  });

  it('keys are stored only as hashes, and a malformed or unknown key is refused', async () => {
    const stored = JSON.stringify(await stack.connection.hgetall('emp:apikeys'));
    for (const key of keys.values()) expect(stored).not.toContain(key.slice(17));
    for (const bad of ['nonsense', `emp_000000000000_${'a'.repeat(32)}`]) {
      const answer = await call(stack.url, 'GET', '/v1/queues', { key: bad });
      expect(answer.status).toBe(401);
    }
    expect((await call(stack.url, 'GET', '/v1/queues', { headers: { 'x-api-key': keys.get('operator')! } })).status).toBe(200);
  });
});
