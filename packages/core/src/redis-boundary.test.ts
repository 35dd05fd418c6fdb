import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FUNCTIONS } from './broker/functions';
import { LUA_FUNCTIONS_DIR, luaFiles } from './library';

const root = join(__dirname, '../../..');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    if (entry.name === 'node_modules' || entry.name === 'dist') return [];
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return /\.tsx?$/.test(entry.name) ? [relative(root, path)] : [];
  });
}

const files = ['apps', 'packages'].flatMap((top) =>
  readdirSync(join(root, top), { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .flatMap((entry) => {
      try {
        return sources(join(root, top, entry.name, 'src'));
      } catch {
        return [];
      }
    }),
);

function offenders(pattern: RegExp, skip: (file: string) => boolean): string[] {
  return files.filter((file) => !skip(file) && pattern.test(readFileSync(join(root, file), 'utf8')));
}

describe('core owns the Redis layout', () => {
  it('no app (and no other module) reads the broker\'s Redis connection', () => {
    expect(files.length).toBeGreaterThan(100);
    expect(offenders(/\bbroker[!?]?\.redis\b/, () => false)).toEqual([]);
  });

  it('keys are built in keys.ts only', () => {
    // `<namespace>:` or `{<pool>}` put together by hand, outside the key layout and tests
    const handBuilt = /`\$\{[^}`]*(namespace|ns)\}:|:\{\$\{|\}\}:|keys\.prefix\(/;
    expect(offenders(handBuilt, (file) => file.endsWith('.test.ts') || file.includes('/testing/') || file === 'packages/core/src/keys.ts')).toEqual([]);
  });

  it('names each Redis function once, in the table of functions.ts, with the flags the Lua side registers it with', () => {
    const registered = luaFiles(LUA_FUNCTIONS_DIR).flatMap((file) =>
      [...file.text.matchAll(/^register\('(emp_\w+)', \w+(, true)?\)/gm)].map((m) => ({ name: m[1]!, readOnly: m[2] !== undefined })),
    );
    expect(registered.length).toBeGreaterThan(30);
    const table = Object.values(FUNCTIONS).map((fn) => ({ name: fn.name, readOnly: fn.calling === 'reads' }));
    expect(table.sort((a, b) => a.name.localeCompare(b.name))).toEqual(registered.sort((a, b) => a.name.localeCompare(b.name)));
    const sources = files.filter((file) => !file.endsWith('.test.ts')).map((file) => [file, readFileSync(join(root, file), 'utf8')] as const);
    for (const { name } of registered) {
      const naming = sources.filter(([, text]) => text.includes(`'${name}'`)).map(([file]) => file);
      expect(naming, name).toEqual(['packages/core/src/broker/functions.ts']);
      expect(readFileSync(join(root, naming[0]!), 'utf8').split(`'${name}'`).length - 1, name).toBe(1);
    }
  });
});
