import { createHmac, timingSafeEqual } from 'node:crypto';
import { type Broker, sharedSecret } from '@emp/core';
import { ApiError } from '../errors';

/** Query parameters of a signed URL: when it expires (ms since the epoch) and the HMAC of the asset key and that time. */
export const EXPIRES_PARAM = 'expires';
export const SIGNATURE_PARAM = 'signature';

/** A configured secret shorter than this is refused: it would be guessable. */
const MIN_SECRET_BYTES = 32;

/**
 * Signs and checks asset URLs that work without a key until they expire
 * (HMAC-SHA256 of the asset key and the expiry). The secret is the configured
 * one, or the one every instance on the same Redis shares, so that any API
 * instance accepts the URLs any other signed.
 */
export class AssetUrlSigner {
  private constructor(private readonly secret: Buffer) {}

  static async create(broker: Broker, configured: string | undefined): Promise<AssetUrlSigner> {
    if (configured !== undefined) {
      if (Buffer.byteLength(configured) < MIN_SECRET_BYTES) {
        throw new Error(`the asset URL secret must be at least ${MIN_SECRET_BYTES} bytes long`);
      }
      return new AssetUrlSigner(Buffer.from(configured));
    }
    return new AssetUrlSigner(await sharedSecret(broker, 'asset-urls'));
  }

  private mac(key: string, expiresAt: number): Buffer {
    return createHmac('sha256', this.secret).update(`asset\n${key}\n${expiresAt}`).digest();
  }

  /** The query string (without `?`) that lets anyone fetch `key` until `expiresAt` (ms). */
  query(key: string, expiresAt: number): string {
    return `${EXPIRES_PARAM}=${expiresAt}&${SIGNATURE_PARAM}=${this.mac(key, expiresAt).toString('base64url')}`;
  }

  /** Throws 403 with what is wrong unless `signature` was made here (or by a sibling instance) for `key` and `expires` has not passed. */
  verify(key: string, expires: unknown, signature: unknown, now = Date.now()): void {
    if (typeof expires !== 'string' || typeof signature !== 'string') {
      throw new ApiError(403, 'FORBIDDEN', `a signed URL carries both '${EXPIRES_PARAM}' and '${SIGNATURE_PARAM}' once each`);
    }
    const expiresAt = /^\d{1,15}$/.test(expires) ? Number(expires) : Number.NaN;
    const presented = Buffer.from(signature, 'base64url');
    const expected = Number.isNaN(expiresAt) ? undefined : this.mac(key, expiresAt);
    if (!expected || presented.length !== expected.length || !timingSafeEqual(presented, expected)) {
      throw new ApiError(403, 'FORBIDDEN', 'the signature does not match this asset and expiry: the URL was altered or signed with another secret');
    }
    if (expiresAt <= now) {
      throw new ApiError(403, 'FORBIDDEN', `this signed URL expired at ${new Date(expiresAt).toISOString()}; ask for a new one (POST /v1/assets/sign)`);
    }
  }
}
