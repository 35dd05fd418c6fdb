import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { describe, expect, it } from 'vitest';
import { ensureFunctionLibrary, functionLibrary, LUA_FUNCTIONS_DIR, LUA_INCLUDES_DIR, luaFiles } from './library';
import { type LuaFileScope, luaFileScope } from './testing/lua-scope';

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

// The Lua globals a file may read at all; everything else it reads must be its own
// or an include's (00-base.lua binds the globals a call needs to locals).
const LUA_GLOBALS = new Set(['redis', 'KEYS', 'ARGV']);

describe('the library\'s scopes', () => {
  const includes = luaFiles(LUA_INCLUDES_DIR).map((file) => ({ name: file.name, scope: luaFileScope(file.text) }));
  const functions = luaFiles(LUA_FUNCTIONS_DIR).map((file) => ({ name: file.name, scope: luaFileScope(file.text) }));
  const shared = new Set(includes.flatMap((file) => file.scope.topLevel));
  const unresolved = (scope: LuaFileScope, visible: Set<string>) =>
    [...scope.referenced].filter((name) => !scope.declared.has(name) && !visible.has(name) && !LUA_GLOBALS.has(name));

  it('shares only the includes\' top-level locals: a function file\'s are its own', () => {
    for (const file of functions) expect(file.scope.balanced, `${file.name} closes every block it opens`).toBe(true);
    const library = luaFileScope(functionLibrary().source);
    expect(library.topLevel).toEqual(includes.flatMap((file) => file.scope.topLevel));
    // Lua allows 200 locals in a chunk; the shared scope stays well below (167 when every file's counted)
    // (131 since workflows: their transitions share one table)
    expect(library.topLevel.length).toBeLessThanOrEqual(131);
  });

  it('has each function file read only its own names, the includes\' and a few globals', () => {
    for (const file of functions) expect(unresolved(file.scope, shared), file.name).toEqual([]);
  });

  it('has each include read only names of the includes before it', () => {
    const before = new Set<string>();
    for (const file of includes) {
      expect(unresolved(file.scope, before), file.name).toEqual([]);
      file.scope.topLevel.forEach((name) => before.add(name));
    }
  });

  it('keeps in includes only what several function files use (directly or through another include)', () => {
    const usedBy = new Map<string, Set<string>>([...shared].map((name) => [name, new Set<string>()]));
    const usesOf = (name: string) => includes.flatMap((file) => [...(file.scope.uses.get(name) ?? [])]);
    for (const file of functions) {
      const pending = [...file.scope.referenced].filter((name) => shared.has(name) && !file.scope.declared.has(name));
      const seen = new Set<string>();
      for (let name = pending.pop(); name !== undefined; name = pending.pop()) {
        if (seen.has(name)) continue;
        seen.add(name);
        usedBy.get(name)!.add(file.name);
        pending.push(...usesOf(name).filter((used) => shared.has(used) && used !== name));
      }
    }
    const single = [...usedBy].filter(([, files]) => files.size < 2).map(([name, files]) => `${name}: ${[...files].join() || 'nobody'}`);
    expect(single).toEqual([]);
  });
});
