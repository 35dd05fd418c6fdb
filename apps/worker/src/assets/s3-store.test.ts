import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, HeadObjectCommand, ListBucketsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { FakeComfyUI, S3RVER_CREDENTIALS, type S3rverProcess, startS3rver } from '@emp/testkit';
import { claimedJob, jobContext } from '@emp/testkit/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobFailure } from '../connector';
import { comfyuiConnector } from '../connectors/comfyui';
import { assetKey } from './asset-store';
import { localDirectoryStore } from './local-directory-store';
import { type S3StoreOptions, S3StoreRefusedError, s3ObjectUrl, s3Store } from './s3-store';

let s3: S3rverProcess;
let admin: S3Client;
beforeAll(async () => {
  s3 = await startS3rver({ buckets: ['outputs', 'cdn-assets', 'layout', 'refusals', 'comfy'] });
  admin = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: { ...S3RVER_CREDENTIALS } });
});
afterAll(async () => {
  admin.destroy();
  await s3.stop();
});

function store(options: Partial<S3StoreOptions> & { bucket: string }) {
  return s3Store({ endpoint: s3.endpoint, forcePathStyle: true, credentials: { ...S3RVER_CREDENTIALS }, ...options });
}

async function readObject(bucket: string, key: string): Promise<Buffer> {
  const reply = await admin.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await reply.Body!.transformToByteArray());
}

async function keysIn(bucket: string): Promise<string[]> {
  const reply = await admin.send(new ListObjectsV2Command({ Bucket: bucket }));
  return (reply.Contents ?? []).map((object) => object.Key!).sort();
}

describe('s3 asset store (against s3rver)', () => {
  it('uploads an object, verifies it by reading it back, and returns its URL', async () => {
    const data = Buffer.from('an image, honestly');
    const stored = await store({ bucket: 'outputs', prefix: 'emp/' }).put({ key: 'standard.abc/1/9-out.png', data, contentType: 'image/png' });
    expect(stored).toEqual({
      key: 'standard.abc/1/9-out.png',
      url: `${s3.endpoint}/outputs/emp/standard.abc/1/9-out.png`,
      size: data.length,
      sha256: createHash('sha256').update(data).digest('hex'),
      content_type: 'image/png',
    });
    expect((await readObject('outputs', 'emp/standard.abc/1/9-out.png')).equals(data)).toBe(true);
    const head = await admin.send(new HeadObjectCommand({ Bucket: 'outputs', Key: 'emp/standard.abc/1/9-out.png' }));
    expect(head.ContentType).toBe('image/png');
    expect(head.Metadata?.sha256).toBe(stored.sha256);
  });

  it('round-trips binary content of a few megabytes', async () => {
    const data = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 8)) & 0xff;
    const stored = await store({ bucket: 'outputs' }).put({ key: 'big/video.mp4', data, contentType: 'video/mp4' });
    expect(stored.size).toBe(data.length);
    expect((await readObject('outputs', 'big/video.mp4')).equals(data)).toBe(true);
  });

  it('builds URLs from a public base URL, escaping each part of the key', async () => {
    const stored = await store({ bucket: 'cdn-assets', publicBaseUrl: 'https://cdn.example.test/a/' }).put({
      key: 'x/y z.webp',
      data: Buffer.from('webp'),
      contentType: 'image/webp',
    });
    expect(stored.url).toBe('https://cdn.example.test/a/x/y%20z.webp');
    expect((await readObject('cdn-assets', 'x/y z.webp')).toString()).toBe('webp');
  });

  it('builds AWS, virtual-hosted and path-style URLs when no public base URL is given', () => {
    const base = { bucket: 'media', region: 'eu-west-1', forcePathStyle: false };
    expect(s3ObjectUrl(base, 'emp/a b/c.png')).toBe('https://media.s3.eu-west-1.amazonaws.com/emp/a%20b/c.png');
    expect(s3ObjectUrl({ ...base, endpoint: 'https://acc.r2.cloudflarestorage.com' }, 'k')).toBe('https://media.acc.r2.cloudflarestorage.com/k');
    expect(s3ObjectUrl({ ...base, endpoint: 'http://minio.local:9000/', forcePathStyle: true }, 'x/y')).toBe('http://minio.local:9000/media/x/y');
  });

  it('lays keys out as assetKey makes them, the same paths the local store uses', async () => {
    const key = assetKey('standard.job-1', 2, '9-../../etc/passwd ComfyUI_00001_.png');
    const data = Buffer.from('png');
    await store({ bucket: 'layout', prefix: 'emp/' }).put({ key, data, contentType: 'image/png' });
    const folder = await mkdtemp(join(tmpdir(), 'emp-s3-layout-'));
    try {
      await localDirectoryStore({ directory: folder }).put({ key, data, contentType: 'image/png' });
      const local = (await readdir(folder, { recursive: true, withFileTypes: true })).filter((entry) => entry.isFile());
      const localKeys = local.map((entry) => join(entry.parentPath, entry.name).slice(folder.length + 1).split('\\').join('/'));
      expect(await keysIn('layout')).toEqual(localKeys.map((k) => `emp/${k}`));
      expect(await keysIn('layout')).toEqual(['emp/standard.job-1/2/9-.._.._etc_passwd_ComfyUI_00001_.png']);
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  it('refuses clearly when the bucket does not exist, and does not create it', async () => {
    const put = store({ bucket: 'never-made' }).put({ key: 'a', data: Buffer.from('a'), contentType: 'text/plain' });
    await expect(put).rejects.toBeInstanceOf(S3StoreRefusedError);
    await expect(put).rejects.toMatchObject({ refusal: 'bucket_missing', message: expect.stringMatching(/S3 bucket 'never-made' does not exist/) });
    const buckets = await admin.send(new ListBucketsCommand({}));
    expect((buckets.Buckets ?? []).map((b) => b.Name)).not.toContain('never-made');
  });

  it('refuses clearly when the credentials are refused, and leaves nothing behind', async () => {
    const put = store({ bucket: 'refusals', credentials: { accessKeyId: 'NOT-A-KEY', secretAccessKey: 'nope' } }).put({
      key: 'job/1/out.png',
      data: Buffer.from('never stored'),
      contentType: 'image/png',
    });
    await expect(put).rejects.toBeInstanceOf(S3StoreRefusedError);
    await expect(put).rejects.toMatchObject({ refusal: 'credentials_refused', message: expect.stringMatching(/S3 refused the credentials for bucket 'refusals'.*InvalidAccessKeyId/) });
    await expect(put).rejects.not.toThrow(/nope/);
    expect(await keysIn('refusals')).toEqual([]);
  });

  it('leaves nothing behind when the upload is aborted', async () => {
    const aborted = new AbortController();
    aborted.abort(new Error('job canceled'));
    await expect(store({ bucket: 'refusals' }).put({ key: 'job/2/out.png', data: Buffer.from('x'), contentType: 'image/png' }, aborted.signal)).rejects.toThrow();
    expect(await keysIn('refusals')).toEqual([]);
  });

  it('validates its options', () => {
    expect(() => s3Store({ bucket: 'Bad_Name' })).toThrow(/bucket/);
    expect(() => s3Store({ bucket: 'ok-name', endpoint: 'not a url' })).toThrow(/endpoint/);
    expect(() => s3Store({ bucket: 'ok-name', credentials: { accessKeyId: 'k' } as never })).toThrow(/secretAccessKey/);
    expect(() => s3Store({ bucket: 'ok-name', container: 'x' } as never)).toThrow();
  });

  it('a store this worker cannot use fails a ComfyUI job as infrastructure, not against the user\'s attempts', async () => {
    const fake = await FakeComfyUI.start();
    try {
      const comfy = comfyuiConnector({ baseUrl: fake.url, assets: store({ bucket: 'no-such-bucket' }) });
      const workflow = {
        '1': { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: 'sd_xl_base_1.0.safetensors' } },
        '3': { class_type: 'SaveImage', inputs: { filename_prefix: 's3', images: ['1', 0] } },
      };
      const failure = await comfy.run(claimedJob('comfyui', { workflow }), jobContext()).then(
        () => new Error('expected the job to fail'),
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(JobFailure);
      expect(failure).toMatchObject({ kind: 'infrastructure', type: 'AssetUploadFailed' });
      expect((failure as Error).message).toMatch(/no-such-bucket/);
    } finally {
      await fake.close();
    }
  });

  it('takes ComfyUI outputs: the result links to the objects', async () => {
    const fake = await FakeComfyUI.start();
    try {
      const comfy = comfyuiConnector({ baseUrl: fake.url, assets: store({ bucket: 'comfy' }) });
      const workflow = {
        '1': { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: 'sd_xl_base_1.0.safetensors' } },
        '2': { class_type: 'KSampler', inputs: { steps: 2, model: ['1', 0] } },
        '3': { class_type: 'SaveImage', inputs: { filename_prefix: 's3', images: ['2', 0] } },
      };
      const job = claimedJob('comfyui', { workflow });
      const result = (await comfy.run(job, jobContext())) as { outputs: Array<{ url: string; filename: string; key: string }> };
      expect(result.outputs).toHaveLength(1);
      const output = result.outputs[0]!;
      expect(output.key).toBe(assetKey(job.id, job.attempt, `3-${output.filename}`));
      const name = decodeURIComponent(new URL(output.url).pathname.split('/comfy/')[1]!);
      expect(name).toBe(output.key);
      expect((await readObject('comfy', name)).equals(fake.file({ filename: output.filename })!)).toBe(true);
    } finally {
      await fake.close();
    }
  });
});
