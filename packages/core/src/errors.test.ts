import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { EmpError, LeaseLostError, NotFoundError, fromRedisError } from './errors';

/** Every code the Lua library raises with raise('CODE', ...) or fail_with('CODE', ...), read from its sources. */
function codesRaisedByLua(): Set<string> {
  const root = fileURLToPath(new URL('./functions/', import.meta.url));
  const files = [...readdirSync(root).map((f) => root + f), ...readdirSync(root + 'includes/').map((f) => `${root}includes/${f}`)];
  const codes = new Set<string>();
  for (const file of files.filter((f) => f.endsWith('.lua'))) {
    for (const match of readFileSync(file, 'utf8').matchAll(/(?:fail_with|raise)\('([A-Z_]+)'/g)) codes.add(match[1]!);
  }
  return codes;
}

describe('error vocabulary', () => {
  it('turns every code the Lua library raises into a typed EmpError with that code', () => {
    const codes = codesRaisedByLua();
    expect(codes.size).toBeGreaterThan(5);
    for (const code of codes) {
      const error = fromRedisError(new Error(`${code} job j1 is gone script: emp_claim`));
      expect(error, code).toBeInstanceOf(EmpError);
      expect((error as EmpError).code).toBe(code);
      expect((error as EmpError).message).toBe('job j1 is gone');
    }
  });

  it('gives the codes that have a class their class', () => {
    expect(fromRedisError(new Error('NOT_FOUND no job x'))).toBeInstanceOf(NotFoundError);
    const lost = fromRedisError(new Error('LEASE_LOST attempt 2 is over'));
    expect(lost).toBeInstanceOf(LeaseLostError);
    expect((lost as Error).name).toBe('LeaseLostError');
  });

  it('leaves other errors alone: unknown codes, codes Lua never raises, non-errors', () => {
    const unknown = new Error('WRONGTYPE Operation against a key holding the wrong kind of value');
    expect(fromRedisError(unknown)).toBe(unknown);
    const validation = new Error('VALIDATION looks like ours');
    expect(fromRedisError(validation)).toBe(validation);
    expect(fromRedisError('text')).toBe('text');
  });
});
