import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { FakeComfyUI, temporaryFolder, waitFor } from '@emp/testkit';
import { BrokerHarness, claimedJob, jobContext } from '@emp/testkit/worker';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { localDirectoryStore } from '../assets/local-directory-store';
import { JobFailure } from '../connector';
import { type ComfyUIConnectorOptions, comfyuiConnector } from './comfyui';
import { promptIdFor } from './comfyui-protocol';

/** ComfyUI's default text-to-image workflow in API format, with a preview next to the saved image. */
function txt2img(overrides: { steps?: number; ckpt?: string; seed?: number } = {}) {
  return {
    '4': { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: overrides.ckpt ?? 'sd_xl_base_1.0.safetensors' } },
    '5': { class_type: 'EmptyLatentImage', inputs: { width: 1024, height: 1024, batch_size: 1 } },
    '6': { class_type: 'CLIPTextEncode', inputs: { text: 'a cat', clip: ['4', 1] } },
    '7': { class_type: 'CLIPTextEncode', inputs: { text: 'blurry', clip: ['4', 1] } },
    '3': {
      class_type: 'KSampler',
      inputs: {
        seed: overrides.seed ?? 1,
        steps: overrides.steps ?? 8,
        cfg: 7,
        sampler_name: 'euler',
        scheduler: 'normal',
        denoise: 1,
        model: ['4', 0],
        positive: ['6', 0],
        negative: ['7', 0],
        latent_image: ['5', 0],
      },
    },
    '8': { class_type: 'VAEDecode', inputs: { samples: ['3', 0], vae: ['4', 2] } },
    '9': { class_type: 'SaveImage', inputs: { filename_prefix: 'emp', images: ['8', 0] } },
    '10': { class_type: 'PreviewImage', inputs: { images: ['8', 0] } },
  };
}

let fake: FakeComfyUI;
let assetsDir: { path: string; remove: () => Promise<void> };

beforeEach(async () => {
  fake = await FakeComfyUI.start();
  assetsDir = await temporaryFolder();
});
afterEach(async () => {
  await fake.close();
  await assetsDir.remove();
});

function connector(options: Partial<ComfyUIConnectorOptions> = {}) {
  return comfyuiConnector({ baseUrl: fake.url, assets: localDirectoryStore({ directory: assetsDir.path }), watchdogMs: 60_000, ...options });
}

async function expectFailure(promise: Promise<unknown>, kind: string, type: string): Promise<JobFailure> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(JobFailure);
  expect(error).toMatchObject({ kind, type });
  return error as JobFailure;
}

describe('comfyui connector through the broker', () => {
  let harness: BrokerHarness;
  beforeAll(async () => {
    harness = await BrokerHarness.start();
  });
  afterAll(async () => harness.stop());
  afterEach(async () => harness.reset());

  it('runs a workflow end to end: progress in order, outputs stored and retrievable', async () => {
    await harness.startWorker(connector());
    const { id } = await harness.broker.submit({ service: 'comfyui', payload: { workflow: txt2img({ steps: 8 }) } });
    const job = await harness.jobInState(id, ['succeeded', 'failed']);
    expect(job.error).toBeUndefined();
    expect(job.state).toBe('succeeded');

    // our prompt id, derived from job id and attempt, with our client id
    const post = fake.requestsTo('/prompt')[0]!.body as { prompt_id: string; client_id: string; prompt: unknown };
    expect(post.prompt_id).toBe(promptIdFor(id, 1));
    expect(post.prompt_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(post.client_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(post.prompt).toEqual(txt2img({ steps: 8 }));

    const result = job.result as { prompt_id: string; outputs: Array<{ node: string; kind: string; filename: string; url: string; size: number; sha256: string; content_type: string }> };
    expect(result.prompt_id).toBe(post.prompt_id);
    // the saved image only: the preview is a temp output
    expect(result.outputs).toHaveLength(1);
    const [output] = result.outputs;
    expect(output).toMatchObject({ node: '9', kind: 'images', content_type: 'image/png' });
    const served = fake.file({ filename: output!.filename })!;
    const stored = await readFile(new URL(output!.url));
    expect(stored.equals(served)).toBe(true);
    expect(output!.size).toBe(served.length);
    expect(output!.sha256).toBe(createHash('sha256').update(served).digest('hex'));
    expect(fake.requestsTo('/view').map((r) => r.query)).toEqual([{ filename: output!.filename, subfolder: '', type: 'output' }]);

    const progress = await harness.progressOf(id);
    const running = progress.filter((p) => p.stage === 'running').map((p) => p.value!);
    expect(running.length).toBeGreaterThan(0);
    expect(running).toEqual([...running].sort((a, b) => a - b));
    expect(progress.every((p) => p.stage !== 'running' || (p.max === 100 && p.value! <= 100))).toBe(true);
    // uploading comes after running, and the last report is sent before the outcome
    expect(progress.at(-1)).toMatchObject({ stage: 'uploading', value: 1, max: 1 });
    const types = (await harness.eventsOf(id)).map((e) => e.type).filter((t) => t !== 'job.progress');
    expect(types).toEqual(['job.queued', 'job.starting', 'job.running', 'job.succeeded']);
  });

  it('cancels a running prompt: ComfyUI sees /interrupt for it and the job ends canceled', async () => {
    fake.stepMs = 50;
    const worker = await harness.startWorker(connector());
    const { id } = await harness.broker.submit({ service: 'comfyui', payload: { workflow: txt2img({ steps: 10_000 }) } });
    await waitFor('the sampler to make progress', async () => (await harness.broker.getJob(id))?.progress?.node === '3');

    await harness.broker.cancel(id, 'changed my mind');

    const interrupt = await waitFor('ComfyUI to be interrupted', () => fake.requestsTo('/interrupt')[0]);
    expect(interrupt.body).toEqual({ prompt_id: promptIdFor(id, 1) });
    expect((await harness.jobInState(id, ['canceled'])).cancel_reason).toBe('changed my mind');
    const entry = await waitFor('the interrupted prompt in history', () => fake.history.get(promptIdFor(id, 1)));
    expect(entry.status).toMatchObject({ status_str: 'error', completed: false });
    await waitFor('the worker to let go of the job', () => worker.running === 0);
  });

  it('fails a bad workflow at once (non_retryable) and leaves a missing model to another worker (infrastructure)', async () => {
    await harness.startWorker(connector(), 'w1');
    await harness.startWorker(connector(), 'w2');
    const bad = await harness.broker.submit({ service: 'comfyui', payload: { workflow: txt2img({ steps: 0 }) }, max_attempts: 5 });
    const failed = await harness.jobInState(bad.id, ['failed']);
    expect(failed.attempts).toBe(1);
    expect(failed.error).toMatchObject({ kind: 'non_retryable', type: 'InvalidWorkflow' });

    const missing = await harness.broker.submit({
      service: 'comfyui',
      payload: { workflow: txt2img({ ckpt: 'flux1-dev.safetensors' }) },
      max_infra_attempts: 2,
    });
    const lacked = await harness.jobInState(missing.id, ['failed']);
    expect(lacked.error).toMatchObject({ kind: 'infrastructure', type: 'ModelMissing' });
    expect(lacked.failures).toBe(0);
    expect(lacked.infra_failures).toBe(2);
    // the second attempt went to the other worker
    const starts = (await harness.eventsOf(missing.id)).flatMap((e) => (e.type === 'job.starting' ? [e.worker] : []));
    expect(new Set(starts)).toEqual(new Set(['w1', 'w2']));
  });

  it('fails a job whose workflow the machine\'s node policy refuses, at once and for good', async () => {
    await harness.startWorker(connector({ nodePolicy: { deny: ['LoadImageFromURL'] } }));
    const workflow = { ...txt2img(), '11': { class_type: 'LoadImageFromURL', inputs: { url: 'http://10.0.0.1/' } } };
    const { id } = await harness.broker.submit({ service: 'comfyui', payload: { workflow }, max_attempts: 5 });
    const failed = await harness.jobInState(id, ['failed']);
    expect(failed.attempts).toBe(1);
    expect(failed.error).toMatchObject({ kind: 'non_retryable', type: 'NodeRefused', message: expect.stringContaining("node 11 (LoadImageFromURL): matches deny rule 'LoadImageFromURL'") });
    expect(fake.requestsTo('/prompt')).toEqual([]);
  });
});

describe('comfyui connector against the fake', () => {
  it('counts cached nodes as done and reads outputs of cached nodes from history', async () => {
    const comfy = connector();
    await comfy.run(claimedJob('comfyui', { workflow: txt2img() }, 'standard.000000000001'), jobContext());
    const ctx = jobContext();
    const result = (await comfy.run(claimedJob('comfyui', { workflow: txt2img() }, 'standard.000000000002'), ctx)) as {
      prompt_id: string;
      outputs: unknown[];
      cached_nodes: number;
    };
    expect(result.cached_nodes).toBe(8);
    expect(result.outputs).toHaveLength(1);
    // the second prompt executed nothing, so it sent no `executed`
    expect(fake.sent.filter((m) => m.type === 'executed' && (m.data as { prompt_id: string }).prompt_id === result.prompt_id)).toEqual([]);
    expect(ctx.reports.filter((p) => p.stage === 'running').at(-1)).toMatchObject({ value: 100 });
  });

  it('maps sampler steps to overall percent across the nodes', async () => {
    const ctx = jobContext();
    await connector().run(claimedJob('comfyui', { workflow: txt2img({ steps: 4 }) }), ctx);
    const sampler = ctx.reports.filter((p) => p.node === '3').map((p) => p.value!);
    // 3 of 8 nodes are done before the sampler; each of its 4 steps adds a quarter of a node
    expect(sampler.at(-1)).toBeCloseTo(((4 + 1) / 8) * 100, 1);
    expect(sampler.some((v) => v > (4 / 8) * 100 && v < (5 / 8) * 100)).toBe(true);
    const values = ctx.reports.filter((p) => p.stage === 'running').map((p) => p.value!);
    expect(values).toEqual([...values].sort((a, b) => a - b));
  });

  it('waits for history when execution_success comes before it is written', async () => {
    fake.historyDelayMs = 300;
    const result = (await connector({ historyPollMs: 20 }).run(claimedJob('comfyui', { workflow: txt2img() }), jobContext())) as { outputs: unknown[] };
    expect(result.outputs).toHaveLength(1);
    expect(fake.requests.filter((r) => r.path.startsWith('/history/')).length).toBeGreaterThan(1);
  });

  it('works with an older build: its own prompt id and no execution_success', async () => {
    fake.acceptsPromptId = false;
    fake.sendsExecutionSuccess = false;
    const job = claimedJob('comfyui', { workflow: txt2img() });
    const result = (await connector().run(job, jobContext())) as { prompt_id: string; outputs: unknown[] };
    expect(result.prompt_id).not.toBe(promptIdFor(job.id, 1));
    expect(fake.history.has(result.prompt_id)).toBe(true);
    expect(result.outputs).toHaveLength(1);
  });

  it('reconnects a WebSocket dropped mid-job and finishes', async () => {
    fake.hooks.beforeStep = ({ step }) => {
      if (step === 3) fake.terminateSockets();
    };
    const ctx = jobContext();
    const result = (await connector({ reconnectDelayMs: 10 }).run(claimedJob('comfyui', { workflow: txt2img({ steps: 30 }) }), ctx)) as { outputs: unknown[] };
    expect(result.outputs).toHaveLength(1);
    // two connections under the same client id: each was greeted with `status`
    const greeted = fake.sent.filter((m) => m.type === 'status' && m.clientId !== undefined);
    expect(greeted).toHaveLength(2);
    expect(greeted[0]!.clientId).toBe(greeted[1]!.clientId);
    expect(ctx.reports.filter((p) => p.stage === 'running').at(-1)).toMatchObject({ value: 100 });
  });

  it('recovers from /history a prompt that finished while the WebSocket was down', async () => {
    fake.hooks.beforeStep = ({ step, steps }) => {
      if (step === steps) fake.terminateSockets();
    };
    const result = (await connector({ reconnectDelayMs: 300 }).run(claimedJob('comfyui', { workflow: txt2img({ steps: 3 }) }), jobContext())) as {
      prompt_id: string;
      outputs: unknown[];
    };
    expect(result.outputs).toHaveLength(1);
    // the end of the prompt was sent while nobody listened
    const end = fake.sent.find((m) => m.type === 'executing' && (m.data as { node: unknown; prompt_id: string }).node === null);
    expect(end).toBeDefined();
  });

  it('fails retryable when the WebSocket cannot be brought back', async () => {
    fake.hooks.beforeStep = async ({ step }) => {
      if (step === 2) {
        fake.terminateSockets();
        await fake.http.close(); // ComfyUI went away for good
      }
    };
    await expectFailure(
      connector({ reconnectDelayMs: 10, reconnectAttempts: 2 }).run(claimedJob('comfyui', { workflow: txt2img({ steps: 50 }) }), jobContext()),
      'retryable',
      'ConnectionLost',
    );
  });

  it('turns a malformed message into a retryable ProtocolError and interrupts its prompt', async () => {
    fake.stepMs = 20;
    fake.hooks.beforeStep = ({ step }) => {
      if (step === 2) fake.sendRaw('{"type": "progress", "data": {"value": "two"');
    };
    const job = claimedJob('comfyui', { workflow: txt2img({ steps: 1_000 }) });
    const failure = await expectFailure(connector().run(job, jobContext()), 'retryable', 'ProtocolError');
    expect(failure.message).toMatch(/not JSON/);
    await waitFor('the abandoned prompt to be interrupted', () => fake.requestsTo('/interrupt').length > 0);
  });

  it('rejects a known message of the wrong shape, and a binary frame without an event type', async () => {
    fake.hooks.beforeStep = ({ step }) => {
      if (step === 2) fake.sendRaw(JSON.stringify({ type: 'executing', data: { node: { id: 3 } } }));
    };
    const failure = await expectFailure(connector().run(claimedJob('comfyui', { workflow: txt2img({ steps: 100 }) }), jobContext()), 'retryable', 'ProtocolError');
    expect(failure.message).toMatch(/'executing' message/);

    fake.hooks.beforeStep = ({ step }) => {
      if (step === 2) fake.sendRaw(Buffer.from([0, 1]));
    };
    await expectFailure(connector().run(claimedJob('comfyui', { workflow: txt2img({ steps: 100, seed: 2 }) }), jobContext()), 'retryable', 'ProtocolError');
  });

  it('ignores message types it does not know (custom nodes send their own)', async () => {
    fake.hooks.beforeStep = ({ step }) => {
      if (step === 1) fake.sendRaw(JSON.stringify({ type: 'crystools.monitor', data: { cpu_utilization: 3 } }));
    };
    const result = (await connector().run(claimedJob('comfyui', { workflow: txt2img() }), jobContext())) as { outputs: unknown[] };
    expect(result.outputs).toHaveLength(1);
  });

  it('classifies execution errors: out of memory is retryable, anything else is not', async () => {
    fake.failNode('KSampler', { exception_type: 'torch.OutOfMemoryError', exception_message: 'Allocation on device 0 would exceed allowed memory.' });
    const oom = await expectFailure(connector().run(claimedJob('comfyui', { workflow: txt2img() }), jobContext()), 'retryable', 'OutOfMemory');
    expect(oom.details).toMatchObject({ node_id: '3', node_type: 'KSampler', exception_type: 'torch.OutOfMemoryError' });

    fake.failNode('VAEDecode', { exception_type: 'RuntimeError', exception_message: 'mat1 and mat2 shapes cannot be multiplied' });
    const bad = await expectFailure(connector().run(claimedJob('comfyui', { workflow: txt2img({ seed: 2 }) }), jobContext()), 'non_retryable', 'ExecutionError');
    expect(bad.message).toMatch(/node 8 \(VAEDecode\) failed: RuntimeError: mat1 and mat2/);
  });

  it('classifies HTTP failures: 5xx and refused connections are retryable, a missing node class is infrastructure', async () => {
    fake.failNext('/prompt', 500, { error: 'internal' });
    await expectFailure(connector().run(claimedJob('comfyui', { workflow: txt2img() }), jobContext()), 'retryable', 'ServiceError');

    const workflow = { ...txt2img(), '11': { class_type: 'ImpactWildcardEncode', inputs: {} } };
    await expectFailure(connector().run(claimedJob('comfyui', { workflow }), jobContext()), 'infrastructure', 'CustomNodeMissing');

    const url = fake.url;
    await fake.close();
    await expectFailure(connector({ baseUrl: url }).run(claimedJob('comfyui', { workflow: txt2img() }), jobContext()), 'retryable', 'ServiceUnreachable');
    fake = await FakeComfyUI.start();
  });

  it.each(['missing_node_type', 'invalid_prompt'] as const)('leaves a node class this ComfyUI lacks to another worker (infrastructure), answered as %s', async (form) => {
    fake.unknownNodeError = form;
    const workflow = { ...txt2img(), '11': { class_type: 'ImpactWildcardEncode', inputs: {} } };
    const failure = await expectFailure(connector().run(claimedJob('comfyui', { workflow }), jobContext()), 'infrastructure', 'CustomNodeMissing');
    expect(failure.message).toMatch(/this worker lacks node class ImpactWildcardEncode \(node 11\)/);
    expect(failure.details).toMatchObject({ error: { type: form, details: "Node ID '#11'" }, missing: { class_type: 'ImpactWildcardEncode', node_id: '11' } });
  });

  it('reads the 400 of an older build (node_errors: []): an unknown class is missing, a node without one is a bad workflow', async () => {
    const rejected = (error: Record<string, unknown>) => fake.failNext('/prompt', 400, { error: { details: "Node ID '#3'", extra_info: {}, ...error }, node_errors: [] });
    rejected({ type: 'invalid_prompt', message: 'Cannot execute because node WAS_Image_Blend does not exist.' });
    const missing = await expectFailure(connector().run(claimedJob('comfyui', { workflow: txt2img() }), jobContext()), 'infrastructure', 'CustomNodeMissing');
    expect(missing.details).toMatchObject({ missing: { class_type: 'WAS_Image_Blend', node_id: '3' } });
    rejected({ type: 'invalid_prompt', message: 'Cannot execute because a node is missing the class_type property.' });
    await expectFailure(connector().run(claimedJob('comfyui', { workflow: txt2img() }), jobContext()), 'non_retryable', 'InvalidWorkflow');
    rejected({ type: 'missing_node_type', message: "Node 'ID #3' has no class_type. The workflow may be corrupted or a custom node is missing.", extra_info: { node_id: '3', class_type: null } });
    await expectFailure(connector().run(claimedJob('comfyui', { workflow: txt2img() }), jobContext()), 'non_retryable', 'InvalidWorkflow');
  });

  it('refuses a node the node policy denies (non_retryable NodeRefused, naming node, class and rule) before touching ComfyUI', async () => {
    const workflow = { ...txt2img(), '11': { class_type: 'LoadImageFromURL', inputs: { url: 'http://169.254.169.254/latest/meta-data/' } } };
    const denied = connector({ nodePolicy: { deny: ['*fromurl*', 'VHS_LoadVideoPath'] } });
    const failure = await expectFailure(denied.run(claimedJob('comfyui', { workflow }), jobContext()), 'non_retryable', 'NodeRefused');
    expect(failure.message).toBe("comfyui: this machine's node policy refuses the workflow: node 11 (LoadImageFromURL): matches deny rule '*fromurl*'");
    expect(failure.details).toEqual({ refused: [{ node_id: '11', class_type: 'LoadImageFromURL', rule: 'deny', pattern: '*fromurl*' }] });
    expect(fake.requests).toEqual([]);
    // what the policy lets through runs as before
    const result = (await denied.run(claimedJob('comfyui', { workflow: txt2img() }), jobContext())) as { outputs: unknown[] };
    expect(result.outputs).toHaveLength(1);
  });

  it('with an allow list, refuses every node not on it, and a deny entry wins over an allow entry', async () => {
    const allowed = ['CheckpointLoaderSimple', 'CLIPTextEncode', 'EmptyLatentImage', 'KSampler', 'VAEDecode', 'SaveImage'];
    const strict = connector({ nodePolicy: { allow: allowed } });
    const failure = await expectFailure(strict.run(claimedJob('comfyui', { workflow: txt2img() }), jobContext()), 'non_retryable', 'NodeRefused');
    expect(failure.message).toMatch(/refuses the workflow: node 10 \(PreviewImage\): not on the allow list$/);
    const both = connector({ nodePolicy: { allow: [...allowed, '*Image'], deny: ['SaveImage'] } });
    const denied = await expectFailure(both.run(claimedJob('comfyui', { workflow: txt2img() }), jobContext()), 'non_retryable', 'NodeRefused');
    expect(denied.message).toMatch(/node 9 \(SaveImage\): matches deny rule 'SaveImage'$/);
    expect(fake.requests).toEqual([]);
    const open = connector({ nodePolicy: { allow: [...allowed, 'previewimage'] } });
    expect(((await open.run(claimedJob('comfyui', { workflow: txt2img() }), jobContext())) as { outputs: unknown[] }).outputs).toHaveLength(1);
  });

  it('times out a slow service as retryable', async () => {
    fake.http.responseDelayMs = 2_000;
    await expectFailure(connector({ requestTimeoutMs: 200 }).run(claimedJob('comfyui', { workflow: txt2img() }), jobContext()), 'retryable', 'ServiceTimeout');
  });

  it('refuses a payload without a workflow as non_retryable, before touching ComfyUI', async () => {
    await expectFailure(connector().run(claimedJob('comfyui', { prompt: 'a cat' }), jobContext()), 'non_retryable', 'InvalidPayload');
    await expectFailure(connector().run(claimedJob('comfyui', { workflow: { '1': { inputs: {} } } }), jobContext()), 'non_retryable', 'InvalidPayload');
    expect(fake.requests).toEqual([]);
  });

  it('refuses bad options with a clear message', () => {
    expect(() => comfyuiConnector({ baseUrl: 'not a url', assets: localDirectoryStore({ directory: assetsDir.path }) })).toThrow(/baseUrl/);
    expect(() => comfyuiConnector({ baseUrl: fake.url } as ComfyUIConnectorOptions)).toThrow(/assets/);
    expect(() => connector({ nodePolicy: { deny: ['Load Image'] } })).toThrow(/nodePolicy\.deny\.0: a class_type pattern has no spaces/);
  });
});
