#!/usr/bin/env node
// Runs the built CLI (dist/emp.js: `npm run build`, which `npm install` runs too) in this
// process, so signals and exit codes pass straight through. `npm run dev -- <command>` runs the sources.
import { existsSync } from 'node:fs';

const built = new URL('../../../dist/emp.js', import.meta.url);
if (!existsSync(built)) {
  process.stderr.write('error: emp is not built: run `npm run build` (npm install builds it too), or `npm run dev -- <command>` to run the sources\n');
  process.exit(1);
}
await import(built.href);
