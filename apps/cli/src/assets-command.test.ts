import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runEmp } from './testing/emp-process';

let dir: string;
let stack: ApiStack;
let env: Record<string, string>;
let assetKey: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emp-cli-assets-'));
  stack = await startApiStack({ worker: false, server: { assetsDir: dir } });
  const { key } = await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' });
  env = { EMP_API_URL: stack.url, EMP_API_KEY: key };
  const { id } = await stack.broker.submit({ service: 'simulation', tenant: 'acme' });
  assetKey = `${id}/1/out.png`;
  await mkdir(join(dir, id, '1'), { recursive: true });
  await writeFile(join(dir, assetKey), 'png bytes');
});
afterAll(async () => {
  await stack?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('emp assets sign', () => {
  it('prints a URL that works without a key until --expires has passed', async () => {
    const before = Date.now();
    const result = await runEmp(['assets', 'sign', assetKey, '--expires', '90s', '--json'], env);
    expect(result.code).toBe(0);
    const signed = JSON.parse(result.stdout) as { url: string; expires_at: number };
    expect(signed.expires_at).toBeGreaterThanOrEqual(before + 90_000);
    expect(signed.expires_at).toBeLessThan(Date.now() + 91_000);
    const response = await fetch(signed.url);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('png bytes');

    const plain = await runEmp(['assets', 'sign', `${stack.url}/v1/assets/${assetKey}`], env);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1\/assets\/\S+\?expires=\d+&signature=\S+\n$/);
    expect(plain.stderr).toMatch(/works without a key until \d{4}-/);
  });

  it('says what is wrong: no key (exit 1), a bad --expires (exit 2), an asset of another tenant (exit 1)', async () => {
    const keyless = await runEmp(['assets', 'sign', assetKey], { EMP_API_URL: stack.url, EMP_API_KEY: undefined as unknown as string });
    expect(keyless.code).toBe(1);
    expect(keyless.stderr).toMatch(/the API answered 401 UNAUTHENTICATED: .*EMP_API_KEY/);
    const bad = await runEmp(['assets', 'sign', assetKey, '--expires', '8d'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/invalid --expires: at most 7 days/);
    const { key } = await stack.server.app.apiKeys.create({ role: 'client', tenant: 'globex' });
    const other = await runEmp(['assets', 'sign', assetKey], { ...env, EMP_API_KEY: key });
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/the API answered 404 NOT_FOUND: asset .* does not exist/);
  });
});
