import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(__dirname, '../../..');

/** Still reading the broker's connection until their owner moves them to typed methods (issue 15). */
const STILL_ON_THE_HANDLE = new Set(['packages/core/src/webhook-outbox.ts', 'apps/webhooks/src/event-intake.ts']);

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
    expect(offenders(/\bbroker[!?]?\.redis\b/, (file) => STILL_ON_THE_HANDLE.has(file))).toEqual([]);
  });

  it('keys are built in keys.ts only', () => {
    // `<namespace>:` or `{<pool>}` put together by hand, outside the key layout and tests
    const handBuilt = /`\$\{[^}`]*(namespace|ns)\}:|:\{\$\{|\}\}:|keys\.prefix\(/;
    expect(offenders(handBuilt, (file) => file.endsWith('.test.ts') || file.includes('/testing/') || file === 'packages/core/src/keys.ts')).toEqual([]);
  });
});
