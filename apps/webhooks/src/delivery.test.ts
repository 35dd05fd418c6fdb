import { lookup } from 'node:dns/promises';
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { parseRetryAfter, sendWebhook } from './delivery';
import { TestReceiver } from './testing/receiver';

const REFUSE = { allowPrivate: false, timeoutMs: 2_000 };

describe('the SSRF guard at delivery', () => {
  it.each([
    ['http://127.0.0.1:9/hook', /loopback/],
    ['http://[::1]:9/hook', /loopback/],
    ['http://10.1.2.3/hook', /private/],
    ['http://169.254.169.254/latest/meta-data/', /link-local/],
    ['http://100.64.0.1/hook', /carrier-grade NAT/],
    ['http://metadata.google.internal/computeMetadata/v1/', /metadata/],
    ['http://localhost:9/hook', /this machine/],
    ['file:///etc/passwd', /scheme file/],
  ])('refuses %s before sending anything', async (url, why) => {
    const result = await sendWebhook(url, {}, '{}', REFUSE);
    expect(result.refused).toBe(true);
    expect(result.error).toMatch(why);
  });

  it('refuses a name that resolves to a loopback address, judged on what it resolves to', async () => {
    const receiver = await new TestReceiver().start();
    try {
      // this machine's name resolves to a loopback or private address here; a resolver stands in where it does not
      const own = hostname();
      const resolved = await lookup(own).catch(() => undefined);
      const name = resolved && /^(127\.|10\.|192\.168\.|::1$)/.test(resolved.address) ? own : 'rebind.test';
      const resolve = name === own ? undefined : async () => [{ address: '127.0.0.1', family: 4 }];
      const result = await sendWebhook(`http://${name}:${receiver.port}/hook`, {}, '{}', { ...REFUSE, ...(resolve ? { resolve } : {}) });
      expect(result).toMatchObject({ refused: true, error: expect.stringMatching(new RegExp(`^refused: host ${name} resolves to \\S+ \\((loopback|private) address\\)`)) });
      expect(receiver.arrived).toEqual([]);
      // the same name is reached when private addresses are allowed (local development)
      const allowed = await sendWebhook(`http://${name}:${receiver.port}/hook`, {}, '{}', { allowPrivate: true, timeoutMs: 2_000, ...(resolve ? { resolve } : {}) });
      expect(allowed.status).toBe(200);
    } finally {
      await receiver.stop();
    }
  });

  it('does not follow redirects and gives up after the timeout', async () => {
    const receiver = await new TestReceiver().start();
    try {
      receiver.answer = () => ({ status: 302, headers: { location: 'http://169.254.169.254/' } });
      expect(await sendWebhook(receiver.url, {}, '{}', { allowPrivate: true, timeoutMs: 2_000 })).toMatchObject({ status: 302 });
      expect(receiver.arrived).toHaveLength(1);
      receiver.answer = () => 'hang';
      const timedOut = await sendWebhook(receiver.url, {}, '{}', { allowPrivate: true, timeoutMs: 200 });
      expect(timedOut.status).toBeUndefined();
      expect(timedOut.error).toMatch(/no answer within 200 ms/);
      expect(timedOut.latencyMs).toBeGreaterThanOrEqual(190);
    } finally {
      await receiver.stop();
    }
  });

  it('reads Retry-After as seconds or as an HTTP date', () => {
    expect(parseRetryAfter('120')).toBe(120_000);
    expect(parseRetryAfter(new Date(Date.now() + 30_000).toUTCString())).toBeGreaterThan(28_000);
    expect(parseRetryAfter('soon')).toBeUndefined();
  });
});
