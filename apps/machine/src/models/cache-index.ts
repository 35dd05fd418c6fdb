import { randomUUID } from 'node:crypto';
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { ModelName } from '@emp/core';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { ModelSpec } from '../config';

/** The index lives beside the models it describes. */
export const INDEX_FILE = '.emp-model-cache.json';

/** A model's name is its file's path under its folder: relative, no `..`, no backslashes. */
export const ModelFileName = ModelName.refine(
  (name) => !name.startsWith('/') && !name.includes('\\') && !name.includes('\0') && name.split('/').every((part) => part !== '' && part !== '.' && part !== '..'),
  { message: 'a model name is a relative file path without empty, . or .. parts' },
);

export const IndexEntry = z
  .object({
    folder: z.string().regex(/^[a-z0-9_/-]+$/),
    size: z.number().int().nonnegative(),
    /** known when this cache downloaded it, or from the catalog when the file was found on disk */
    sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
    /** ms since the epoch; the least recently used model is evicted first */
    last_used: z.number().nonnegative(),
    added_at: z.number().nonnegative(),
  })
  .strict();
export type IndexEntry = z.infer<typeof IndexEntry>;

const CacheIndex = z
  .object({
    version: z.literal(1),
    models: z.record(ModelFileName, IndexEntry),
  })
  .strict();

type Spec = z.output<typeof ModelSpec>;

export function modelPath(dir: string, folder: string, name: string): string {
  return join(dir, posix.normalize(`./${folder}`), name);
}

/**
 * Reads the index and checks it against the disk: entries whose file is gone
 * or has another size are dropped, catalog models found on disk without an
 * entry are adopted (last used = the file's mtime). A missing, unreadable or
 * invalid index is rebuilt from disk that way, never a crash.
 */
export async function loadIndex(dir: string, catalog: readonly Spec[], logger: Logger): Promise<Map<string, IndexEntry>> {
  const file = join(dir, INDEX_FILE);
  let models: Record<string, IndexEntry> = {};
  try {
    const parsed = CacheIndex.safeParse(JSON.parse(await readFile(file, 'utf8')));
    if (parsed.success) models = parsed.data.models;
    else {
      const issue = parsed.error.issues[0];
      logger.warn({ file, path: issue?.path.join('.'), reason: issue?.message }, 'model cache index is invalid; rebuilding it from disk');
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      logger.warn({ file, err: (error as Error).message }, 'model cache index is unreadable; rebuilding it from disk');
    }
  }

  const index = new Map<string, IndexEntry>();
  for (const [name, entry] of Object.entries(models)) {
    const size = await fileSize(modelPath(dir, entry.folder, name));
    if (size === entry.size) index.set(name, entry);
    else logger.info({ model: name, expected: entry.size, found: size ?? 'no file' }, 'model left the disk; dropped from the index');
  }
  for (const spec of catalog) {
    if (index.has(spec.name)) continue;
    const path = modelPath(dir, spec.folder, spec.name);
    const found = await stat(path).catch(() => undefined);
    if (!found?.isFile()) continue;
    index.set(spec.name, {
      folder: spec.folder,
      size: found.size,
      ...(spec.sha256 && { sha256: spec.sha256 }),
      last_used: found.mtimeMs,
      added_at: found.mtimeMs,
    });
    logger.info({ model: spec.name, size: found.size }, 'model found on disk; adopted');
  }
  return index;
}

/** Writes the index atomically (a temporary file renamed over it). */
export async function saveIndex(dir: string, index: ReadonlyMap<string, IndexEntry>): Promise<void> {
  const file = join(dir, INDEX_FILE);
  const temporary = `${file}.${randomUUID()}.tmp`;
  await writeFile(temporary, `${JSON.stringify({ version: 1, models: Object.fromEntries(index) }, null, 1)}\n`);
  await rename(temporary, file);
}

async function fileSize(path: string): Promise<number | undefined> {
  const found = await stat(path).catch(() => undefined);
  return found?.isFile() ? found.size : undefined;
}
