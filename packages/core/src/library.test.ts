import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { describe, expect, it } from 'vitest';
import { ensureFunctionLibrary, functionLibrary } from './library';

const { redis } = usePrivateRedis();

describe('the function library', () => {
  it('is loaded when missing, left alone when current, and replaced when its version differs', async () => {
    expect(await ensureFunctionLibrary(redis)).toBe(1);
    expect(await redis.call('FCALL_RO', 'emp_version', 0)).toBe(functionLibrary().version);
    expect(await ensureFunctionLibrary(redis)).toBe(0);

    await redis.call(
      'FUNCTION',
      'LOAD',
      'REPLACE',
      "#!lua name=emp\nredis.register_function{function_name='emp_version', callback=function() return 'older' end, flags={'no-writes'}}",
    );
    expect(await ensureFunctionLibrary(redis)).toBe(1);
    expect(await redis.call('FCALL_RO', 'emp_version', 0)).toBe(functionLibrary().version);
  });

  it('has one file per function, each opening with a header of its keys, arguments and reply', () => {
    const dir = fileURLToPath(new URL('./functions/', import.meta.url));
    const files = readdirSync(dir).filter((name) => name.endsWith('.lua'));
    expect(files.map((f) => f.replace('.lua', ''))).toEqual(
      expect.arrayContaining(['submit', 'claim', 'start', 'progress', 'complete', 'fail', 'cancel', 'retry', 'heartbeat', 'tick']),
    );
    for (const file of files) {
      const text = readFileSync(dir + file, 'utf8');
      const header = text.slice(0, text.indexOf('\nlocal '));
      expect(header, file).toMatch(/^-- [a-z_]+: /);
      expect(header, file).toMatch(/KEYS\[1\]/);
      expect(header, file).toMatch(/Returns/);
      expect(text, file).toContain(`'emp_${file.replace('.lua', '')}'`);
    }
  });
});
