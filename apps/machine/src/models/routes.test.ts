import { request } from 'node:http';
import { ModelError, type ModelProgress, httpModelProvider } from '@emp/core';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ModelCache } from './model-cache';
import { registerModelRoutes } from './routes';
import { useModelFixture } from './testing/fixture';
import { modelBytes } from './testing/model-server';

const MODEL = 'model.safetensors';
const fixture = useModelFixture();
let cache: ModelCache;
let agent: FastifyInstance;
let baseUrl: string;

beforeEach(async () => {
  const { content, sha256 } = modelBytes(250_000, 30);
  cache = await fixture.openCache([{ name: MODEL, url: fixture.server.serve(`/${MODEL}`, content), sha256, folder: 'checkpoints' }], {
    budgetBytes: 1_000_000,
  });
  agent = Fastify({ logger: false });
  registerModelRoutes(agent, cache);
  baseUrl = await agent.listen({ port: 0, host: '127.0.0.1' });
});
afterEach(async () => {
  await agent.close();
});

const pins = () => cache.contents().models.find((m) => m.name === MODEL)?.pins;

/** POST /models/ensure read line by line; `close()` drops the connection like a dying worker. */
function openEnsure(models: string[]): Promise<{ lines: () => unknown[]; next: () => Promise<unknown>; close: () => void }> {
  return new Promise((resolve, reject) => {
    const lines: unknown[] = [];
    const waiters: Array<() => void> = [];
    const req = request(`${baseUrl}/models/ensure`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let pending = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        pending += chunk;
        let end: number;
        while ((end = pending.indexOf('\n')) >= 0) {
          lines.push(JSON.parse(pending.slice(0, end)));
          pending = pending.slice(end + 1);
          waiters.splice(0).forEach((wake) => wake());
        }
      });
      let read = 0;
      resolve({
        lines: () => lines,
        next: async () => {
          while (lines.length <= read) await new Promise<void>((wake) => waiters.push(wake));
          return lines[read++];
        },
        close: () => req.destroy(),
      });
    });
    req.on('error', reject);
    req.end(JSON.stringify({ models }));
  });
}

describe('model routes', () => {
  it('streams progress, then a lease that pins the models until it is released', async () => {
    const progress: ModelProgress[] = [];
    const release = await httpModelProvider({ baseUrl }).ensure([MODEL], (p) => progress.push(p));

    expect(progress.at(-1)).toEqual({ model: MODEL, received: 250_000, total: 250_000 });
    expect(pins()).toBe(1);
    const listing = (await agent.inject({ method: 'GET', url: '/models' })).json();
    expect(listing).toMatchObject({
      budget_bytes: 1_000_000,
      used_bytes: 250_000,
      models: [{ name: MODEL, folder: 'checkpoints', size_bytes: 250_000, pins: 1 }],
      downloads: [],
      catalog: [MODEL],
    });
    expect(listing.free_disk_bytes).toBeGreaterThan(0);

    await release();
    expect(pins()).toBe(0);
    await release(); // a second call does nothing
    expect(pins()).toBe(0);
  });

  it('releases the pins when the client connection closes', async () => {
    const stream = await openEnsure([MODEL]);
    let line = (await stream.next()) as { type: string; lease?: string };
    while (line.type === 'progress') line = (await stream.next()) as typeof line;
    expect(line).toMatchObject({ type: 'ready', models: [MODEL] });
    expect(pins()).toBe(1);

    stream.close();

    await expect.poll(pins).toBe(0);
    const again = await agent.inject({ method: 'POST', url: '/models/release', payload: { lease: line.lease } });
    expect(again.statusCode).toBe(404);
    expect(again.json()).toMatchObject({ error: { code: 'NOT_FOUND' } });
  });

  it('answers an error line for a model outside the catalog', async () => {
    const error = await httpModelProvider({ baseUrl })
      .ensure(['missing.ckpt'], () => undefined)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(ModelError);
    expect(error).toMatchObject({ code: 'unknown_model', message: expect.stringContaining('missing.ckpt') });
  });

  it('downloads and pins only for callers on this machine', async () => {
    const remote = await agent.inject({ method: 'POST', url: '/models/ensure', payload: { models: [MODEL] }, remoteAddress: '10.1.2.3' });
    expect(remote.statusCode).toBe(403);
    expect(remote.json()).toMatchObject({ error: { code: 'FORBIDDEN', message: expect.stringContaining('10.1.2.3') } });
    expect((await agent.inject({ method: 'POST', url: '/models/release', payload: { lease: 'x' }, remoteAddress: '::ffff:10.1.2.3' })).statusCode).toBe(403);
    expect((await agent.inject({ method: 'GET', url: '/models', remoteAddress: '10.1.2.3' })).statusCode).toBe(200);
    expect((await agent.inject({ method: 'POST', url: '/models/release', payload: { lease: 'x' }, remoteAddress: '::ffff:127.0.0.1' })).statusCode).toBe(404);
    expect(fixture.server.requestsFor(`/${MODEL}`)).toHaveLength(0);
  });

  it('refuses a malformed request with the field and the reason', async () => {
    const response = await agent.inject({ method: 'POST', url: '/models/ensure', payload: { models: [] } });
    expect(response.statusCode).toBe(400);
    expect(response.json()).toMatchObject({ error: { code: 'VALIDATION', issues: [{ path: 'models' }] } });

    const release = await agent.inject({ method: 'POST', url: '/models/release', payload: { lease: 5 } });
    expect(release.statusCode).toBe(400);
    expect(release.json()).toMatchObject({ error: { code: 'VALIDATION', issues: [{ path: 'lease' }] } });
  });
});
