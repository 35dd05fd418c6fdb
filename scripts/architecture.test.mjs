import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { brokenRules, crossImports } from './architecture.mjs';

describe('the layout of the parts', () => {
  it('has no app importing another app outside the composition roots', () => {
    expect(brokenRules()).toEqual([]);
  });

  it('would say so if one did', () => {
    const edge = { from: '@emp/machine', to: '@emp/worker', file: 'apps/machine/src/agent.ts', test: false };
    expect(brokenRules([...crossImports(), edge])).toEqual([
      'apps/machine/src/agent.ts (@emp/machine) imports @emp/worker: apps share code through packages/core, tests through @emp/testkit',
    ]);
  });

  it('is drawn as it stands in docs/architecture.md', () => {
    const script = fileURLToPath(new URL('./architecture.mjs', import.meta.url));
    expect(() => execFileSync(process.execPath, [script, '--check'], { stdio: 'pipe' })).not.toThrow();
  });
});
