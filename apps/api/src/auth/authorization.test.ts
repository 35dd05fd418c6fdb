import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiKeyStore } from './key-store';
import { ACCESS, type Access, type Role } from './roles';
import { type ApiStack, startApiStack } from '../testing/api-stack';
import { call } from '../testing/http';

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
}

interface RouteCase {
  name: string;
  access: Access;
  /** 'job': acts on one job of OWNER (another tenant's key gets 404); 'tenant': names OWNER (another tenant's key gets 403) */
  scope: 'job' | 'tenant' | 'none';
  ok: number;
  /** a fresh request per case, with whatever job it needs */
  prepare(): Promise<Request>;
}

let stack: ApiStack;
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

const routes: RouteCase[] = [
  { name: 'submit', access: 'submit', scope: 'tenant', ok: 201, prepare: async () => ({ method: 'POST', path: '/v1/jobs', body: { service: 'http', tenant: OWNER } }) },
  { name: 'submit a batch', access: 'submit', scope: 'tenant', ok: 200, prepare: async () => ({ method: 'POST', path: '/v1/jobs/batch', body: { jobs: [{ service: 'http', tenant: OWNER }] } }) },
  { name: 'get a job', access: 'readJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/jobs/${await ownedJob()}` }) },
  { name: 'list jobs of a tenant', access: 'readJobs', scope: 'tenant', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/jobs?tenant=${OWNER}` }) },
  { name: 'cancel', access: 'changeJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/jobs/${await ownedJob()}/cancel` }) },
  { name: 'retry', access: 'changeJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/jobs/${await ownedJob({ canceled: true })}/retry` }) },
  { name: 'event history', access: 'readJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/jobs/${await ownedJob()}/events` }) },
  { name: 'event stream (SSE)', access: 'readJobs', scope: 'job', ok: 200, prepare: async () => ({ method: 'GET', path: `/v1/jobs/${await ownedJob({ canceled: true })}/stream` }) },
  { name: 'delegated complete', access: 'delegatedCompletion', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/jobs/${await ownedJob({ claimed: true })}/complete`, body: { result: { ok: true } } }) },
  { name: 'delegated fail', access: 'delegatedCompletion', scope: 'job', ok: 200, prepare: async () => ({ method: 'POST', path: `/v1/jobs/${await ownedJob({ claimed: true })}/fail`, body: { error: { kind: 'retryable', message: 'x' } } }) },
  { name: 'whoami', access: 'identify', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/whoami' }) },
  { name: 'queues', access: 'fleet', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/queues' }) },
  { name: 'workers', access: 'fleet', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/workers' }) },
  { name: 'machines', access: 'fleet', scope: 'none', ok: 200, prepare: async () => ({ method: 'GET', path: '/v1/machines' }) },
  { name: 'pause a service', access: 'operate', scope: 'none', ok: 200, prepare: async () => ({ method: 'POST', path: '/v1/services/comfyui/pause', body: { pool: 'standard' } }) },
  { name: 'resume a service', access: 'operate', scope: 'none', ok: 200, prepare: async () => ({ method: 'POST', path: '/v1/services/comfyui/resume', body: { pool: 'standard' } }) },
  { name: 'drain a machine', access: 'operate', scope: 'none', ok: 202, prepare: async () => ({ method: 'POST', path: '/v1/machines/m1/drain' }) },
  { name: 'restart a machine service', access: 'operate', scope: 'none', ok: 202, prepare: async () => ({ method: 'POST', path: '/v1/machines/m1/restart', body: { service: 'comfyui' } }) },
];

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
  stack = await startApiStack({ worker: false });
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
});

describe('authorization: every route x every role x own / other tenant', () => {
  const cases = routes.flatMap((route) => callers.map((caller) => [route.name, caller.name, route, caller] as const));
  it.each(cases)('%s as %s', async (_route, _caller, route, caller) => {
    const request = await route.prepare();
    const key = keys.get(caller.name);
    const answer = await call(stack.url, request.method, request.path, { ...(key ? { key } : {}), ...(request.body !== undefined ? { body: request.body } : {}) });
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
