import rateLimit from '@fastify/rate-limit';
import type { RedisClient } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';

export interface RateLimitOptions {
  /** requests per key (or per client address without a key) per window */
  max: number;
  windowMs: number;
}

/**
 * Per-key request limits, counted in Redis so that every API instance shares
 * them. Runs after authentication (preHandler), so a key is limited as itself
 * whatever address it calls from; public routes (health, metrics, docs) are not limited.
 */
export const rateLimiting = fp(async (app: FastifyInstance, options: RateLimitOptions & { redis: RedisClient; namespace: string }) => {
  await app.register(rateLimit, {
    global: true,
    hook: 'preHandler',
    max: options.max,
    timeWindow: options.windowMs,
    redis: options.redis,
    nameSpace: `${options.namespace}:ratelimit:`,
    allowList: (request) => !request.routeOptions.config.access,
    keyGenerator: (request) => (request.principal ? `key:${request.principal.keyId}` : `ip:${request.ip}`),
    errorResponseBuilder: (_request, context) => ({
      statusCode: context.statusCode,
      code: 'RATE_LIMITED',
      message: `rate limit of ${context.max} requests per ${context.after} reached; retry after ${context.after}`,
    }),
  });
});
