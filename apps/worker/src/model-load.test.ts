import { FakeComfyUI, FakeOllama, temporaryFolder, waitFor } from '@emp/testkit';
import { BrokerHarness, POOL } from '@emp/testkit/worker';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { localDirectoryStore } from './assets/local-directory-store';
import { comfyuiConnector } from './connectors/comfyui';
import { ollamaConnector } from './connectors/ollama';
import { simulationConnector } from './connectors/simulation';

// a worker loading a model with no job (the planner's warm load): docs/planner.md, "Warm loads"
let harness: BrokerHarness;
let ollama: FakeOllama;
beforeAll(async () => {
  harness = await BrokerHarness.start();
});
afterAll(async () => harness.stop());
beforeEach(async () => {
  ollama = await FakeOllama.start({ models: ['llama3.2:latest'] });
});
afterEach(async () => {
  await harness.reset();
  await ollama.close();
});

const reportedLoaded = async (): Promise<string[]> => {
  const models = (await harness.broker.workers(POOL))[0]?.models;
  return models ? (JSON.parse(models) as { loaded: string[] }).loaded : [];
};

describe('Worker.loadModel', () => {
  it('loads an Ollama model with a generate request that has no prompt, then reports it loaded', async () => {
    const worker = await harness.startWorker(ollamaConnector({ baseUrl: ollama.url }));
    expect(await worker.loadModel('llama3.2')).toMatch(/^ollama: llama3\.2 loaded in [\d.]+ s$/);
    expect(ollama.loads).toEqual(['llama3.2:latest']);
    const [request] = ollama.http.requestsTo('/api/generate');
    expect(request!.body).toEqual({ model: 'llama3.2', stream: false });
    // nothing was pulled, nothing generated
    expect(ollama.http.requestsTo('/api/pull')).toHaveLength(0);
    await waitFor('the model reported loaded', async () => (await reportedLoaded()).includes('llama3.2'));
  });

  it('refuses an Ollama model that is not on its disk, without pulling it', async () => {
    const worker = await harness.startWorker(ollamaConnector({ baseUrl: ollama.url }));
    await expect(worker.loadModel('qwen3:0.6b')).rejects.toThrow(/^no connector of worker w1 could load qwen3:0\.6b: ollama: qwen3:0\.6b is not on its disk \(.*not found, try pulling it first/);
    expect(ollama.http.requestsTo('/api/pull')).toHaveLength(0);
    expect(ollama.loads).toEqual([]);
  });

  it('loads with the simulation connector in its configured load time', async () => {
    const worker = await harness.startWorker(simulationConnector({ loadMs: 200 }));
    const startedAt = Date.now();
    expect(await worker.loadModel('sdxl')).toBe('simulation: sdxl loaded in 0.2 s (simulated)');
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(190);
    await waitFor('the model reported loaded', async () => (await reportedLoaded()).includes('sdxl'));
  });

  it('refuses while a job runs: the load is for an idle GPU', async () => {
    const worker = await harness.startWorker(simulationConnector({ durationMs: 5_000, loadMs: 0 }));
    const { id } = await harness.broker.submit({ service: 'simulation' });
    await harness.jobInState(id, ['running']);
    await expect(worker.loadModel('sdxl')).rejects.toThrow('worker w1 is busy (1 job running): a load is for an idle GPU, it would take memory from a running job');
  });

  it('refuses where the connector cannot load a model without a job (ComfyUI), saying why', async () => {
    const comfy = await FakeComfyUI.start();
    const assets = await temporaryFolder();
    try {
      const worker = await harness.startWorker(comfyuiConnector({ baseUrl: comfy.url, assets: localDirectoryStore({ directory: assets.path }) }));
      await expect(worker.loadModel('sdxl.safetensors')).rejects.toThrow(
        `no connector of worker w1 could load sdxl.safetensors: comfyui@${new URL(comfy.url).host}: ComfyUI has no API to load a model without running a workflow: a checkpoint is loaded when a prompt that uses it runs (POST /prompt), and POST /free only unloads`,
      );
      // nothing was sent to ComfyUI
      expect(comfy.http.requestsTo('/prompt')).toHaveLength(0);
    } finally {
      await comfy.close();
      await assets.remove();
    }
  });
});
