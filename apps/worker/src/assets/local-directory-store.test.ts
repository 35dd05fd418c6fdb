import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ValidationError } from '@emp/core';
import { temporaryFolder } from '@emp/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AssetUploadError, assetKey } from './asset-store';
import { localDirectoryStore } from './local-directory-store';

let dir: { path: string; remove: () => Promise<void> };
beforeEach(async () => {
  dir = await temporaryFolder();
});
afterEach(async () => dir.remove());

describe('local directory asset store', () => {
  it('stores a file under its key and returns a URL, size and hash that match what was written', async () => {
    const store = localDirectoryStore({ directory: dir.path, baseUrl: 'https://cdn.example.test/assets/' });
    const data = Buffer.from('\x89PNG fake image bytes');
    const stored = await store.put({ key: 'standard.abc/1/9-emp_00001_.png', data, contentType: 'image/png' });
    expect(stored).toEqual({
      key: 'standard.abc/1/9-emp_00001_.png',
      url: 'https://cdn.example.test/assets/standard.abc/1/9-emp_00001_.png',
      size: data.length,
      sha256: createHash('sha256').update(data).digest('hex'),
      content_type: 'image/png',
    });
    expect((await readFile(join(dir.path, 'standard.abc/1/9-emp_00001_.png'))).equals(data)).toBe(true);
    // no temporary files left behind
    expect(await readdir(join(dir.path, 'standard.abc/1'))).toEqual(['9-emp_00001_.png']);
  });

  it('defaults to a file:// URL that reads back the stored bytes', async () => {
    const stored = await localDirectoryStore({ directory: dir.path }).put({ key: 'a/b c.txt', data: Buffer.from('hello'), contentType: 'text/plain' });
    expect(stored.url.startsWith('file://')).toBe(true);
    expect(stored.url.endsWith('/a/b%20c.txt')).toBe(true);
    expect((await readFile(new URL(stored.url))).toString()).toBe('hello');
  });

  it('replaces a file written twice under one key, whole', async () => {
    const store = localDirectoryStore({ directory: dir.path });
    await Promise.all(Array.from({ length: 5 }, (_, i) => store.put({ key: 'same.bin', data: Buffer.alloc(100_000, i), contentType: 'application/octet-stream' })));
    const bytes = await readFile(join(dir.path, 'same.bin'));
    expect(bytes.length).toBe(100_000);
    expect(new Set(bytes).size).toBe(1);
  });

  it('refuses a key that leaves its folder, and bad options', async () => {
    const store = localDirectoryStore({ directory: dir.path });
    await expect(store.put({ key: '../escape.txt', data: Buffer.from('x'), contentType: 'text/plain' })).rejects.toBeInstanceOf(AssetUploadError);
    expect(() => localDirectoryStore({ directory: '' })).toThrow(ValidationError);
    expect(() => localDirectoryStore({ directory: dir.path, baseUrl: 'nope' })).toThrow(/baseUrl/);
  });

  it('builds keys that cannot climb out of the folder', () => {
    expect(assetKey('standard.abc', 2, '../../etc/passwd')).toBe('standard.abc/2/__.._etc_passwd');
    expect(assetKey('..', 'a b/c')).toBe('_/a_b_c');
  });
});
