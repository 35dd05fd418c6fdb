import { readFileSync } from 'node:fs';
import { z } from 'zod';

/**
 * The version `emp --version` prints: the repository root's package.json, read
 * once when `emp` starts (a file read rather than a JSON import, so it needs no
 * compiler setting and cannot go stale in a build).
 */
export const EMP_VERSION: string = z
  .object({ version: z.string().min(1) })
  .parse(JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'))).version;
