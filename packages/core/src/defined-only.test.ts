import { describe, expect, it } from 'vitest';
import { definedOnly } from './defined-only';

describe('definedOnly', () => {
  it('leaves out the keys whose value is undefined and keeps every other falsy value', () => {
    const record = definedOnly({ a: 1, b: undefined, c: null, d: '', e: 0, f: false });
    expect(Object.keys(record)).toEqual(['a', 'c', 'd', 'e', 'f']);
  });

  it('lets an override win over a default only where it is given', () => {
    const overrides: { cpu_cores?: number; ram_gb?: number } = { ram_gb: 64 };
    expect({ cpu_cores: 8, ram_gb: 16, ...definedOnly({ cpu_cores: overrides.cpu_cores, ram_gb: overrides.ram_gb }) }).toStrictEqual({ cpu_cores: 8, ram_gb: 64 });
  });
});
