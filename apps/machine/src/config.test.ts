import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expandEnv, loadMachineConfig } from './config';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emp-machine-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function configFile(content: unknown): Promise<string> {
  const file = join(dir, `machine-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

const minimal = { machine_id: 'm-1', pool: 'standard', connectors: ['simulation'] };

describe('machine config', () => {
  it('fills defaults around the few fields a machine must name', async () => {
    const config = await loadMachineConfig(await configFile(minimal), {});
    expect(config).toMatchObject({
      machine_id: 'm-1',
      pool: 'standard',
      services: [],
      models: [],
      storage: { models_dir: './models', budget_gb: 100 },
      health_port: 9090,
      cpu_workers: 1,
      status_interval_ms: 15_000,
      supervision: { restart_backoff_ms: 1_000, max_restart_backoff_ms: 30_000, crash_loop_restarts: 5, stop_timeout_ms: 10_000 },
      worker: { concurrency: 1, grace_ms: 0 },
      logs: { dir: './logs', files_kept: 3 },
    });
    expect(config.connectors).toEqual([{ type: 'simulation', options: expect.objectContaining({ service: 'simulation', durationMs: 1_000 }) }]);
  });

  it('expands ${VAR} and ${VAR:-default} in every string, and $${ stays literal', async () => {
    const file = await configFile({
      ...minimal,
      machine_id: '${SALAD_MACHINE_ID}',
      region: '${REGION:-eu-west}',
      services: [{ name: 'comfyui', command: 'python', args: ['main.py', '--port', '${PORT:-8188}'], port_base: 8188, env: { HF_TOKEN: '${HF_TOKEN}', LITERAL: 'cost $${HOME}' } }],
    });
    const config = await loadMachineConfig(file, { SALAD_MACHINE_ID: 'salad-42', HF_TOKEN: 'hf_x' });
    expect(config.machine_id).toBe('salad-42');
    expect(config.region).toBe('eu-west');
    expect(config.services[0]).toMatchObject({ args: ['main.py', '--port', '8188'], env: { HF_TOKEN: 'hf_x', LITERAL: 'cost ${HOME}' } });
  });

  it('a variable that is not set names the field that used it', async () => {
    const file = await configFile({ ...minimal, services: [{ name: 'comfyui', command: 'python', port_base: 8188, env: { HF_TOKEN: '${HF_TOKEN}' } }] });
    await expect(loadMachineConfig(file, {})).rejects.toThrow(
      `invalid machine config ${file}: services.0.env.HF_TOKEN: environment variable HF_TOKEN is not set`,
    );
  });

  it('custom nodes may be written as `git clone <url>`', async () => {
    const file = await configFile({
      ...minimal,
      custom_nodes_dir: '/opt/ComfyUI/custom_nodes',
      custom_nodes: [
        { url: 'git clone https://example.com/org/ComfyUI-Impact-Pack.git', recursive: true },
        { url: 'git clone --depth 1 https://example.com/org/was-node-suite.git was' },
      ],
    });
    const config = await loadMachineConfig(file, {});
    expect(config.custom_nodes[0]).toMatchObject({ url: 'https://example.com/org/ComfyUI-Impact-Pack.git', recursive: true, requirements: false });
    expect(config.custom_nodes[1]?.url).toBe('https://example.com/org/was-node-suite.git');
  });

  it.each([
    ['a pool name in capitals', { ...minimal, pool: 'Fast' }, /pool: a pool name is lowercase/],
    ['no connectors', { machine_id: 'm-1', pool: 'standard' }, /connectors: /],
    ['an unknown field', { ...minimal, gpus: 2 }, /Unrecognized key: "gpus"/],
    ['a bad model checksum', { ...minimal, models: [{ name: 'sdxl', url: 'https://example.com/sdxl.safetensors', sha256: 'abc' }] }, /models\.0\.sha256: a sha256 is 64 lowercase hex digits/],
    ['a negative budget', { ...minimal, storage: { budget_gb: -1 } }, /storage\.budget_gb/],
    ['hardware overrides of the wrong type', { ...minimal, hardware: { cpu_cores: 'many' } }, /hardware\.cpu_cores/],
    ['a connector nobody knows', { ...minimal, connectors: ['teleport'] }, /connectors\.0\.type: /],
    ['a connector using a service that is not there', { ...minimal, connectors: [{ type: 'ollama', uses: 'ollama-gpu' }] }, /connectors\.0\.uses: no service named ollama-gpu \(services: none\)/],
    ['a bad connector option', { ...minimal, connectors: [{ type: 'openai', options: { requestTimeoutMs: -1 } }] }, /connectors\.0\.options\.requestTimeoutMs/],
    ['ComfyUI without an asset store', { ...minimal, connectors: ['comfyui'] }, /worker\.assets: connector comfyui writes result files: configure an asset store/],
    ['two services of one name', { ...minimal, services: [{ name: 'comfyui', command: 'a', port_base: 1 }, { name: 'comfyui', command: 'b', port_base: 2 }] }, /services\.1\.name: a second service named comfyui/],
    ['a Redis URL that is not one', { ...minimal, redis_url: 'localhost:6379' }, /redis_url: a Redis URL starts with redis:\/\//],
    ['custom nodes without a folder to install them in', { ...minimal, custom_nodes: [{ url: 'https://example.com/org/nodes.git' }] }, /custom_nodes_dir: custom_nodes are installed into ComfyUI's custom_nodes folder/],
    ['an empty pip command', { ...minimal, custom_nodes_pip: [] }, /custom_nodes_pip: /],
    ['a node policy entry that is not a class name', { ...minimal, comfyui_node_policy: { allow: ['Load Image'] } }, /comfyui_node_policy\.allow\.0: a class_type pattern has no spaces/],
    ['a node policy both for the machine and on a connector', {
      ...minimal,
      connectors: [{ type: 'comfyui', options: { nodePolicy: { deny: ['A'] } } }],
      worker: { assets: { type: 'local', directory: '/out' } },
      comfyui_node_policy: { deny: ['B'] },
    }, /connectors\.0\.options\.nodePolicy: comfyui_node_policy already sets the node policy of every ComfyUI connector/],
    ['a crash-loop limit below zero', { ...minimal, supervision: { crash_loop_restarts: -1 } }, /supervision\.crash_loop_restarts/],
  ])('%s is refused, naming the file and field', async (_name, content, message) => {
    const file = await configFile(content);
    await expect(loadMachineConfig(file, {})).rejects.toThrow(message);
    await expect(loadMachineConfig(file, {})).rejects.toThrow(`invalid machine config ${file}`);
  });

  it('takes a node policy for the machine\'s ComfyUI connectors', async () => {
    const file = await configFile({ ...minimal, connectors: ['comfyui'], worker: { assets: { type: 'local', directory: '/out' } }, comfyui_node_policy: { deny: ['LoadImageFromURL', '*Url*'] } });
    const config = await loadMachineConfig(file, {});
    expect(config.comfyui_node_policy).toEqual({ deny: ['LoadImageFromURL', '*Url*'] });
    expect((await loadMachineConfig(await configFile(minimal), {})).comfyui_node_policy).toBeUndefined();
  });

  it('a file that is not JSON is refused with the parser\'s reason', async () => {
    const file = await configFile('{ "machine_id": ');
    await expect(loadMachineConfig(file, {})).rejects.toThrow(new RegExp(`invalid machine config ${file}: .*JSON`));
  });

  it('the documented example (docs/machine.example.json) is a valid config', async () => {
    const example = fileURLToPath(new URL('../../../docs/machine.example.json', import.meta.url));
    const config = await loadMachineConfig(example, { REDIS_URL: 'redis://redis.internal:6379' });
    expect(config).toMatchObject({ machine_id: 'gpu-box-1', redis_url: 'redis://redis.internal:6379', services: [{ name: 'comfyui', port_base: 8188 }] });
    expect(config.connectors.map((c) => c.type)).toEqual(['comfyui', 'simulation']);
    expect(config.models.map((m) => [m.name, m.folder])).toEqual([['sd_xl_base_1.0.safetensors', 'checkpoints'], ['detail-tweaker.safetensors', 'loras']]);
    expect(config).toMatchObject({ custom_nodes_dir: '/opt/ComfyUI/custom_nodes', custom_nodes_pip: ['/opt/ComfyUI/venv/bin/python', '-m', 'pip', 'install'] });
    expect(config.custom_nodes.map((n) => n.url)).toEqual(['https://git.example.com/comfy/ComfyUI-Impact-Pack.git', 'https://git.example.com/comfy/comfyui-api-nodes.git']);
  });

  it('expandEnv leaves non-strings alone', () => {
    expect(expandEnv({ a: 1, b: [true, null, '${X}'] }, { X: 'x' })).toEqual({ a: 1, b: [true, null, 'x'] });
  });
});
