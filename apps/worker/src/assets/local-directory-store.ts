import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseWith } from '@emp/core';
import { z } from 'zod';
import { type AssetInput, type AssetStore, AssetUploadError, type StoredAsset } from './asset-store';

export const LocalDirectoryStoreOptions = z
  .object({
    /** folder the files go under (created when missing) */
    directory: z.string().min(1),
    /** URL that serves that folder (e.g. a static file server or a CDN); a file:// URL of the folder by default */
    baseUrl: z.string().url().optional(),
  })
  .strict();
export type LocalDirectoryStoreOptions = z.input<typeof LocalDirectoryStoreOptions>;

/**
 * Keeps assets as files under a folder. Each write goes to a temporary name,
 * is read back and its size and SHA-256 compared with what was meant to be
 * written, and only then renamed into place: a reader never sees half a
 * file, and a URL is handed out only for verified content.
 */
export function localDirectoryStore(options: LocalDirectoryStoreOptions): AssetStore {
  const config = parseWith(LocalDirectoryStoreOptions, options, 'local directory store options');
  const root = resolve(config.directory);
  const baseUrl = (config.baseUrl ?? pathToFileURL(root).href).replace(/\/+$/, '');

  return {
    async put(asset: AssetInput, signal?: AbortSignal): Promise<StoredAsset> {
      const path = resolve(root, asset.key);
      if (!path.startsWith(root + sep)) throw new AssetUploadError(`asset key '${asset.key}' leaves the store's folder`);
      const expected = sha256(asset.data);
      await mkdir(dirname(path), { recursive: true });
      const partial = `${path}.${randomUUID()}.partial`;
      try {
        await writeFile(partial, asset.data, { signal });
        // verified before it takes the key's name, so a concurrent writer of the same key cannot confuse the check
        const written = await readBack(partial);
        if (written.size !== asset.data.byteLength || written.sha256 !== expected) {
          throw new AssetUploadError(
            `asset ${asset.key}: read back ${written.size} bytes (sha256 ${written.sha256}), wrote ${asset.data.byteLength} (sha256 ${expected})`,
          );
        }
        await rename(partial, path);
      } catch (error) {
        await unlink(partial).catch(() => undefined);
        throw error;
      }
      const url = `${baseUrl}/${asset.key.split('/').map(encodeURIComponent).join('/')}`;
      return { key: asset.key, url, size: asset.data.byteLength, sha256: expected, content_type: asset.contentType };
    },
  };
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

async function readBack(path: string): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return { size: (await stat(path)).size, sha256: hash.digest('hex') };
}
