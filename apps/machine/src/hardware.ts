import { execFile } from 'node:child_process';
import { statfs } from 'node:fs/promises';
import { availableParallelism, totalmem } from 'node:os';
import { promisify } from 'node:util';
import { GpuInfo, definedOnly, parseWith } from '@emp/core';
import { z } from 'zod';

const run = promisify(execFile);

/** One GPU: the shape the machine hash's `gpus` holds, declared with the registry's records in core. */
export { GpuInfo };

export const Hardware = z.object({
  gpus: z.array(GpuInfo),
  cpu_cores: z.number().int().positive(),
  ram_gb: z.number().positive(),
  disk_free_gb: z.number().nonnegative(),
  /** why GPUs could not be read when nvidia-smi exists but failed (a driver problem, say) */
  gpu_error: z.string().optional(),
});
export type Hardware = z.infer<typeof Hardware>;

/** Anything discovery finds can be set by config instead (tests, odd hosts, a GPU to leave out). */
export const HardwareOverrides = Hardware.partial().strict();

/** The fields asked of nvidia-smi, in this order. */
export const NVIDIA_SMI_QUERY = ['index', 'name', 'uuid', 'memory.total', 'memory.used', 'utilization.gpu', 'temperature.gpu'] as const;

/**
 * Parses `nvidia-smi --query-gpu=<NVIDIA_SMI_QUERY> --format=csv,noheader,nounits`:
 * one line per GPU, values separated by ", "; a value the GPU cannot report
 * is `[N/A]` or `[Not Supported]` and is left out.
 */
export function parseNvidiaSmi(text: string): GpuInfo[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .map((line, lineNumber) => {
      const cells = line.split(',').map((cell) => cell.trim());
      if (cells.length !== NVIDIA_SMI_QUERY.length) {
        throw new Error(`nvidia-smi line ${lineNumber + 1}: expected ${NVIDIA_SMI_QUERY.length} values, got ${cells.length}: ${line}`);
      }
      const [index, name, uuid, total, used, utilization, temperature] = cells as [string, string, string, string, string, string, string];
      const number = (cell: string) => (/^\[.*\]$/.test(cell) || cell === '' ? undefined : Number(cell));
      return parseWith(
        GpuInfo,
        definedOnly({
          index: number(index),
          name,
          uuid: /^\[.*\]$/.test(uuid) ? undefined : uuid,
          memory_total_mb: number(total) ?? 0,
          memory_used_mb: number(used),
          utilization_pct: number(utilization),
          temperature_c: number(temperature),
        }),
        `nvidia-smi line ${lineNumber + 1}`,
      );
    });
}

/** GPUs through nvidia-smi: none when it is not installed, none plus the reason when it fails. */
export async function discoverGpus(nvidiaSmi = 'nvidia-smi', env: NodeJS.ProcessEnv = process.env): Promise<{ gpus: GpuInfo[]; error?: string }> {
  try {
    const { stdout } = await run(nvidiaSmi, [`--query-gpu=${NVIDIA_SMI_QUERY.join(',')}`, '--format=csv,noheader,nounits'], {
      env,
      timeout: 10_000,
    });
    return { gpus: parseNvidiaSmi(stdout) };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { gpus: [] };
    const { stdout, stderr, message } = error as { stdout?: string; stderr?: string; message: string };
    const said = `${stdout ?? ''}${stderr ?? ''}`.trim().split('\n')[0];
    return { gpus: [], error: `nvidia-smi failed: ${said || message}` };
  }
}

/** What this machine has: GPUs, CPU cores, RAM and free disk where models are kept; `overrides` win. */
export async function discoverHardware(options: {
  nvidiaSmi?: string;
  env?: NodeJS.ProcessEnv;
  /** the folder whose file system's free space counts (the model cache) */
  diskPath?: string;
  overrides?: z.input<typeof HardwareOverrides>;
} = {}): Promise<Hardware> {
  const overrides = parseWith(HardwareOverrides, options.overrides ?? {}, 'hardware overrides');
  const found: { gpus: GpuInfo[]; error?: string } = overrides.gpus ? { gpus: overrides.gpus } : await discoverGpus(options.nvidiaSmi, options.env);
  const disk = await statfs(options.diskPath ?? '.');
  return parseWith(
    Hardware,
    {
      gpus: found.gpus,
      gpu_error: found.error,
      cpu_cores: availableParallelism(),
      ram_gb: round(totalmem() / 2 ** 30),
      disk_free_gb: round((disk.bavail * disk.bsize) / 2 ** 30),
      // an override given wins over what was found; one left out does not erase it
      ...definedOnly({ ...overrides, gpus: undefined }),
    },
    'discovered hardware',
  );
}

function round(gb: number): number {
  return Math.round(gb * 10) / 10;
}
