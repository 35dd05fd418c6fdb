import { NotFoundError } from '@emp/core';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ApiError } from '../errors';
import type { ApiKeyStore } from './key-store';
import { ACCESS, ANONYMOUS_OPERATOR, type Access, type Principal } from './roles';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
  }
  interface FastifyContextConfig {
    /** which roles may call the route (see ACCESS); routes without it are public */
    access?: Access;
  }
}

/** The key a request presents: `Authorization: Bearer <key>`, `X-API-Key`, or `?api_key=` (browsers cannot set headers on WebSockets or EventSource). */
export function presentedKey(request: FastifyRequest): string | undefined {
  const authorization = request.headers.authorization;
  if (authorization?.startsWith('Bearer ')) return authorization.slice(7).trim();
  const header = request.headers['x-api-key'];
  if (typeof header === 'string') return header;
  const query = request.query as Record<string, unknown> | undefined;
  return typeof query?.api_key === 'string' ? query.api_key : undefined;
}

/**
 * Authenticates every request that names an `access` group and checks its role
 * against it. With `enabled: false` (local development) every caller is an
 * anonymous operator.
 */
export const authentication = fp(async (app: FastifyInstance, options: { keys: ApiKeyStore; enabled: boolean }) => {
  app.decorateRequest('principal', null as unknown as Principal);
  app.addHook('onRequest', async (request) => {
    const access = request.routeOptions.config.access;
    if (!access) return;
    if (!options.enabled) {
      request.principal = ANONYMOUS_OPERATOR;
      return;
    }
    const key = presentedKey(request);
    if (!key) throw new ApiError(401, 'UNAUTHENTICATED', 'an API key is required: send `Authorization: Bearer <key>`');
    const principal = await options.keys.verify(key);
    if (!principal) throw new ApiError(401, 'UNAUTHENTICATED', 'unknown or revoked API key');
    request.principal = principal;
    if (!(ACCESS[access] as readonly string[]).includes(principal.role)) {
      throw new ApiError(403, 'FORBIDDEN', `role ${principal.role} may not do this (allowed: ${ACCESS[access].join(', ')})`);
    }
  });
});

/** A job of another tenant answers as if it did not exist, so that ids of other tenants' jobs reveal nothing. */
export function assertSees(principal: Principal, job: { id: string; tenant: string }): void {
  if (principal.tenant !== undefined && principal.tenant !== job.tenant) {
    throw new NotFoundError(`job ${job.id} does not exist (or its retention has passed)`);
  }
}

/** The tenant a request acts for: the key's own when it has one (asking for another is refused), else the one asked for. */
export function actingTenant(principal: Principal, requested: string | undefined): string | undefined {
  if (principal.tenant === undefined) return requested;
  if (requested !== undefined && requested !== principal.tenant) {
    throw new ApiError(403, 'FORBIDDEN', `this key belongs to tenant ${principal.tenant}; it cannot act for tenant ${requested}`);
  }
  return principal.tenant;
}
