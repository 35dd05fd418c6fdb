import { CLOSE_KEY_REVOKED } from '@emp/core';
import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type ListeningApiServer, startApiServer } from '../server';
import { ApiKeyStore } from '@emp/core';

// Verified keys are trusted for 10 minutes here: only the revocation itself can end that.
const LONG_CACHE_MS = 600_000;

let stack: ApiStack;
let other: ListeningApiServer;

beforeAll(async () => {
  stack = await startApiStack({ worker: false, server: { apiKeyCacheMs: LONG_CACHE_MS } });
  // a second API instance on the same Redis, as behind a load balancer
  other = await startApiServer({ broker: stack.broker, logger: pino({ level: 'silent' }), rateLimit: false, port: 0, apiKeyCacheMs: LONG_CACHE_MS });
});
afterAll(async () => {
  await other?.close();
  await stack?.stop();
});

describe('revoking an API key', () => {
  it('takes effect at once on every API instance, and ends the live feeds opened with it', async () => {
    const { key, record } = await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' });
    const job = await call(stack.url, 'POST', '/v1/jobs', { key, body: { service: 'http' } });
    expect(job.status).toBe(201);
    for (const url of [stack.url, other.url]) expect((await call(url, 'GET', `/v1/jobs/${job.body.id}`, { key })).status).toBe(200);

    const socket = new WebSocket(`${other.url.replace('http', 'ws')}/v1/live?api_key=${key}`);
    const closed = new Promise<number>((resolve) => socket.once('close', resolve));
    const snapshot = new Promise((resolve) => socket.once('message', resolve));
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    socket.send(JSON.stringify({ type: 'subscribe', job: job.body.id }));
    await snapshot;
    const stream = await fetch(`${stack.url}/v1/jobs/${job.body.id}/stream`, { headers: { authorization: `Bearer ${key}` } });
    expect(stream.status).toBe(200);

    // revoked as `emp keys revoke` does it: from a store of its own, not from either server
    expect(await new ApiKeyStore(stack.connection).revoke(record.id)).toBe(true);
    for (const url of [stack.url, other.url]) {
      const refused = await call(url, 'GET', `/v1/jobs/${job.body.id}`, { key });
      expect({ status: refused.status, code: refused.body.error?.code }).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
    }
    expect(await closed).toBe(CLOSE_KEY_REVOKED);
    expect(await stream.text()).toContain('event: job.queued');

    // other keys are untouched
    const { key: kept } = await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' });
    expect((await call(other.url, 'GET', `/v1/jobs/${job.body.id}`, { key: kept })).status).toBe(200);
  });

  it('drops every cached key when the revocation feed reconnects, since it may have missed some', async () => {
    const { key, record } = await stack.server.app.apiKeys.create({ role: 'operator' });
    expect((await call(other.url, 'GET', '/v1/queues', { key })).status).toBe(200);
    // the revocation is made while no instance hears it
    const subscribers = ((await stack.connection.call('CLIENT', 'LIST')) as string).split('\n').filter((line) => / cmd=subscribe /.test(line));
    expect(subscribers).toHaveLength(2);
    for (const line of subscribers) await stack.connection.call('CLIENT', 'KILL', 'ID', /\bid=(\d+)/.exec(line)![1]!);
    const hash = await stack.connection.hget('emp:apikey-ids', record.id);
    const stored = JSON.parse((await stack.connection.hget('emp:apikeys', hash!))!) as Record<string, unknown>;
    await stack.connection.hset('emp:apikeys', hash!, JSON.stringify({ ...stored, revoked_at: Date.now() }));
    for (let tries = 0; (await call(other.url, 'GET', '/v1/queues', { key })).status !== 401; tries++) {
      expect(tries, 'the key is still trusted after the feed came back').toBeLessThan(250);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  });
});
