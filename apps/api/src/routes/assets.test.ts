import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assetKey, localDirectoryStore } from '@emp/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiStack, startApiStack } from '../testing/api-stack';

// The workers' local asset store writes a folder; the API serves it, so a result's URL works as given.

let dir: string;
let stack: ApiStack;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emp-assets-'));
  stack = await startApiStack({ auth: false, worker: false, server: { assetsDir: join(dir, 'served') } });
});
afterAll(async () => {
  await stack?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('assets', () => {
  it('a file the local store wrote is fetched from the URL it returned', async () => {
    const store = localDirectoryStore({ directory: join(dir, 'served'), baseUrl: `${stack.url}/v1/assets` });
    const bytes = Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3, 4]);
    const stored = await store.put({ key: assetKey('standard.mwxyz0000000000a', 1, '9-ComfyUI_00001_.png'), data: bytes, contentType: 'image/png' });
    const response = await fetch(stored.url);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await response.arrayBuffer()).equals(bytes)).toBe(true);
  });

  it('nothing outside the folder, no listings, no dotfiles', async () => {
    await writeFile(join(dir, 'secret.txt'), 'not served');
    await writeFile(join(dir, 'served', '.hidden'), 'not served');
    for (const path of ['/v1/assets/../secret.txt', '/v1/assets/%2e%2e/secret.txt', '/v1/assets/', '/v1/assets/.hidden', '/v1/assets/missing.png']) {
      const response = await fetch(`${stack.url}${path}`);
      expect([403, 404], path).toContain(response.status);
      expect(await response.text(), path).not.toContain('not served');
    }
  });
});
