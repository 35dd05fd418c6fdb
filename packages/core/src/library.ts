import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Cluster, Redis } from 'ioredis';
import { KeyLayout } from './keys';
import { migratePools } from './migrations';

const functionsDir = fileURLToPath(new URL('./functions/', import.meta.url));
const includesDir = fileURLToPath(new URL('./functions/includes/', import.meta.url));

export const LIBRARY_NAME = 'emp';

export interface FunctionLibrary {
  /** content hash of the Lua sources: any edit gives a new version, reloaded on start */
  version: string;
  source: string;
}

/** The .lua files of `dir`, in name order. */
export function luaFiles(dir: string): Array<{ name: string; text: string }> {
  return readdirSync(dir)
    .filter((name) => name.endsWith('.lua'))
    .sort()
    .map((name) => ({ name, text: readFileSync(dir + name, 'utf8') }));
}

export const LUA_INCLUDES_DIR = includesDir;
export const LUA_FUNCTIONS_DIR = functionsDir;

let cached: FunctionLibrary | undefined;

/**
 * The whole library: shared fragments (includes/) first, then one file per
 * function. The library is one Lua chunk, so the includes' top-level locals are
 * what every function shares; each function file is wrapped in `do ... end`, so
 * its own locals are its own (a helper another function needs moves to includes/)
 * and do not use up the chunk's 200 locals. Any new functions/*.lua is wrapped
 * the same way.
 */
export function functionLibrary(): FunctionLibrary {
  if (cached) return cached;
  const body = [
    ...luaFiles(includesDir).map((file) => `-- ${file.name}\n${file.text}`),
    ...luaFiles(functionsDir).map((file) => `-- ${file.name}\ndo\n${file.text}\nend`),
  ].join('\n');
  const version = createHash('sha1').update(body).digest('hex').slice(0, 12);
  const source = [
    `#!lua name=${LIBRARY_NAME}`,
    body,
    `redis.register_function { function_name = 'emp_version', callback = function() return '${version}' end, flags = { 'no-writes' } }`,
  ].join('\n');
  cached = { version, source };
  return cached;
}

async function ensureOnNode(node: Redis, library: FunctionLibrary): Promise<boolean> {
  try {
    if ((await node.call('FCALL_RO', 'emp_version', 0)) === library.version) return false;
  } catch {
    // not loaded yet (or an older library without emp_version)
  }
  await node.call('FUNCTION', 'LOAD', 'REPLACE', library.source);
  return true;
}

/** Loads the library on one server where its version differs (a master just added to a cluster has none). */
export function ensureFunctionLibraryOn(node: Redis): Promise<boolean> {
  return ensureOnNode(node, functionLibrary());
}

/**
 * Loads the library where its version differs from the running code's. Functions
 * live per server, so on a cluster every master gets it. Then brings every pool
 * of `keys`' namespace to the library's data layout (migrations.ts): a pool that
 * is current costs one call.
 * Returns how many servers were (re)loaded.
 */
export async function ensureFunctionLibrary(redis: Redis | Cluster, keys: KeyLayout = new KeyLayout()): Promise<number> {
  const library = functionLibrary();
  const nodes = (redis as Cluster).isCluster ? await mastersOf(redis as Cluster) : [redis as Redis];
  const loaded = await Promise.all(nodes.map((node) => ensureOnNode(node, library)));
  await migratePools(redis, keys);
  return loaded.filter(Boolean).length;
}

/** A Cluster client knows its masters only once it has read the slot map: wait for that. */
async function mastersOf(cluster: Cluster): Promise<Redis[]> {
  if (cluster.status !== 'ready') {
    await new Promise<void>((resolve, reject) => {
      const onReady = () => {
        cluster.off('error', onError);
        resolve();
      };
      const onError = (error: Error) => {
        cluster.off('ready', onReady);
        reject(error);
      };
      cluster.once('ready', onReady);
      cluster.once('error', onError);
      if (cluster.status === 'wait') void cluster.connect().catch(onError);
    });
  }
  return cluster.nodes('master');
}
