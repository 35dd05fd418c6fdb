#!/usr/bin/env node
// The picture of the parts in docs/architecture.md, drawn from the code's own imports,
// and the one rule of the layout checked: no app imports another app (the composition
// roots `emp start` and `emp machine` excepted); apps' tests share harnesses through @emp/testkit.
//
//   node scripts/architecture.mjs           print the diagram and any broken rule
//   node scripts/architecture.mjs --write   put the diagram into docs/architecture.md
//   node scripts/architecture.mjs --check   exit 1 when the doc is stale or a rule is broken
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const DOC = join(root, 'docs/architecture.md');
const BEGIN = '<!-- imports:begin (npm run architecture -- --write) -->';
const END = '<!-- imports:end -->';

/**
 * The only source files that may import other apps: `emp start` runs the whole stack in
 * one process, `emp machine` runs the machine agent in the CLI's.
 */
export const COMPOSITION_ROOTS = ['apps/cli/src/stack.ts', 'apps/cli/src/commands/machine.ts'];

function isTest(path) {
  if (path.startsWith('packages/testkit/')) return true; // the tests' harnesses: test code as a whole
  return /\.(test|e2e\.test|property\.test)\.tsx?$/.test(path) || /\/(testing|dev)\//.test(path);
}

function sourceFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist') continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sourceFiles(path));
    else if (/\.(ts|tsx|mjs)$/.test(name)) out.push(path);
  }
  return out;
}

/** Every workspace: its folder and package name. */
export function workspaces() {
  const { workspaces: globs } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const folders = globs.flatMap((glob) =>
    glob.endsWith('/*') ? readdirSync(join(root, glob.slice(0, -2))).map((name) => `${glob.slice(0, -2)}/${name}`) : [glob],
  );
  return folders
    .filter((folder) => {
      try {
        return statSync(join(root, folder, 'package.json')).isFile();
      } catch {
        return false;
      }
    })
    .map((folder) => ({ folder, name: JSON.parse(readFileSync(join(root, folder, 'package.json'), 'utf8')).name }));
}

/** Imports between workspaces: [{ from, to, file, test }] (`to` a package name, subpaths folded). */
export function crossImports() {
  const spaces = workspaces();
  const names = new Set(spaces.map((s) => s.name));
  const edges = [];
  for (const space of spaces) {
    for (const file of sourceFiles(join(root, space.folder))) {
      const text = readFileSync(file, 'utf8');
      for (const match of text.matchAll(/(?:from\s+|import\s*\(\s*)'(@emp\/[a-z-]+)(?:\/[^']*)?'/g)) {
        const to = match[1];
        if (to === space.name || !names.has(to)) continue;
        const path = relative(root, file);
        edges.push({ from: space.name, to, file: path, test: isTest(path) });
      }
    }
  }
  return edges;
}

/** What breaks the layout's rule, one line each. */
export function brokenRules(edges = crossImports()) {
  const apps = new Set(workspaces().filter((s) => s.folder.startsWith('apps/')).map((s) => s.name));
  return edges
    .filter((e) => apps.has(e.from) && apps.has(e.to) && !COMPOSITION_ROOTS.includes(e.file))
    .map((e) => `${e.file} (${e.from}) imports ${e.to}: apps share code through packages/core, tests through @emp/testkit`);
}

export function diagram(edges = crossImports()) {
  const id = (name) => name.replace('@emp/', '');
  const spaces = workspaces();
  const lines = ['```mermaid', 'flowchart LR'];
  for (const group of ['packages', 'apps']) {
    lines.push(`  subgraph ${group}`);
    for (const s of spaces.filter((s) => s.folder.startsWith(`${group}/`))) lines.push(`    ${id(s.name)}["${s.folder}"]`);
    lines.push('  end');
  }
  for (const s of spaces.filter((s) => !/^(packages|apps)\//.test(s.folder))) lines.push(`  ${id(s.name)}["${s.folder}"]`);
  // the code that ships: imports made by source files (tests and the testkit drawn apart, below)
  const shipped = new Set(edges.filter((e) => !e.test).map((e) => `${e.from} ${e.to}`));
  for (const key of [...shipped].sort()) {
    const [from, to] = key.split(' ');
    lines.push(`  ${id(from)} --> ${id(to)}`);
  }
  lines.push('```');
  const testOnly = (to) => [...new Set(edges.filter((e) => e.test && e.to === to).map((e) => id(e.from)))].sort();
  const harnessed = [...new Set(edges.filter((e) => e.from === '@emp/testkit').map((e) => id(e.to)))].sort();
  lines.push('', `Tests only: the tests of ${testOnly('@emp/testkit').join(', ')} import \`testkit\`, which builds on ${harnessed.join(', ')}.`);
  return lines.join('\n');
}

function documented() {
  const text = readFileSync(DOC, 'utf8');
  const start = text.indexOf(BEGIN);
  const end = text.indexOf(END);
  if (start < 0 || end < start) throw new Error(`${relative(root, DOC)} has no ${BEGIN} ... ${END} block`);
  return { text, start, end };
}

function main() {
  const edges = crossImports();
  const picture = diagram(edges);
  const broken = brokenRules(edges);
  const mode = process.argv[2];
  if (mode === '--write') {
    const { text, start, end } = documented();
    writeFileSync(DOC, `${text.slice(0, start + BEGIN.length)}\n${picture}\n${text.slice(end)}`);
  } else if (mode === '--check') {
    const { text, start, end } = documented();
    if (text.slice(start + BEGIN.length, end).trim() !== picture.trim()) {
      broken.push(`${relative(root, DOC)} is stale: run npm run architecture -- --write`);
    }
  } else {
    console.log(picture);
  }
  for (const line of broken) console.error(`layout: ${line}`);
  if (broken.length > 0) process.exitCode = 1;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
