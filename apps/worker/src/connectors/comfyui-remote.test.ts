import { readFile } from 'node:fs/promises';
import { FakeComfyUI, temporaryFolder } from '@emp/testkit';
import { BrokerHarness, claimedJob, jobContext } from '@emp/testkit/worker';
import { generate } from 'selfsigned';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { localDirectoryStore } from '../assets/local-directory-store';
import { JobFailure } from '../connector';
import { type ComfyUIRemoteConnectorOptions, comfyuiRemoteConnector } from './comfyui-remote';

const workflow = {
  '4': { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: 'sd_xl_base_1.0.safetensors' } },
  '3': { class_type: 'KSampler', inputs: { seed: 7, steps: 5, model: ['4', 0] } },
  '8': { class_type: 'VAEDecode', inputs: { samples: ['3', 0], vae: ['4', 2] } },
  '9': { class_type: 'SaveImage', inputs: { filename_prefix: 'remote', images: ['8', 0] } },
};
const AUTH = { authorization: 'Bearer customer-token' };

let cert: { key: string; cert: string };
let fake: FakeComfyUI;
let assetsDir: { path: string; remove: () => Promise<void> };
let harness: BrokerHarness;

beforeAll(async () => {
  // a self-signed certificate for 127.0.0.1, made for this run
  const pems = await generate([{ name: 'commonName', value: '127.0.0.1' }], {
    keyType: 'ec',
    curve: 'P-256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] }],
  });
  cert = { key: pems.private, cert: pems.cert };
  fake = await FakeComfyUI.start({ tls: cert, requiredHeaders: AUTH });
  assetsDir = await temporaryFolder();
  harness = await BrokerHarness.start();
});
afterAll(async () => {
  await harness.stop();
  await fake.close();
  await assetsDir.remove();
});
afterEach(async () => harness.reset());

function connector(options: Partial<ComfyUIRemoteConnectorOptions> = {}) {
  return comfyuiRemoteConnector({
    baseUrl: fake.url,
    headers: AUTH,
    tls: { ca: cert.cert },
    assets: localDirectoryStore({ directory: assetsDir.path }),
    ...options,
  });
}

describe('comfyui-remote connector', () => {
  it('runs a job end to end over HTTPS and WSS with auth headers, trusting the server through its CA', async () => {
    expect(fake.url.startsWith('https://')).toBe(true);
    await harness.startWorker(connector());
    const { id } = await harness.broker.submit({ service: 'comfyui-remote', payload: { workflow } });
    const job = await harness.jobInState(id, ['succeeded', 'failed']);
    expect(job.error).toBeUndefined();
    const result = job.result as { outputs: Array<{ url: string; filename: string }> };
    expect(result.outputs).toHaveLength(1);
    expect((await readFile(new URL(result.outputs[0]!.url))).equals(fake.file({ filename: result.outputs[0]!.filename })!)).toBe(true);
    expect(fake.requestsTo('/prompt').every((r) => r.headers.authorization === AUTH.authorization)).toBe(true);
    const running = (await harness.progressOf(id)).filter((p) => p.stage === 'running').map((p) => p.value!);
    expect(running).toEqual([...running].sort((a, b) => a - b));
  });

  it('fails as infrastructure when the certificate is not trusted: never falls back to skipping verification', async () => {
    const error = await connector({ tls: undefined })
      .run(claimedJob('comfyui-remote', { workflow }), jobContext())
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(JobFailure);
    expect(error).toMatchObject({ kind: 'infrastructure', type: 'TlsError' });
  });

  it('fails as infrastructure when its credentials are refused', async () => {
    const error = await connector({ headers: { authorization: 'Bearer wrong' } })
      .run(claimedJob('comfyui-remote', { workflow }), jobContext())
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ kind: 'infrastructure', type: 'ServiceAuthFailed' });
  });

  it('requires a base URL and names its service comfyui-remote', () => {
    expect(() => comfyuiRemoteConnector({ assets: localDirectoryStore({ directory: assetsDir.path }) } as ComfyUIRemoteConnectorOptions)).toThrow(/baseUrl/);
    expect(connector().service).toBe('comfyui-remote');
  });
});
