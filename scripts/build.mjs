// `npm run build` (and `npm install`, through `prepare`): bundles each process's
// entry with esbuild into dist/, one ESM file per process with its source map.
// Workspace code (@emp/*) is bundled, and the few packages in BUNDLED_PACKAGES;
// every other package stays an import of node_modules, so native and optional
// dependencies load as they always do.
import { readFile, readdir, rm } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { join, relative, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const OUT_DIR = fileURLToPath(new URL('../dist/', import.meta.url));

/** dist/<name>.js for each process the code starts (the names packages/core/src/process-entry.ts starts). */
const ENTRIES = {
  emp: 'apps/cli/src/main.ts',
  worker: 'apps/worker/src/main.ts',
  'simulated-service': 'apps/machine/src/simulated-service.ts',
  // one policy's run in a child process of `emp simulate` (packages/simulator/src/parallel.ts)
  'simulation-run': 'packages/simulator/src/run-process.ts',
};

/**
 * Pure JavaScript packages that nearly every process loads, bundled for start-up
 * time: Node reads, resolves and compiles each of their dozens of files one by
 * one (zod alone ~80 ms of CPU, ioredis ~110 ms, on the 2-core machine), where
 * a bundle is one file. Every importer of zod that the processes load is bundled
 * with it (fastify-type-provider-zod), so a process holds one copy of zod and
 * its global registry. What these packages import themselves stays external.
 */
const BUNDLED_PACKAGES = new Set(['zod', 'fastify-type-provider-zod', 'ioredis']);

/**
 * Other packages load from node_modules at run time.
 * One that an app has in its own node_modules (a version other than the
 * hoisted one) is imported by its path there, as the app's sources get it.
 */
const externalDependencies = {
  name: 'external-dependencies',
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, async (args) => {
      if (args.path.startsWith('@emp/') || args.pluginData === RESOLVING) return undefined;
      if (BUNDLED_PACKAGES.has(packageName(args.path)) && !args.resolveDir.split(sep).includes('node_modules')) return undefined;
      if (args.path.startsWith('node:') || builtinModules.includes(args.path)) return { path: args.path, external: true };
      const resolved = await build.resolve(args.path, { resolveDir: args.resolveDir, kind: args.kind, importer: args.importer, pluginData: RESOLVING });
      if (resolved.errors.length > 0) return { errors: resolved.errors };
      if (resolved.path.startsWith(HOISTED)) return { path: args.path, external: true };
      return { path: relative(OUT_DIR, resolved.path).split(sep).join('/'), external: true };
    });
  },
};
const RESOLVING = Symbol('resolving a package');
const packageName = (specifier) => specifier.split('/').slice(0, specifier.startsWith('@') ? 2 : 1).join('/');
const HOISTED = join(ROOT, 'node_modules') + sep;

/**
 * In bundled workspace code, import.meta.url still names the source file, so
 * the files found beside a source (the Lua library, the monitor's page, the
 * Redis launcher, package.json) are found from dist/ too, as long as it sits
 * in the repository.
 */
const sourceImportMetaUrl = {
  name: 'source-import-meta-url',
  setup(build) {
    build.onLoad({ filter: /\.ts$/ }, async (args) => {
      if (args.path.split(sep).includes('node_modules')) return undefined;
      const text = await readFile(args.path, 'utf8');
      if (!text.includes('import.meta.url')) return undefined;
      const fromOutput = relative(OUT_DIR, args.path).split(sep).join('/');
      return { contents: text.replaceAll('import.meta.url', `new URL(${JSON.stringify(fromOutput)}, import.meta.url).href`), loader: 'ts' };
    });
  },
};

export async function build() {
  const started = performance.now();
  const result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: ENTRIES,
    outdir: OUT_DIR,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: true,
    // dynamic imports (the S3 and Azure asset stores, ...) stay lazy: their code and packages load only when used
    splitting: true,
    chunkNames: 'chunk-[hash]',
    // packages/core/src/process-entry.ts: the code knows it runs from dist/ and starts the other processes from there
    define: { EMP_BUILT: 'true' },
    plugins: [externalDependencies, sourceImportMetaUrl],
    // the bundled CommonJS packages (ioredis) require() their own dependencies and Node's modules
    banner: { js: "import { createRequire as __empCreateRequire } from 'node:module'; const require = __empCreateRequire(import.meta.url);" },
    logLevel: 'warning',
    metafile: true,
  });
  const outputs = new Set(Object.keys(result.metafile.outputs).map((file) => file.slice('dist/'.length)));
  // chunks of earlier builds (their names are content hashes) go; nothing is removed before the new files are in place
  for (const name of await readdir(OUT_DIR)) if (!outputs.has(name)) await rm(`${OUT_DIR}${name}`, { force: true });
  return { ms: Math.round(performance.now() - started), entries: Object.keys(ENTRIES).map((name) => `${name}.js`), chunks: [...outputs].filter((file) => file.startsWith('chunk-') && file.endsWith('.js')) };
}

/** vitest's global setup (vitest.config.ts): the tests that spawn `emp` run a build of the sources under test. */
export async function setup() {
  await build();
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { ms, entries, chunks } = await build();
  process.stdout.write(`built dist/: ${entries.join(', ')} and ${chunks.length} shared chunks in ${ms} ms\n`);
}
