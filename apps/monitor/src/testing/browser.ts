import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { type Browser, type Page, chromium } from 'playwright-core';
import { MONITOR_ROOT } from '../bundle';

/** Debian's Chromium; the browser tests never download a browser of their own. */
export const CHROMIUM = process.env.EMP_CHROMIUM || '/usr/bin/chromium';
export const INSTALL_HINT = 'apt-get install -y chromium (as root; .ci/run does it on CI)';

/** Where screenshots go (git-ignored); look at them after a run. */
export const ARTIFACTS_DIR = join(MONITOR_ROOT, 'test-artifacts');

/**
 * Whether the browser tests can run here. Outside CI a missing Chromium skips
 * them with how to install it; under CI=true it is a failure, never a skip.
 */
export function browserTestsSkipped(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined;
  if (process.env.CI === 'true') return undefined; // launching fails with the reason
  return `browser tests skipped: no Chromium at ${CHROMIUM}; install it with \`${INSTALL_HINT}\``;
}

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (CI=true: the browser tests must run): ${INSTALL_HINT}`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

export async function screenshot(page: Page, name: string, options: { fullPage?: boolean } = {}): Promise<string> {
  await mkdir(ARTIFACTS_DIR, { recursive: true });
  const path = join(ARTIFACTS_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: options.fullPage ?? true });
  return path;
}
