import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Broker } from '@emp/core';
import { temporaryFolder } from '@emp/testkit';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ProcessLogs } from './process-logs';

const db = usePrivateRedis();
const removals: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const remove of removals.splice(0)) await remove();
});

async function logs(options: Partial<ConstructorParameters<typeof ProcessLogs>[0]> = {}) {
  const folder = await temporaryFolder();
  removals.push(folder.remove);
  const broker = await Broker.connect({ redis: db.redis, skipLibraryLoad: true });
  const settings = { broker, pool: 'standard', machineId: 'm1', dir: folder.path, logger: pino({ level: 'silent' }), ...options };
  return { folder: folder.path, key: broker.keys.machineLogs(settings.pool, settings.machineId), logs: new ProcessLogs(settings) };
}

describe('process logs', () => {
  it('go to the capped stream in batches, and to a file per process', async () => {
    const { logs: out, key, folder } = await logs({ maxLen: 100 });
    for (let i = 0; i < 1_000; i++) out.write('comfyui-gpu0', i % 2 ? 'stderr' : 'stdout', `line ${i}`);
    out.write('worker-comfyui-gpu0', 'stdout', '{"msg":"worker started"}');
    await out.flush();
    expect(out.written).toBe(1_001);
    // MAXLEN ~ trims whole nodes: about the cap is kept, never everything
    const kept = await db.redis.xlen(key);
    expect(kept).toBeGreaterThanOrEqual(100);
    expect(kept).toBeLessThan(1_001);
    const [[, last]] = (await db.redis.xrevrange(key, '+', '-', 'COUNT', 1)) as [[string, string[]]];
    expect(last).toEqual(['process', 'worker-comfyui-gpu0', 'stream', 'stdout', 'line', '{"msg":"worker started"}', 'ts', expect.stringMatching(/^\d+$/)]);
    const file = readFileSync(join(folder, 'comfyui-gpu0.log'), 'utf8').split('\n');
    expect(file.slice(0, 2)).toEqual(['line 0', 'line 1']);
    expect(file).toHaveLength(1_001);
  });

  it('rotate files past their size, keeping the configured number', async () => {
    const { logs: out, folder } = await logs({ maxFileBytes: 1_024, filesKept: 2 });
    for (let batch = 0; batch < 6; batch++) {
      for (let i = 0; i < 10; i++) out.write('svc-cpu0', 'stdout', `${batch}-${i} ${'x'.repeat(80)}`);
      await out.flush();
    }
    expect(readdirSync(folder).sort()).toEqual(['svc-cpu0.log', 'svc-cpu0.log.1', 'svc-cpu0.log.2']);
    expect(readFileSync(join(folder, 'svc-cpu0.log'), 'utf8')).toMatch(/^5-0 /);
    expect(readFileSync(join(folder, 'svc-cpu0.log.1'), 'utf8')).toMatch(/^4-0 /);
  });

  it('keep writing files and count what Redis did not take', async () => {
    const { logs: out, key, folder } = await logs({ machineId: 'broken' });
    await db.redis.set(key, 'not a stream');
    out.write('svc-cpu0', 'stdout', 'still here');
    await out.flush();
    expect(out.dropped).toBe(1);
    expect(readFileSync(join(folder, 'svc-cpu0.log'), 'utf8')).toBe('still here\n');
  });
});
