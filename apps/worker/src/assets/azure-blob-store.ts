import { createHash } from 'node:crypto';
import { parseWith } from '@emp/core';
import { BlobServiceClient, type ContainerClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { z } from 'zod';
import { type AssetInput, type AssetStore, AssetUploadError, type StoredAsset } from './asset-store';

export const AzureBlobStoreOptions = z
  .object({
    /** `DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...;BlobEndpoint=...`; or account + key (+ endpoint) */
    connectionString: z.string().min(1).optional(),
    accountName: z.string().min(1).optional(),
    accountKey: z.string().min(1).optional(),
    /** the blob service URL; `https://<account>.blob.core.windows.net` by default */
    endpoint: z.string().url().optional(),
    container: z.string().regex(/^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/, { message: 'an Azure container name is 3-63 lowercase letters, digits and single dashes' }),
    /** prepended to every key, e.g. `outputs/` */
    prefix: z.string().default(''),
    /** URL clients fetch assets from (a CDN in front of the container); the blob's own URL by default */
    publicBaseUrl: z.string().url().optional(),
    /** creates the container on first use (handy for emulators; production containers are provisioned) */
    createContainer: z.boolean().default(false),
  })
  .strict()
  .refine((o) => o.connectionString !== undefined || (o.accountName !== undefined && o.accountKey !== undefined), {
    message: 'give a connectionString, or accountName and accountKey',
  });
export type AzureBlobStoreOptions = z.input<typeof AzureBlobStoreOptions>;

/**
 * Keeps assets as block blobs in an Azure Storage container. After the upload
 * the blob is read back and its size and SHA-256 compared with what was
 * meant to be stored, so a URL is only handed out for content the container
 * really holds.
 */
export function azureBlobStore(options: AzureBlobStoreOptions): AssetStore {
  const config = parseWith(AzureBlobStoreOptions, options, 'azure blob store options');
  const service =
    config.connectionString !== undefined
      ? BlobServiceClient.fromConnectionString(config.connectionString)
      : new BlobServiceClient(
          config.endpoint ?? `https://${config.accountName}.blob.core.windows.net`,
          new StorageSharedKeyCredential(config.accountName!, config.accountKey!),
        );
  const container: ContainerClient = service.getContainerClient(config.container);
  let ready: Promise<unknown> | undefined;

  return {
    async put(asset: AssetInput, signal?: AbortSignal): Promise<StoredAsset> {
      if (config.createContainer) {
        ready ??= container.createIfNotExists().catch((error: unknown) => {
          ready = undefined;
          throw error;
        });
        await ready;
      }
      const name = `${config.prefix}${asset.key}`;
      const blob = container.getBlockBlobClient(name);
      const expected = createHash('sha256').update(asset.data).digest('hex');
      await blob.uploadData(asset.data, {
        blobHTTPHeaders: { blobContentType: asset.contentType },
        metadata: { sha256: expected },
        abortSignal: signal,
      });
      const back = await blob.downloadToBuffer(0, undefined, { abortSignal: signal });
      const actual = createHash('sha256').update(back).digest('hex');
      if (back.length !== asset.data.byteLength || actual !== expected) {
        throw new AssetUploadError(`asset ${name}: read back ${back.length} bytes (sha256 ${actual}), wrote ${asset.data.byteLength} (sha256 ${expected})`);
      }
      const url =
        config.publicBaseUrl === undefined
          ? blob.url
          : `${config.publicBaseUrl.replace(/\/+$/, '')}/${name.split('/').map(encodeURIComponent).join('/')}`;
      return { key: asset.key, url, size: back.length, sha256: actual, content_type: asset.contentType };
    },
  };
}
