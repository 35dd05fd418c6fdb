import { NewApiKey, type Principal, ROLES, Role } from '@emp/core';

// roles, principals and the key store are a Redis contract the CLI shares: they live in core
export { NewApiKey, type Principal, ROLES, Role };

/** With auth off (local development) every request acts as this. */
export const ANONYMOUS_OPERATOR: Principal = { keyId: 'anonymous', role: 'operator' };

/** Who may call what: the roles each group of routes admits. */
export const ACCESS = {
  submit: ['client', 'service', 'operator'],
  readJobs: ['client', 'service', 'operator'],
  changeJobs: ['client', 'service', 'operator'],
  delegatedCompletion: ['service', 'operator'],
  fleet: ['worker', 'service', 'operator'],
  operate: ['operator'],
  identify: ROLES,
} as const satisfies Record<string, readonly Role[]>;
export type Access = keyof typeof ACCESS;

/** What a route admits: one group of ACCESS, or 'public' (anyone, without a key). Every route names one; a route without is refused at start-up. */
export type RouteAccess = Access | 'public';

export function isRouteAccess(value: unknown): value is RouteAccess {
  return value === 'public' || (typeof value === 'string' && Object.hasOwn(ACCESS, value));
}
