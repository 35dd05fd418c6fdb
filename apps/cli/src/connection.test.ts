import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveRedisTarget } from './connection';
import { CommandError } from './errors';

describe('resolveRedisTarget', () => {
  let root: string;
  let nested: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'emp-resolve-'));
    nested = join(root, 'apps', 'deep', 'er');
    mkdirSync(nested, { recursive: true });
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('takes --redis first, then REDIS_URL', () => {
    expect(resolveRedisTarget('redis://flag:1', nested, { REDIS_URL: 'redis://env:2' })).toEqual({ url: 'redis://flag:1', source: 'flag' });
    expect(resolveRedisTarget(undefined, nested, { REDIS_URL: 'redis://env:2' })).toEqual({ url: 'redis://env:2', source: 'env' });
  });

  it('without either, tells the user how to get a Redis', () => {
    const attempt = () => resolveRedisTarget(undefined, nested, {});
    expect(attempt).toThrow(CommandError);
    expect(attempt).toThrow(/run `npm start`.*set REDIS_URL.*--redis <url>/);
  });

  it('finds the URL `emp start` recorded, from any folder below it', () => {
    mkdirSync(join(root, '.emp'));
    writeFileSync(join(root, '.emp', 'redis.url'), 'redis://127.0.0.1:6390\n');
    expect(resolveRedisTarget(undefined, nested, {})).toEqual({
      url: 'redis://127.0.0.1:6390',
      source: 'file',
      file: join(root, '.emp', 'redis.url'),
    });
  });
});
