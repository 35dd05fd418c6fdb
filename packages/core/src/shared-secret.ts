import { randomBytes } from 'node:crypto';
import type { Broker } from './broker';
import { contextOf } from './broker/broker';

/** Secrets that several instances must agree on; one name per purpose. */
export type SharedSecretName = 'asset-urls';

/**
 * The secret named `name`, the same for every instance on this Redis: the
 * first to ask generates 32 random bytes and keeps them (SET NX, no expiry);
 * the others read what it kept, so what one instance signs another verifies.
 */
export async function sharedSecret(broker: Broker, name: SharedSecretName): Promise<Buffer> {
  const { redis, keys } = contextOf(broker);
  const key = keys.sharedSecret(name);
  await redis.set(key, randomBytes(32).toString('base64'), 'NX');
  const kept = await redis.get(key);
  if (!kept) throw new Error(`shared secret ${name} vanished from ${key} right after it was set`);
  return Buffer.from(kept, 'base64');
}
