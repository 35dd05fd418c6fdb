import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ModelError, type ModelProgress } from '@emp/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { INDEX_FILE } from './cache-index';
import type { ModelCache, ModelCacheOptions } from './model-cache';
import { useModelFixture } from './testing/fixture';
import { type ModelServer, modelBytes } from './testing/model-server';

const fixture = useModelFixture();
const openCache = (catalog: ModelCacheOptions['catalog'], options: Partial<ModelCacheOptions> = {}) => fixture.openCache(catalog, options);
let server: ModelServer;
let dir: string;
beforeEach(() => {
  server = fixture.server;
  dir = fixture.dir;
});

async function expectModelError(promise: Promise<unknown>, code: ModelError['code']): Promise<ModelError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ModelError);
  expect((error as ModelError).code).toBe(code);
  return error as ModelError;
}

describe('ModelCache downloads', () => {
  it('tells each lookup (hit or miss), the bytes it fetched and how each download ended, for the machine\'s metrics', async () => {
    const { content, sha256 } = modelBytes(500_000, 21);
    const url = server.serve('/counted.safetensors', content);
    const cache = await openCache([
      { name: 'counted.safetensors', url, sha256 },
      { name: 'broken.safetensors', url: server.serve('/broken.safetensors', content), sha256: '0'.repeat(64) },
    ]);
    const lookups: string[] = [];
    let bytes = 0;
    const ended: string[] = [];
    cache.on('lookup', (result) => lookups.push(result));
    cache.on('downloaded', (n) => (bytes += n));
    cache.on('downloadEnded', ({ seconds, outcome }) => ended.push(`${outcome}:${seconds >= 0 && seconds < 60}`));

    await Promise.all([cache.ensure('counted.safetensors'), cache.ensure('counted.safetensors')]);
    (await cache.acquire(['counted.safetensors'])).release();
    await expectModelError(cache.ensure('broken.safetensors'), 'checksum_mismatch');

    expect(lookups).toEqual(['miss', 'miss', 'hit', 'miss']);
    expect(bytes, 'two waiters share one download; the broken one was fetched whole too').toBe(1_000_000);
    expect(ended).toEqual(['downloaded:true', 'failed:true']);
  });

  it('downloads a model into <dir>/<folder>/<name>, verified, reporting bytes and total', async () => {
    const { content, sha256 } = modelBytes(200_000);
    const url = server.serve('/sdxl.safetensors', content);
    const cache = await openCache([{ name: 'sdxl.safetensors', url, sha256, folder: 'checkpoints' }]);
    const progress: ModelProgress[] = [];

    const lease = await cache.acquire(['sdxl.safetensors'], { onProgress: (p) => progress.push(p) });

    const path = join(dir, 'checkpoints', 'sdxl.safetensors');
    expect((await readFile(path)).equals(content)).toBe(true);
    expect(await readdir(join(dir, 'checkpoints'))).toEqual(['sdxl.safetensors']);
    expect(progress.at(-1)).toEqual({ model: 'sdxl.safetensors', received: 200_000, total: 200_000 });
    expect(progress.every((p, i) => i === 0 || p.received >= progress[i - 1]!.received)).toBe(true);
    expect(cache.contents().models).toEqual([
      expect.objectContaining({ name: 'sdxl.safetensors', path, size_bytes: 200_000, sha256, pins: 1 }),
    ]);
    lease.release();
    expect(cache.contents().models[0]!.pins).toBe(0);

    const index = JSON.parse(await readFile(join(dir, INDEX_FILE), 'utf8')) as { models: Record<string, { size: number }> };
    expect(index.models['sdxl.safetensors']!.size).toBe(200_000);
  });

  it('resumes a dropped download with a Range request and ends byte-identical', async () => {
    const { content, sha256 } = modelBytes(1_000_000, 2);
    const url = server.serve('/flux.safetensors', content);
    server.cutNext('/flux.safetensors', 300_000);
    const cache = await openCache([{ name: 'flux.safetensors', url, sha256, folder: 'unet' }]);

    await cache.ensure('flux.safetensors');

    const requests = server.requestsFor('/flux.safetensors');
    expect(requests).toHaveLength(2);
    expect(requests[0]!.range).toBeUndefined();
    const resumedAt = Number(requests[1]!.range?.match(/^bytes=(\d+)-$/)?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(300_000);
    expect((await readFile(join(dir, 'unet', 'flux.safetensors'))).equals(content)).toBe(true);
  });

  it('resumes from a .part left by an earlier process, hashing what it already has', async () => {
    const { content, sha256 } = modelBytes(500_000, 3);
    const url = server.serve('/vae.safetensors', content);
    await mkdir(join(dir, 'vae'), { recursive: true });
    await writeFile(join(dir, 'vae', 'vae.safetensors.part'), content.subarray(0, 123_456));
    const cache = await openCache([{ name: 'vae.safetensors', url, sha256, folder: 'vae' }]);

    await cache.ensure('vae.safetensors');

    expect(server.requestsFor('/vae.safetensors').map((r) => r.range)).toEqual(['bytes=123456-']);
    expect((await readFile(join(dir, 'vae', 'vae.safetensors'))).equals(content)).toBe(true);
    expect(existsSync(join(dir, 'vae', 'vae.safetensors.part'))).toBe(false);
  });

  it('rejects a file whose sha256 is not the catalog one and leaves nothing in the cache', async () => {
    const { content } = modelBytes(50_000, 4);
    const url = server.serve('/bad.safetensors', content);
    const wrong = modelBytes(10, 5).sha256;
    const cache = await openCache([{ name: 'bad.safetensors', url, sha256: wrong, folder: 'checkpoints' }]);

    const error = await expectModelError(cache.acquire(['bad.safetensors']), 'checksum_mismatch');

    expect(error.message).toContain(wrong);
    expect(error.message).toContain(modelBytes(50_000, 4).sha256);
    expect(await readdir(join(dir, 'checkpoints'))).toEqual([]);
    expect(cache.contents()).toMatchObject({ models: [], downloads: [], used_bytes: 0 });
    expect(cache.contents().models).toEqual([]);
  });

  it('fails at once with the status when the server refuses the file', async () => {
    server.answer('/gone.safetensors', 404);
    const cache = await openCache([{ name: 'gone.safetensors', url: server.url('/gone.safetensors') }]);

    const error = await expectModelError(cache.ensure('gone.safetensors'), 'download_failed');

    expect(error.message).toContain('404');
    expect(server.requestsFor('/gone.safetensors')).toHaveLength(1);
  });

  it('gives up after the set number of attempts in a row without progress', async () => {
    server.answer('/flaky.safetensors', 503);
    const cache = await openCache([{ name: 'flaky.safetensors', url: server.url('/flaky.safetensors') }], { retries: 2 });

    const error = await expectModelError(cache.ensure('flaky.safetensors'), 'download_failed');

    expect(error.message).toContain('503');
    expect(server.requestsFor('/flaky.safetensors')).toHaveLength(3);
  });

  it('shares one download between concurrent requests for a model', async () => {
    const { content, sha256 } = modelBytes(300_000, 6);
    const url = server.serve('/shared.safetensors', content);
    const cache = await openCache([{ name: 'shared.safetensors', url, sha256 }]);

    const leases = await Promise.all([cache.acquire(['shared.safetensors']), cache.acquire(['shared.safetensors']), cache.ensure('shared.safetensors')]);

    expect(server.requestsFor('/shared.safetensors')).toHaveLength(1);
    expect(cache.contents().models[0]!.pins).toBe(2);
    expect(leases).toHaveLength(3);
  });

  it('stops waiting when the job is aborted, unpins, and lets the download finish for the next job', async () => {
    const { content, sha256 } = modelBytes(400_000, 9);
    const url = server.serve('/wanted.safetensors', content);
    const cache = await openCache([{ name: 'wanted.safetensors', url, sha256 }]);
    const controller = new AbortController();
    const download = cache.ensure('wanted.safetensors');

    const waiting = cache.acquire(['wanted.safetensors'], { signal: controller.signal, onProgress: () => controller.abort(new Error('canceled')) });

    await expect(waiting).rejects.toThrow('canceled');
    await download;
    expect(cache.contents().models).toEqual([expect.objectContaining({ name: 'wanted.safetensors', pins: 0 })]);
  });

  it('refuses a model that is not in its catalog', async () => {
    const cache = await openCache([]);
    const error = await expectModelError(cache.acquire(['nope.ckpt']), 'unknown_model');
    expect(error.message).toContain('nope.ckpt');
  });

  it('refuses catalog names that would leave the models folder', async () => {
    await expect(openCache([{ name: '../escape.bin', url: server.url('/x') }])).rejects.toThrow(/0\.name: a model name is a relative file path/);
  });
});

describe('ModelCache budget', () => {
  const sizes = { 'a.bin': 1_000, 'b.bin': 1_000, 'c.bin': 1_000, 'huge.bin': 5_000 };
  const catalog = () =>
    Object.entries(sizes).map(([name, size], i) => {
      const { content, sha256 } = modelBytes(size, 10 + i);
      return { name, url: server.serve(`/${name}`, content), sha256 };
    });
  const onDisk = (cache: ModelCache) => cache.contents().models.map((m) => m.name);

  it('evicts the least recently used model to make room, and keeps within the budget', async () => {
    const cache = await openCache(catalog(), { budgetBytes: 2_500 });
    (await cache.acquire(['a.bin'])).release();
    (await cache.acquire(['b.bin'])).release();
    (await cache.acquire(['a.bin'])).release(); // a is now the more recently used

    await cache.ensure('c.bin');

    expect(onDisk(cache)).toEqual(['a.bin', 'c.bin']);
    expect(existsSync(join(dir, 'checkpoints', 'b.bin'))).toBe(false);
    expect(cache.usedBytes()).toBeLessThanOrEqual(2_500);
  });

  it('never evicts a model pinned by a running job, and says why it cannot make room', async () => {
    const cache = await openCache(catalog(), { budgetBytes: 2_500 });
    const running = await cache.acquire(['a.bin', 'b.bin']);

    const error = await expectModelError(cache.acquire(['c.bin']), 'cache_full');

    expect(error.message).toMatch(/c\.bin needs 500 bytes more .* in use: a\.bin, b\.bin/);
    expect(onDisk(cache)).toEqual(['a.bin', 'b.bin']);
    expect(await readdir(join(dir, 'checkpoints'))).toEqual(['a.bin', 'b.bin']);

    running.release();
    await cache.ensure('c.bin');
    expect(onDisk(cache)).toEqual(['b.bin', 'c.bin']);
  });

  it('refuses a model larger than the whole budget without evicting anything', async () => {
    const cache = await openCache(catalog(), { budgetBytes: 2_500 });
    await cache.ensure('a.bin');

    await expectModelError(cache.ensure('huge.bin'), 'cache_full');

    expect(onDisk(cache)).toEqual(['a.bin']);
    expect(existsSync(join(dir, 'checkpoints', 'huge.bin.part'))).toBe(false);
  });

  it('evicts on request only what no job has pinned', async () => {
    const cache = await openCache(catalog());
    const running = await cache.acquire(['a.bin']);
    await cache.ensure('b.bin');

    expect(await cache.evict('a.bin')).toBe(false);
    expect(await cache.evict('b.bin')).toBe(true);

    expect(onDisk(cache)).toEqual(['a.bin']);
    expect(await readdir(join(dir, 'checkpoints'))).toEqual(['a.bin']);
    running.release();
  });

  it('keeps last-used times across a restart, and evicts down to a smaller budget on open', async () => {
    const first = await openCache(catalog(), { budgetBytes: 10_000 });
    await first.ensure('b.bin');
    await first.ensure('a.bin');
    await first.ensure('c.bin');
    (await first.acquire(['b.bin'])).release();
    await first.close();

    const second = await openCache(catalog(), { budgetBytes: 2_000 });

    expect(onDisk(second)).toEqual(['b.bin', 'c.bin']);
    expect(second.usedBytes()).toBe(2_000);
  });
});

describe('ModelCache index', () => {
  it('rebuilds a corrupt index from the catalog models found on disk', async () => {
    const { content, sha256 } = modelBytes(2_000, 20);
    const url = server.serve('/kept.bin', content);
    const first = await openCache([{ name: 'kept.bin', url, sha256, folder: 'loras' }]);
    await first.ensure('kept.bin');
    await first.close();
    await writeFile(join(dir, INDEX_FILE), '{"version": 1, "models": {"kept.bin": {"size": "big"}}');

    const second = await openCache([{ name: 'kept.bin', url, sha256, folder: 'loras' }]);

    expect(second.contents().models).toEqual([expect.objectContaining({ name: 'kept.bin', folder: 'loras', size_bytes: 2_000, sha256 })]);
    const lease = await second.acquire(['kept.bin']);
    lease.release();
    expect(server.requestsFor('/kept.bin')).toHaveLength(1); // found on disk, not downloaded again
    expect(JSON.parse(await readFile(join(dir, INDEX_FILE), 'utf8'))).toMatchObject({ version: 1, models: { 'kept.bin': { size: 2_000 } } });
  });

  it('downloads again a model whose file was deleted behind its back', async () => {
    const { content, sha256 } = modelBytes(1_500, 21);
    const url = server.serve('/deleted.bin', content);
    const cache = await openCache([{ name: 'deleted.bin', url, sha256 }]);
    await cache.ensure('deleted.bin');
    await rm(join(dir, 'checkpoints', 'deleted.bin'));

    await cache.ensure('deleted.bin');

    expect(server.requestsFor('/deleted.bin')).toHaveLength(2);
    expect((await readFile(join(dir, 'checkpoints', 'deleted.bin'))).equals(content)).toBe(true);
  });
});
