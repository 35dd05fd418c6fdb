import { createHash } from 'node:crypto';
import { builtinModules } from 'node:module';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { InlineConfig, Plugin } from 'vite';

/** apps/monitor */
export const MONITOR_ROOT = fileURLToPath(new URL('..', import.meta.url));
const REPO_ROOT = join(MONITOR_ROOT, '..', '..');
/** the page's sources (React + TypeScript) */
export const WEB_DIR = join(MONITOR_ROOT, 'web');
/** the built page that the monitor server serves */
export const DIST_DIR = join(MONITOR_ROOT, 'dist');
const STAMP_FILE = 'build-stamp.txt';
const LOCK_DIR = join(MONITOR_ROOT, '.build-lock');
/** a lock older than this was left by a build that died */
const STALE_LOCK_MS = 180_000;

/** What goes into the bundle: the page, and the shared packages it imports (the SDK, the core's schemas). */
const SOURCES = [WEB_DIR, join(REPO_ROOT, 'packages', 'core', 'src'), join(REPO_ROOT, 'packages', 'client', 'src')];
const LOCKFILE = join(REPO_ROOT, 'package-lock.json');

/**
 * Node built-ins imported by shared packages (the core's Redis side, the
 * SDK's Node WebSocket) on paths the page never takes: resolved to a module
 * whose every export throws if called, instead of failing the build.
 */
function nodeBuiltinsUnavailable(): Plugin {
  const builtins = new Set([...builtinModules, ...builtinModules.map((name) => `node:${name}`)]);
  const prefix = '\0node-builtin:';
  return {
    name: 'emp-node-builtins-unavailable',
    enforce: 'pre',
    resolveId(id) {
      return builtins.has(id) ? { id: `${prefix}${id}`, syntheticNamedExports: true } : null;
    },
    load(id) {
      if (!id.startsWith(prefix)) return null;
      const name = JSON.stringify(id.slice(prefix.length));
      return `export default new Proxy({}, { get: (_, key) => typeof key === 'string' ? () => { throw new Error(${name} + '.' + key + ' is not available in the browser'); } : undefined });`;
    },
  };
}

export function viteConfig(outDir = DIST_DIR): InlineConfig {
  return {
    configFile: false,
    // a production build whatever NODE_ENV the calling process has (vitest sets 'test')
    mode: 'production',
    define: { 'process.env.NODE_ENV': '"production"' },
    root: WEB_DIR,
    base: './',
    logLevel: 'error',
    esbuild: { jsx: 'automatic', jsxDev: false },
    plugins: [nodeBuiltinsUnavailable()],
    build: { outDir, emptyOutDir: true, reportCompressedSize: false, chunkSizeWarningLimit: 2_000 },
  };
}

async function listFiles(dir: string, into: string[] = []): Promise<string[]> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await listFiles(path, into);
    else if (!/\.test\.tsx?$/.test(entry.name)) into.push(path);
  }
  return into;
}

/** A fingerprint of every source of the bundle (path, size, modification time). */
export async function sourcesStamp(): Promise<string> {
  // this file too: a change to the build's settings is a change to the bundle
  const files = [LOCKFILE, fileURLToPath(import.meta.url), ...(await Promise.all(SOURCES.map((dir) => listFiles(dir)))).flat()].sort();
  const hash = createHash('sha1');
  for (const file of files) {
    const info = await stat(file).catch(() => undefined);
    hash.update(`${relative(REPO_ROOT, file)}:${info?.size ?? -1}:${info?.mtimeMs ?? -1}\n`);
  }
  return hash.digest('hex');
}

async function builtStamp(): Promise<string | undefined> {
  return readFile(join(DIST_DIR, STAMP_FILE), 'utf8').then((text) => text.trim(), () => undefined);
}

async function takeLock(logger: Logger): Promise<boolean> {
  try {
    await mkdir(LOCK_DIR);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    const age = Date.now() - ((await stat(LOCK_DIR).catch(() => undefined))?.mtimeMs ?? Date.now());
    if (age > STALE_LOCK_MS) {
      logger.warn({ lock: LOCK_DIR }, 'removing a monitor build lock left by a build that did not finish');
      await rm(LOCK_DIR, { recursive: true, force: true });
    }
    return false;
  }
}

/**
 * Makes sure `dist/` holds the page built from the current sources: builds it
 * with Vite when it is missing or older than any source (a fresh clone, a
 * pulled change), else does nothing. Processes starting together (tests,
 * two `emp start`) build once: the others wait for that build.
 */
export async function ensureMonitorBundle(logger: Logger): Promise<{ built: boolean; dir: string }> {
  for (;;) {
    const wanted = await sourcesStamp();
    if ((await builtStamp()) === wanted) return { built: false, dir: DIST_DIR };
    if (!(await takeLock(logger))) {
      await sleep(250);
      continue;
    }
    try {
      if ((await builtStamp()) === wanted) return { built: false, dir: DIST_DIR };
      const reason = (await builtStamp()) === undefined ? 'no bundle yet' : 'its sources changed';
      logger.info({ dir: DIST_DIR, reason }, `building the monitor page with Vite (${reason}); this takes a few seconds`);
      const started = Date.now();
      const staging = `${DIST_DIR}.tmp-${process.pid}`;
      try {
        const { build } = await import('vite');
        await build(viteConfig(staging));
        await writeFile(join(staging, STAMP_FILE), `${wanted}\n`);
      } catch (error) {
        await rm(staging, { recursive: true, force: true });
        throw error;
      }
      await rm(DIST_DIR, { recursive: true, force: true });
      await rename(staging, DIST_DIR);
      logger.info({ dir: DIST_DIR, ms: Date.now() - started }, 'monitor page built');
      return { built: true, dir: DIST_DIR };
    } finally {
      await rm(LOCK_DIR, { recursive: true, force: true });
    }
  }
}
