/**
 * s3rver (an S3-compatible server from npm, speaking the S3 REST protocol over
 * HTTP) on a free loopback port, keeping its objects in a temporary folder
 * removed on stop: a real S3 service for the S3 asset store's tests.
 *
 * s3rver checks that a request's access key id is known but does not verify
 * SigV4 signatures, so a wrong secret for a known key is accepted; an unknown
 * key id is refused with `InvalidAccessKeyId` (403), as S3 does.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** s3rver's built-in development account (public, emulator only). */
// copy it when handing it to an S3Client: the SDK writes into the credentials object it is given
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

export interface S3rverProcess {
  endpoint: string;
  /** the folder s3rver keeps buckets and objects in */
  directory: string;
  stop(): Promise<void>;
}

interface S3rverServer {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}
type S3rverConstructor = new (options: {
  address: string;
  port: number;
  directory: string;
  silent: boolean;
  configureBuckets: Array<{ name: string }>;
}) => S3rverServer;

export async function startS3rver(options: { buckets?: string[] } = {}): Promise<S3rverProcess> {
  const directory = await mkdtemp(join(tmpdir(), 'emp-s3rver-'));
  const S3rver = createRequire(import.meta.url)('s3rver') as S3rverConstructor;
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    directory,
    silent: true,
    configureBuckets: (options.buckets ?? []).map((name) => ({ name })),
  });
  try {
    const { port } = await server.run();
    return {
      endpoint: `http://127.0.0.1:${port}`,
      directory,
      stop: async () => {
        await server.close();
        await rm(directory, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await rm(directory, { recursive: true, force: true });
    throw error;
  }
}
