import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUILD_DIR } from '@emp/core';
import { describe, expect, it } from 'vitest';
import { COMMANDS, requestedCommand } from './command-table';
import { empProgram } from './program';

/** The packages (not Node's own modules) a file of the build loads before it runs: its static imports, followed through the shared chunks. */
function packagesLoadedBy(file: string): Set<string> {
  const packages = new Set<string>();
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    const text = readFileSync(join(BUILD_DIR, name), 'utf8');
    for (const [, specifier] of text.matchAll(/^import\s(?:[^;]*?\sfrom\s*)?"([^"]+)"/gm)) {
      if (specifier!.startsWith('./')) visit(specifier!.slice(2));
      else if (!specifier!.startsWith('node:')) packages.add(specifier!);
    }
  };
  visit(file);
  return packages;
}

/** The chunk of the build that holds a command's module (the target of its `load` in the command table). */
function chunkOf(register: string): string {
  const entry = readFileSync(join(BUILD_DIR, 'emp.js'), 'utf8');
  const chunk = new RegExp(`import\\("\\./(chunk-[^"]+)"\\)\\)\\.${register}\\b`).exec(entry)?.[1];
  if (!chunk) throw new Error(`dist/emp.js loads no chunk for ${register}`);
  return chunk;
}

describe('the command table', () => {
  it('lists every command as its module registers it, so `emp --help` drawn from the table alone reads as with every command loaded', async () => {
    const fromTable = await empProgram(undefined);
    const loaded = await empProgram('all');
    expect(fromTable.helpInformation()).toBe(loaded.helpInformation());
    expect(loaded.commands.map((command) => command.name())).toEqual(COMMANDS.map((entry) => entry.name));
  });

  it('names the command a line runs, past the global --redis flag, and the one `help` is asked about', () => {
    expect(requestedCommand(['queues', '--json'])).toBe('queues');
    expect(requestedCommand(['--redis', 'redis://h:1', 'jobs'])).toBe('jobs');
    expect(requestedCommand(['--redis=redis://h:1', 'jobs'])).toBe('jobs');
    expect(requestedCommand(['help', 'keys'])).toBe('keys');
    expect(requestedCommand(['--help'])).toBeUndefined();
  });

  it('keeps `emp --help` to commander, and `emp queues` off the API, the monitor and the logger (the build, dist/)', () => {
    expect([...packagesLoadedBy('emp.js')]).toEqual(['commander']);
    const queues = packagesLoadedBy(chunkOf('registerQueues'));
    for (const heavy of ['fastify', 'pino', '@emp/api', 'prom-client']) expect(queues).not.toContain(heavy);
  });
});
