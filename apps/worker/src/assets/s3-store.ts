import { createHash } from 'node:crypto';
import { parseWith } from '@emp/core';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { type AssetInput, type AssetStore, AssetStoreRefusedError, AssetUploadError, type StoredAsset } from './asset-store';

export const S3StoreOptions = z
  .object({
    bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, { message: 'an S3 bucket name is 3-63 lowercase letters, digits, dots and dashes' }),
    /** `auto` for Cloudflare R2; MinIO accepts any */
    region: z.string().min(1).default('us-east-1'),
    /** an S3-compatible server (MinIO, R2, Ceph, ...); AWS's own endpoint for the region by default */
    endpoint: z.string().url().optional(),
    /** `<endpoint>/<bucket>/<key>` instead of `<bucket>.<endpoint host>/<key>`; most self-hosted servers need it */
    forcePathStyle: z.boolean().default(false),
    /** static keys; without them the SDK's default chain is used (environment, shared config, instance or task role) */
    credentials: z
      .object({
        accessKeyId: z.string().min(1),
        secretAccessKey: z.string().min(1),
        sessionToken: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
    /** prepended to every key, e.g. `outputs/` */
    prefix: z.string().default(''),
    /** URL clients fetch assets from (a CDN in front of the bucket); the object's own URL by default */
    publicBaseUrl: z.string().url().optional(),
  })
  .strict();
export type S3StoreOptions = z.input<typeof S3StoreOptions>;

/** Why the S3 store refused an upload: the worker's configuration is at fault, not the asset. */
export type S3StoreRefusal = 'bucket_missing' | 'credentials_refused';

/** The bucket is missing or the credentials were refused; another worker (or a fixed config) may succeed. */
export class S3StoreRefusedError extends AssetStoreRefusedError {
  constructor(
    readonly refusal: S3StoreRefusal,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const CREDENTIAL_ERRORS = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'InvalidToken', 'ExpiredToken', 'TokenRefreshRequired']);

/**
 * Keeps assets as objects in an S3 bucket (AWS, or an S3-compatible server).
 * After the upload the object is read back and its size and SHA-256 compared
 * with what was meant to be stored, so a URL is only handed out for content
 * the bucket really holds; an object that fails that check (or whose check
 * could not finish) is deleted, so nothing unverified is left under the key.
 */
export function s3Store(options: S3StoreOptions): AssetStore {
  const config = parseWith(S3StoreOptions, options, 's3 store options');
  const client = new S3Client({
    region: config.region,
    endpoint: config.endpoint,
    forcePathStyle: config.forcePathStyle,
    credentials: config.credentials,
    // the SDK's default CRC checksums are not understood by every S3-compatible server; the read-back below checks integrity instead
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const where = config.endpoint ?? `region ${config.region}`;

  const refusal = (error: unknown, action: string): unknown => {
    if (!(error instanceof S3ServiceException)) return error;
    const status = error.$metadata.httpStatusCode;
    if (error.name === 'NoSuchBucket') {
      return new S3StoreRefusedError('bucket_missing', `S3 bucket '${config.bucket}' does not exist at ${where} (${action})`, { cause: error });
    }
    if (CREDENTIAL_ERRORS.has(error.name) || status === 401 || status === 403) {
      return new S3StoreRefusedError(
        'credentials_refused',
        `S3 refused the credentials for bucket '${config.bucket}' at ${where} (${action}: ${error.name}${error.message ? `, ${error.message}` : ''})`,
        { cause: error },
      );
    }
    return error;
  };

  return {
    async put(asset: AssetInput, signal?: AbortSignal): Promise<StoredAsset> {
      const name = `${config.prefix}${asset.key}`;
      const expected = sha256(asset.data);
      try {
        await client.send(
          new PutObjectCommand({ Bucket: config.bucket, Key: name, Body: asset.data, ContentType: asset.contentType, Metadata: { sha256: expected } }),
          { abortSignal: signal },
        );
      } catch (error) {
        // a PUT is all or nothing in S3: a refused or aborted one leaves no object behind
        throw refusal(error, 'upload');
      }
      try {
        const reply = await client.send(new GetObjectCommand({ Bucket: config.bucket, Key: name }), { abortSignal: signal });
        const back = reply.Body === undefined ? new Uint8Array() : await reply.Body.transformToByteArray();
        const actual = sha256(back);
        if (back.byteLength !== asset.data.byteLength || actual !== expected) {
          throw new AssetUploadError(`asset ${name}: read back ${back.byteLength} bytes (sha256 ${actual}), wrote ${asset.data.byteLength} (sha256 ${expected})`);
        }
        return { key: asset.key, url: s3ObjectUrl(config, name), size: back.byteLength, sha256: actual, content_type: asset.contentType };
      } catch (error) {
        // not bound to the signal: an aborted attempt must still not leave unverified content under the key
        await client.send(new DeleteObjectCommand({ Bucket: config.bucket, Key: name })).catch(() => undefined);
        throw refusal(error, 'read back');
      }
    },
  };
}

/**
 * The URL a client fetches an object from: `publicBaseUrl` + name when set
 * (a CDN), else the object's own, path-style or virtual-hosted as configured.
 */
export function s3ObjectUrl(
  config: Pick<z.output<typeof S3StoreOptions>, 'bucket' | 'region' | 'endpoint' | 'forcePathStyle' | 'publicBaseUrl'>,
  name: string,
): string {
  const path = name.split('/').map(encodeURIComponent).join('/');
  if (config.publicBaseUrl !== undefined) return `${config.publicBaseUrl.replace(/\/+$/, '')}/${path}`;
  if (config.endpoint === undefined) return `https://${config.bucket}.s3.${config.region}.amazonaws.com/${path}`;
  const endpoint = new URL(config.endpoint);
  if (!config.forcePathStyle) endpoint.hostname = `${config.bucket}.${endpoint.hostname}`;
  const base = endpoint.href.replace(/\/+$/, '');
  return config.forcePathStyle ? `${base}/${config.bucket}/${path}` : `${base}/${path}`;
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
