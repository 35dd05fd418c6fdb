import { readFileSync } from 'node:fs';

/**
 * The version `emp --version` prints: the repository root's package.json, read
 * once when `emp` starts (a file read rather than a JSON import, so it needs no
 * compiler setting and cannot go stale in a build; checked by hand, as every
 * command needs it and zod would add a tenth of a second to `emp --help`).
 */
export const EMP_VERSION: string = readVersion(new URL('../../../package.json', import.meta.url));

function readVersion(file: URL): string {
  const { version } = JSON.parse(readFileSync(file, 'utf8')) as { version?: unknown };
  if (typeof version !== 'string' || version === '') throw new Error(`${file.pathname} has no version`);
  return version;
}
