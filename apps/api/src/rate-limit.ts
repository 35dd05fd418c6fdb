import rateLimit from '@fastify/rate-limit';
import type { Broker } from '@emp/core';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ANONYMOUS_OPERATOR } from './auth/roles';
import { ApiError } from './errors';

export interface RateLimitOptions {
  /** requests per API key per window; every request of the key counts, refused and invalid ones included */
  max: number;
  /**
   * requests per client address per window that no valid key vouches for (no key, an unknown or revoked
   * one, a signed asset URL), counted before authentication
   */
  addressMax: number;
  windowMs: number;
}

export const DEFAULT_RATE_LIMITS: RateLimitOptions = { max: 6_000, addressMax: 600, windowMs: 60_000 };

/** The two checks the authentication hook makes, in its order: by address before a key is looked at, by key once it is known. */
export interface RateLimits {
  byAddress(request: FastifyRequest, reply: FastifyReply): Promise<void>;
  byKey(request: FastifyRequest, reply: FastifyReply): Promise<void>;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** the counter the current rate-limit check increments */
    rateLimitBucket: string;
  }
}

/**
 * Request limits counted in Redis (`<ns>:ratelimit:<bucket>`), so that every
 * API instance shares them; @fastify/rate-limit speaks ioredis itself, so core
 * lends it the broker's connection and the key prefix (`Broker.rateLimitStore`). Both run in the authentication hook (onRequest),
 * before the body is read or validated: per address for requests without a
 * known key, so unknown keys cannot be tried without bound, and per key for
 * every request of the key, whatever its answer. Public routes are not limited.
 */
export async function rateLimits(app: FastifyInstance, options: RateLimitOptions & { store: ReturnType<Broker['rateLimitStore']> }): Promise<RateLimits> {
  app.decorateRequest('rateLimitBucket', '');
  await app.register(rateLimit, {
    global: false,
    max: (_request, bucket) => (bucket.startsWith('address:') ? options.addressMax : options.max),
    timeWindow: options.windowMs,
    redis: options.store.redis,
    nameSpace: options.store.prefix,
    keyGenerator: (request) => request.rateLimitBucket,
  });
  const check = app.createRateLimit();

  async function count(request: FastifyRequest, reply: FastifyReply, bucket: string, what: string): Promise<void> {
    request.rateLimitBucket = bucket;
    const outcome = await check(request);
    if (outcome.isAllowed) return;
    reply.header('x-ratelimit-limit', outcome.max);
    reply.header('x-ratelimit-remaining', outcome.remaining);
    reply.header('x-ratelimit-reset', outcome.ttlInSeconds);
    if (!outcome.isExceeded) return;
    reply.header('retry-after', outcome.ttlInSeconds);
    throw new ApiError(
      429,
      'RATE_LIMITED',
      `rate limit of ${outcome.max} requests per ${options.windowMs / 1_000} s ${what} reached; retry in ${outcome.ttlInSeconds} s`,
    );
  }

  return {
    byAddress: (request, reply) => count(request, reply, `address:${request.ip}`, 'for requests from this address without a valid API key'),
    byKey: (request, reply) => {
      const { principal } = request;
      // auth off: every caller is the anonymous operator, limited per address as a key would be
      if (principal.keyId === ANONYMOUS_OPERATOR.keyId) return count(request, reply, `local:${request.ip}`, 'for this address');
      return count(request, reply, `key:${principal.keyId}`, 'for this API key');
    },
  };
}
