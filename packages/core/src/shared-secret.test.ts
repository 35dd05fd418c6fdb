import { usePrivateRedis } from '@emp/testkit/private-redis';
import { describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { sharedSecret } from './shared-secret';

const { redis } = usePrivateRedis();

describe('shared secrets', () => {
  it('the first instance to ask generates the secret; every other one, asking at the same time or later, gets the same', async () => {
    const [a, b] = await Promise.all([Broker.connect({ redis }), Broker.connect({ redis })]);
    const [first, second] = await Promise.all([sharedSecret(a, 'asset-urls'), sharedSecret(b, 'asset-urls')]);
    expect(first).toHaveLength(32);
    expect(second.equals(first)).toBe(true);
    expect((await sharedSecret(b, 'asset-urls')).equals(first)).toBe(true);
    expect(await redis.ttl(a.keys.sharedSecret('asset-urls'))).toBe(-1);
  });

  it('each namespace has its own', async () => {
    const a = await Broker.connect({ redis });
    const other = await Broker.connect({ redis, config: { namespace: 'other' } });
    expect((await sharedSecret(a, 'asset-urls')).equals(await sharedSecret(other, 'asset-urls'))).toBe(false);
  });
});
