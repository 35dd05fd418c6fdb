import { TenantId } from '@emp/core';
import { z } from 'zod';

/**
 * client: submits and follows its own tenant's jobs; worker: reads queues,
 * workers and machines; service: an external system that runs jobs and may
 * complete or fail them on a worker's behalf; operator: everything, including
 * operator actions and the whole live feed.
 */
export const ROLES = ['client', 'worker', 'service', 'operator'] as const;
export const Role = z.enum(ROLES);
export type Role = z.infer<typeof Role>;

/** Who is calling. A principal with a tenant sees and touches only that tenant's jobs. */
export interface Principal {
  keyId: string;
  role: Role;
  tenant?: string;
  /** admitted by a signed asset URL, not by a key: it may fetch that one asset and nothing else */
  signedUrl?: true;
}

/** With auth off (local development) every request acts as this. */
export const ANONYMOUS_OPERATOR: Principal = { keyId: 'anonymous', role: 'operator' };

export const NewApiKey = z
  .object({
    role: Role,
    /** required for clients; binds any other role but operator to one tenant */
    tenant: TenantId.optional(),
    name: z.string().min(1).max(100).optional(),
  })
  .strict()
  .refine((key) => key.role !== 'client' || key.tenant !== undefined, { path: ['tenant'], message: 'a client key belongs to a tenant' })
  .refine((key) => key.role !== 'operator' || key.tenant === undefined, { path: ['tenant'], message: 'an operator key sees every tenant; it has none' });
export type NewApiKey = z.input<typeof NewApiKey>;

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
