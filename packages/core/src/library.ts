import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Cluster, Redis } from 'ioredis';

const functionsDir = fileURLToPath(new URL('./functions/', import.meta.url));
const includesDir = fileURLToPath(new URL('./functions/includes/', import.meta.url));

export const LIBRARY_NAME = 'emp';

export interface FunctionLibrary {
  /** content hash of the Lua sources: any edit gives a new version, reloaded on start */
  version: string;
  source: string;
}

function luaFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((name) => name.endsWith('.lua'))
    .sort()
    .map((name) => `-- ${name}\n${readFileSync(dir + name, 'utf8')}`);
}

let cached: FunctionLibrary | undefined;

/** The whole library: shared fragments (includes/) first, then one file per function. */
export function functionLibrary(): FunctionLibrary {
  if (cached) return cached;
  const body = [...luaFiles(includesDir), ...luaFiles(functionsDir)].join('\n');
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

/**
 * Loads the library where its version differs from the running code's. Functions
 * live per server, so on a cluster every master gets it.
 * Returns how many servers were (re)loaded.
 */
export async function ensureFunctionLibrary(redis: Redis | Cluster): Promise<number> {
  const library = functionLibrary();
  const nodes = (redis as Cluster).isCluster ? await mastersOf(redis as Cluster) : [redis as Redis];
  const loaded = await Promise.all(nodes.map((node) => ensureOnNode(node, library)));
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
