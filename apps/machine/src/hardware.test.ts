import { chmod, copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { discoverGpus, discoverHardware, parseNvidiaSmi } from './hardware';

const testing = fileURLToPath(new URL('./testing/', import.meta.url));
const fixture = (name: string) => join(testing, 'nvidia-smi', name);
let bin: string;

// a folder holding only a fake `nvidia-smi`, put first on PATH as on a real machine
beforeAll(async () => {
  bin = await mkdtemp(join(tmpdir(), 'emp-fake-gpu-'));
  await copyFile(join(testing, 'fake-nvidia-smi.sh'), join(bin, 'nvidia-smi'));
  await chmod(join(bin, 'nvidia-smi'), 0o755);
});
afterAll(async () => {
  await rm(bin, { recursive: true, force: true });
});
const withFake = (which: string) => ({ ...process.env, PATH: `${bin}:${process.env.PATH}`, FAKE_NVIDIA_SMI: which });

describe('GPU discovery through nvidia-smi on PATH', () => {
  it('one GPU', async () => {
    const { gpus, error } = await discoverGpus('nvidia-smi', withFake(fixture('one-h100.csv')));
    expect(error).toBeUndefined();
    expect(gpus).toEqual([
      {
        index: 0,
        name: 'NVIDIA H100 80GB HBM3',
        uuid: 'GPU-5f6a2c1e-8d3b-4f7a-9c2e-1b0d4e6f8a9b',
        memory_total_mb: 81559,
        memory_used_mb: 1,
        utilization_pct: 0,
        temperature_c: 31,
      },
    ]);
  });

  it('four GPUs, in index order with their own load', async () => {
    const { gpus } = await discoverGpus('nvidia-smi', withFake(fixture('four-l4.csv')));
    expect(gpus.map((g) => g.index)).toEqual([0, 1, 2, 3]);
    expect(gpus.map((g) => g.utilization_pct)).toEqual([97, 0, 3, 100]);
    expect(gpus.every((g) => g.memory_total_mb === 23034)).toBe(true);
  });

  it('values the GPU cannot report are left out, not read as zero', async () => {
    const { gpus } = await discoverGpus('nvidia-smi', withFake(fixture('not-supported.csv')));
    expect(gpus).toEqual([{ index: 0, name: 'NVIDIA A10G', memory_total_mb: 23028 }]);
  });

  it('no nvidia-smi: a CPU machine, no error', async () => {
    expect(await discoverGpus('nvidia-smi', { ...process.env, PATH: '/nonexistent' })).toEqual({ gpus: [] });
  });

  it('nvidia-smi without a driver: no GPUs, and the reason', async () => {
    const { gpus, error } = await discoverGpus('nvidia-smi', withFake('driver-failure'));
    expect(gpus).toEqual([]);
    expect(error).toMatch(/^nvidia-smi failed: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver/);
  });

  it('a line it cannot read is an error naming the line', () => {
    expect(() => parseNvidiaSmi('0, NVIDIA L4, 23034\n')).toThrow(/nvidia-smi line 1: expected 7 values, got 3/);
    expect(() => parseNvidiaSmi('x, NVIDIA L4, GPU-1, 23034, 0, 0, 30\n')).toThrow(/nvidia-smi line 1/);
  });
});

describe('the whole machine', () => {
  it('reports CPU cores, RAM and free disk beside the GPUs', async () => {
    const hardware = await discoverHardware({ env: withFake(fixture('four-l4.csv')), diskPath: tmpdir() });
    expect(hardware.gpus).toHaveLength(4);
    expect(hardware.cpu_cores).toBeGreaterThan(0);
    expect(hardware.ram_gb).toBeGreaterThan(0);
    expect(hardware.disk_free_gb).toBeGreaterThanOrEqual(0);
  });

  it('config overrides win over what is found, and are validated', async () => {
    const hardware = await discoverHardware({ env: withFake(fixture('four-l4.csv')), overrides: { gpus: [], cpu_cores: 3, ram_gb: 12 } });
    expect(hardware).toMatchObject({ gpus: [], cpu_cores: 3, ram_gb: 12 });
    await expect(discoverHardware({ overrides: { cpu_cores: -1 } })).rejects.toThrow(/invalid hardware overrides: cpu_cores/);
    await expect(discoverHardware({ overrides: { tpus: 2 } as never })).rejects.toThrow(/Unrecognized key: "tpus"/);
  });
});
