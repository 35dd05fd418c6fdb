import { NotFoundError } from '@emp/core';
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';
import { ApiError } from '../errors';
import type { ApiKeyStore } from '@emp/core';
import type { RateLimits } from '../rate-limit';
import { ACCESS, ANONYMOUS_OPERATOR, type Access, type Principal, type RouteAccess, isRouteAccess } from './roles';
import { EXPIRES_PARAM, SIGNATURE_PARAM, type AssetUrlSigner } from './signed-urls';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
  }
  interface FastifyContextConfig {
    /** who may call the route: a group of ACCESS, or 'public'; required (a route without it fails the server's start) */
    access?: RouteAccess;
    /** a signed URL of the asset named by the route's `*` parameter also admits a request, without a key */
    signedUrls?: boolean;
  }
  interface FastifyInstance {
    /** every route registered so far, with its access rule */
    registeredRoutes(): RegisteredRoute[];
  }
}

export interface RegisteredRoute {
  method: string;
  url: string;
  access: RouteAccess | undefined;
}

/**
 * Records every route with its access rule and refuses to start (onReady)
 * while one lacks a valid rule: a route is never open by forgetting to say
 * who may call it. Checked once all plugins ran, since a plugin's own routes
 * (Swagger UI's) get their rule from an onRoute hook of the plugin's scope,
 * which runs after this one. Register it before any route.
 */
export const requireRouteAccess = fp(async (app: FastifyInstance) => {
  const routes: RouteOptions[] = [];
  app.addHook('onRoute', (route) => {
    routes.push(route);
  });
  app.decorate('registeredRoutes', () =>
    routes.flatMap((route) => [route.method].flat().map((method) => ({ method, url: route.url, access: route.config?.access }))),
  );
  app.addHook('onReady', async () => {
    const unruled = app.registeredRoutes().filter((route) => !isRouteAccess(route.access));
    if (unruled.length > 0) {
      const names = unruled.map((route) => `${route.method} ${route.url} (${route.access === undefined ? 'no access rule' : `unknown rule '${route.access}'`})`);
      throw new Error(`every route must name who may call it (config.access: one of ${['public', ...Object.keys(ACCESS)].join(', ')}): ${names.join('; ')}`);
    }
  });
});

/** The key a request presents: `Authorization: Bearer <key>`, `X-API-Key`, or `?api_key=` (browsers cannot set headers on WebSockets or EventSource). */
export function presentedKey(request: FastifyRequest): string | undefined {
  const authorization = request.headers.authorization;
  if (authorization?.startsWith('Bearer ')) return authorization.slice(7).trim();
  const header = request.headers['x-api-key'];
  if (typeof header === 'string') return header;
  const query = request.query as Record<string, unknown> | undefined;
  return typeof query?.api_key === 'string' ? query.api_key : undefined;
}

/** Whether the request carries a signed URL's parameters (a route admitting signed URLs then checks them instead of a key). */
function presentsSignature(request: FastifyRequest): boolean {
  const query = request.query as Record<string, unknown> | undefined;
  return query?.[SIGNATURE_PARAM] !== undefined || query?.[EXPIRES_PARAM] !== undefined;
}

/** What a request admitted by a signed URL acts as: no key, no tenant; the asset route serves it that one asset. */
const SIGNED_URL_PRINCIPAL: Principal = { keyId: 'signed-url', role: 'client', signedUrl: true };

/**
 * Authenticates every request to a route that is not 'public' and checks its
 * role against the route's group. A route admitting signed URLs takes a valid
 * signature instead of a key (a bad or expired one is 403, whatever else the
 * request carries). With `enabled: false` (local development) every caller is
 * an anonymous operator.
 *
 * Rate limits run here, in this order, so that nothing escapes them: a request
 * no cached valid key vouches for is counted by its address before its key is
 * looked up (unknown keys, no key, signed URLs, unmatched paths), and a known
 * key is counted before its role is checked and before its body is read or
 * validated, so its refused and invalid requests count too.
 */
export const authentication = fp(async (app: FastifyInstance, options: { keys: ApiKeyStore; enabled: boolean; signer?: AssetUrlSigner; limits?: RateLimits }) => {
  app.decorateRequest('principal', null as unknown as Principal);
  app.addHook('onRequest', async (request, reply) => {
    const config = request.routeOptions.config;
    if (!request.is404 && config.access === 'public') return;
    const key = presentedKey(request);
    const signed = !request.is404 && config.signedUrls === true && presentsSignature(request);
    if (options.limits && options.enabled && (signed || key === undefined || !options.keys.isCachedValid(key))) {
      await options.limits.byAddress(request, reply);
    }
    // no route matched: the not-found handler answers, nothing to protect
    if (request.is404) return;
    // a route without a rule cannot be registered (requireRouteAccess); should one slip by, only operators pass
    const access = config.access ?? 'operate';
    if (signed) {
      if (!options.signer) throw new ApiError(403, 'FORBIDDEN', 'this server signs no URLs');
      const query = request.query as Record<string, unknown>;
      options.signer.verify((request.params as Record<string, string>)['*'] ?? '', query[EXPIRES_PARAM], query[SIGNATURE_PARAM]);
      request.principal = SIGNED_URL_PRINCIPAL;
      return;
    }
    if (!options.enabled) {
      request.principal = ANONYMOUS_OPERATOR;
      await options.limits?.byKey(request, reply);
      return;
    }
    if (!key) throw new ApiError(401, 'UNAUTHENTICATED', 'an API key is required: send `Authorization: Bearer <key>`');
    const principal = await options.keys.verify(key);
    if (!principal) throw new ApiError(401, 'UNAUTHENTICATED', 'unknown or revoked API key');
    request.principal = principal;
    await options.limits?.byKey(request, reply);
    if (!(ACCESS[access as Access] as readonly string[]).includes(principal.role)) {
      throw new ApiError(403, 'FORBIDDEN', `role ${principal.role} may not do this (allowed: ${ACCESS[access as Access].join(', ')})`);
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
