import { createHash } from 'node:crypto';
import { BlobServiceClient } from '@azure/storage-blob';
import { type AzuriteProcess, FakeComfyUI, startAzurite } from '@emp/testkit';
import { claimedJob, jobContext } from '@emp/testkit/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { comfyuiConnector } from '../connectors/comfyui';
import { azureBlobStore } from './azure-blob-store';

let azurite: AzuriteProcess;
beforeAll(async () => {
  azurite = await startAzurite();
});
afterAll(async () => azurite.stop());

async function readBlob(container: string, name: string): Promise<Buffer> {
  return BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient(container).getBlobClient(name).downloadToBuffer();
}

describe('azure blob asset store (against Azurite)', () => {
  it('uploads a blob, verifies it by reading it back, and returns its URL', async () => {
    const store = azureBlobStore({ connectionString: azurite.connectionString, container: 'outputs', prefix: 'emp/', createContainer: true });
    const data = Buffer.from('an image, honestly');
    const stored = await store.put({ key: 'standard.abc/1/9-out.png', data, contentType: 'image/png' });
    expect(stored).toEqual({
      key: 'standard.abc/1/9-out.png',
      url: `${azurite.endpoint}/outputs/emp/standard.abc/1/9-out.png`,
      size: data.length,
      sha256: createHash('sha256').update(data).digest('hex'),
      content_type: 'image/png',
    });
    expect((await readBlob('outputs', 'emp/standard.abc/1/9-out.png')).equals(data)).toBe(true);
    const properties = await BlobServiceClient.fromConnectionString(azurite.connectionString)
      .getContainerClient('outputs')
      .getBlobClient('emp/standard.abc/1/9-out.png')
      .getProperties();
    expect(properties.contentType).toBe('image/png');
  });

  it('builds URLs from a public base URL, and works with account name and key', async () => {
    const store = azureBlobStore({
      accountName: 'devstoreaccount1',
      accountKey: azurite.connectionString.match(/AccountKey=([^;]+)/)![1]!,
      endpoint: azurite.endpoint,
      container: 'cdn-assets',
      publicBaseUrl: 'https://cdn.example.test/a/',
      createContainer: true,
    });
    const stored = await store.put({ key: 'x/y z.webp', data: Buffer.from('webp'), contentType: 'image/webp' });
    expect(stored.url).toBe('https://cdn.example.test/a/x/y%20z.webp');
    expect((await readBlob('cdn-assets', 'x/y z.webp')).toString()).toBe('webp');
  });

  it('fails clearly when the container does not exist and may not be created', async () => {
    const store = azureBlobStore({ connectionString: azurite.connectionString, container: 'never-made' });
    await expect(store.put({ key: 'a', data: Buffer.from('a'), contentType: 'text/plain' })).rejects.toThrow(/container/i);
    expect(() => azureBlobStore({ container: 'Bad_Name', connectionString: azurite.connectionString })).toThrow(/container/);
    expect(() => azureBlobStore({ container: 'ok-name' })).toThrow(/connectionString/);
  });

  it('takes ComfyUI outputs: the result links to the blobs', async () => {
    const fake = await FakeComfyUI.start();
    try {
      const comfy = comfyuiConnector({
        baseUrl: fake.url,
        assets: azureBlobStore({ connectionString: azurite.connectionString, container: 'comfy', createContainer: true }),
      });
      const workflow = {
        '1': { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: 'sd_xl_base_1.0.safetensors' } },
        '2': { class_type: 'KSampler', inputs: { steps: 2, model: ['1', 0] } },
        '3': { class_type: 'SaveImage', inputs: { filename_prefix: 'az', images: ['2', 0] } },
      };
      const result = (await comfy.run(claimedJob('comfyui', { workflow }), jobContext())) as { outputs: Array<{ url: string; filename: string }> };
      expect(result.outputs).toHaveLength(1);
      const name = decodeURIComponent(new URL(result.outputs[0]!.url).pathname.split('/comfy/')[1]!);
      expect((await readBlob('comfy', name)).equals(fake.file({ filename: result.outputs[0]!.filename })!)).toBe(true);
    } finally {
      await fake.close();
    }
  });
});
