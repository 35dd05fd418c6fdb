import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SIGNED_ASSET_URL_MAX_S } from '@emp/core';
import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { assetKey, localDirectoryStore } from '@emp/testkit/worker';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ListeningApiServer, startApiServer } from '../server';

// The workers' local asset store writes a folder; the API serves it, so a result's URL works as given,
// to the job's tenant (and operators), or to anyone holding a signed URL until it expires.

let dir: string;
let stack: ApiStack;
const keys: Record<'owner' | 'other' | 'worker' | 'operator', string> = { owner: '', other: '', worker: '', operator: '' };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emp-assets-'));
  stack = await startApiStack({ worker: false, server: { assetsDir: join(dir, 'served') } });
  const apiKeys = stack.server.app.apiKeys;
  keys.owner = (await apiKeys.create({ role: 'client', tenant: 'acme' })).key;
  keys.other = (await apiKeys.create({ role: 'client', tenant: 'globex' })).key;
  keys.worker = (await apiKeys.create({ role: 'worker' })).key;
  keys.operator = (await apiKeys.create({ role: 'operator' })).key;
});
afterAll(async () => {
  await stack?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** A file stored by the local store for a new job of `tenant`, as a worker would. */
async function storedAsset(tenant = 'acme', bytes = Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3, 4])) {
  const { id } = await stack.broker.submit({ service: 'http', tenant });
  const store = localDirectoryStore({ directory: join(dir, 'served'), baseUrl: `${stack.url}/v1/assets` });
  return store.put({ key: assetKey(id, 1, '9-ComfyUI_00001_.png'), data: bytes, contentType: 'image/png' });
}

function get(url: string, key?: string): Promise<Response> {
  return fetch(url, key ? { headers: { authorization: `Bearer ${key}` } } : {});
}

describe('assets', () => {
  it('a file the local store wrote is fetched by its job\'s tenant from the URL it returned', async () => {
    const bytes = Buffer.from([0x89, 0x50, 0x4e, 0x47, 5, 6, 7, 8]);
    const stored = await storedAsset('acme', bytes);
    const response = await get(stored.url, keys.owner);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('image/png');
    expect(response.headers.get('cache-control')).toContain('private');
    expect(Buffer.from(await response.arrayBuffer()).equals(bytes)).toBe(true);
  });

  it('no key: 401; a worker key: 403; another tenant: 404 as for an asset that does not exist; an operator: 200', async () => {
    const stored = await storedAsset('acme');
    expect((await get(stored.url)).status).toBe(401);
    expect((await get(stored.url, keys.worker)).status).toBe(403);
    const other = await call(stack.url, 'GET', new URL(stored.url).pathname, { key: keys.other });
    const missingKey = `${stored.key.split('/')[0]}/1/missing.png`;
    const missing = await call(stack.url, 'GET', `/v1/assets/${missingKey}`, { key: keys.owner });
    expect(other.status).toBe(404);
    expect(missing.status).toBe(404);
    expect(other.body.error.code).toBe('NOT_FOUND');
    expect(other.body.error.message).toBe(missing.body.error.message.replace(missingKey, stored.key));
    expect((await get(stored.url, keys.operator)).status).toBe(200);
  });

  it('nothing outside the folder, no listings, no dotfiles, not even for an operator', async () => {
    await writeFile(join(dir, 'secret.txt'), 'not served');
    await writeFile(join(dir, 'served', '.hidden'), 'not served');
    for (const path of ['/v1/assets/../secret.txt', '/v1/assets/%2e%2e/secret.txt', '/v1/assets/', '/v1/assets/.hidden', '/v1/assets/missing.png']) {
      const response = await get(`${stack.url}${path}`, keys.operator);
      expect([403, 404], path).toContain(response.status);
      expect(await response.text(), path).not.toContain('not served');
    }
  });
});

describe('signed asset URLs', () => {
  it('the tenant signs a URL that anyone may fetch without a key until it expires (default 1 h)', async () => {
    const stored = await storedAsset('acme');
    const before = Date.now();
    const signed = await call(stack.url, 'POST', '/v1/assets/sign', { key: keys.owner, body: { key: stored.key } });
    expect(signed.status).toBe(200);
    expect(signed.body.expires_at).toBeGreaterThanOrEqual(before + 3_600_000);
    expect(signed.body.expires_at).toBeLessThanOrEqual(Date.now() + 3_600_000);
    expect(signed.body.url).toMatch(new RegExp(`^${stack.url}/v1/assets/${stored.key.replaceAll('.', '\\.')}\\?expires=\\d+&signature=`));
    const response = await get(signed.body.url);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('image/png');
    // a result's URL names the asset as well as its key
    const byUrl = await call(stack.url, 'POST', '/v1/assets/sign', { key: keys.owner, body: { url: stored.url, expires_in_s: 60 } });
    expect(byUrl.status).toBe(200);
    expect((await get(byUrl.body.url)).status).toBe(200);
  });

  it('a tampered or expired URL is 403 saying which', async () => {
    const stored = await storedAsset('acme');
    const other = await storedAsset('acme');
    const signed = (await call(stack.url, 'POST', '/v1/assets/sign', { key: keys.owner, body: { key: stored.key, expires_in_s: 1 } })).body;
    const url = new URL(signed.url);
    const cases: Array<[string, string, RegExp]> = [
      ['another asset', signed.url.replace(stored.key, other.key), /signature does not match/],
      ['a later expiry', signed.url.replace(/expires=\d+/, `expires=${signed.expires_at + 3_600_000}`), /signature does not match/],
      ['another signature', signed.url.replace(/signature=[^&]+/, `signature=${'A'.repeat(43)}`), /signature does not match/],
      ['no signature', `${url.origin}${url.pathname}?expires=${signed.expires_at}`, /carries both 'expires' and 'signature'/],
    ];
    for (const [what, tampered, message] of cases) {
      const answer = await call(tampered, 'GET', '');
      expect({ what, status: answer.status, code: answer.body.error?.code }).toEqual({ what, status: 403, code: 'FORBIDDEN' });
      expect(answer.body.error.message, what).toMatch(message);
    }
    // a key does not make a bad signature good
    expect((await get(cases[0]![1], keys.operator)).status).toBe(403);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, signed.expires_at - Date.now()) + 50));
    const expired = await call(signed.url, 'GET', '');
    expect(expired.status).toBe(403);
    expect(expired.body.error.message).toMatch(/^this signed URL expired at \d{4}-\d\d-\d\dT/);
  });

  it('only who sees the asset may sign it; the expiry has a maximum', async () => {
    const stored = await storedAsset('acme');
    const other = await call(stack.url, 'POST', '/v1/assets/sign', { key: keys.other, body: { key: stored.key } });
    expect(other.status).toBe(404);
    expect((await call(stack.url, 'POST', '/v1/assets/sign', { key: keys.worker, body: { key: stored.key } })).status).toBe(403);
    expect((await call(stack.url, 'POST', '/v1/assets/sign', { body: { key: stored.key } })).status).toBe(401);
    const tooLong = await call(stack.url, 'POST', '/v1/assets/sign', { key: keys.owner, body: { key: stored.key, expires_in_s: SIGNED_ASSET_URL_MAX_S + 1 } });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body.error.issues[0].path).toBe('expires_in_s');
    const both = await call(stack.url, 'POST', '/v1/assets/sign', { key: keys.owner, body: { key: stored.key, url: stored.url } });
    expect(both.status).toBe(400);
    expect((await call(stack.url, 'POST', '/v1/assets/sign', { key: keys.operator, body: { key: stored.key } })).status).toBe(200);
  });

  it('every API instance on the same Redis accepts the URLs another signed; one with another secret does not', async () => {
    const stored = await storedAsset('acme');
    const logger = pino({ level: 'silent' });
    const common = { broker: stack.broker, logger, rateLimit: false as const, port: 0, assetsDir: join(dir, 'served'), queueSampleMs: false as const };
    const servers: ListeningApiServer[] = [];
    try {
      const sibling = await startApiServer(common);
      servers.push(sibling);
      const configured = await startApiServer({ ...common, assetUrlSecret: 'a configured secret of at least 32 bytes' });
      servers.push(configured);
      const signed = (await call(stack.url, 'POST', '/v1/assets/sign', { key: keys.owner, body: { key: stored.key } })).body;
      const query = new URL(signed.url).search;
      const path = new URL(signed.url).pathname;
      expect((await get(`${sibling.url}${path}${query}`)).status).toBe(200);
      const refused = await call(configured.url, 'GET', `${path}${query}`);
      expect(refused.status).toBe(403);
      expect(refused.body.error.message).toMatch(/signed with another secret/);
    } finally {
      for (const server of servers) await server.close();
    }
  });
});
