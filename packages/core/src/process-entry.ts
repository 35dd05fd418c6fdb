import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Defined as true by the build (scripts/build.mjs) in the bundles it writes; not defined when the TypeScript sources run (tsx, vitest). */
declare const EMP_BUILT: boolean | undefined;

/** Whether this code runs from the bundles in dist/ (plain `node`) rather than from its TypeScript sources (tsx). */
export const RUNS_BUILT: boolean = typeof EMP_BUILT === 'boolean' && EMP_BUILT;

/** Where `npm run build` writes the bundles: dist/ at the repository root. */
export const BUILD_DIR = fileURLToPath(new URL('../../../dist/', import.meta.url));

/**
 * The file a child process of ours runs: from the build, its bundle
 * `dist/<name>.js` (see scripts/build.mjs); from the sources, the TypeScript
 * `source` itself, which needs tsx.
 */
export function processEntry(source: string, name: string): string {
  return RUNS_BUILT ? join(BUILD_DIR, `${name}.js`) : source;
}
