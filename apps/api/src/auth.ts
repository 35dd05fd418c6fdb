import { createHash, randomBytes } from 'node:crypto';
import { type Job, type RedisClient, TenantId, parseWith } from '@emp/core';
import { z } from 'zod';
import { ApiError } from './errors';

/**
 * client: its own tenant's jobs only; worker: what a worker does (progress, fleet
 * views); service: completes or fails jobs on behalf of an external system;
 * operator: everything, operator actions included.
 */
export const ROLES = ['client', 'worker', 'service', 'operator'] as const;
export const Role = z.enum(ROLES);
export type Role = z.infer<typeof Role>;

/** Who is calling. With auth off, every caller is an operator. */
export interface Principal {
  keyId: string;
  role: Role;
  /** the only tenant a client key may act for */
  tenant?: string;
}

export const ANONYMOUS_OPERATOR: Principal = { keyId: 'auth-off', role: 'operator' };

const StoredKey = z.object({
  id: z.string(),
  role: Role,
  tenant: TenantId.optional(),
  name: z.string().max(200).optional(),
  created_at: z.number(),
});
export type ApiKeyInfo = z.infer<typeof StoredKey>;

export const CreateKeyInput = z
  .object({
    role: Role,
    /** required for client keys: the tenant whose jobs the key may see */
    tenant: TenantId.optional(),
    name: z.string().max(200).optional(),
  })
  .strict()
  .refine((input) => input.role !== 'client' || input.tenant !== undefined, {
    path: ['tenant'],
    message: 'a client key needs the tenant it acts for',
  });

const KEY_PATTERN = /^emp_[a-z]+_[A-Za-z0-9_-]{20,100}$/;

/**
 * API keys, stored hashed (sha256) in one Redis hash, so a leaked dump holds no
 * usable key. The key itself is shown once, when it is created.
 */
export class ApiKeys {
  constructor(
    private readonly redis: RedisClient,
    private readonly namespace = 'emp',
  ) {}

  private get hashKey(): string {
    return `${this.namespace}:apikeys`;
  }

  async create(input: z.input<typeof CreateKeyInput>): Promise<{ key: string; info: ApiKeyInfo }> {
    const parsed = parseWith(CreateKeyInput, input, 'api key');
    const key = `emp_${parsed.role}_${randomBytes(24).toString('base64url')}`;
    const info: ApiKeyInfo = {
      id: digest(key).slice(0, 12),
      role: parsed.role,
      ...(parsed.tenant ? { tenant: parsed.tenant } : {}),
      ...(parsed.name ? { name: parsed.name } : {}),
      created_at: Date.now(),
    };
    await this.redis.hset(this.hashKey, digest(key), JSON.stringify(info));
    return { key, info };
  }

  async list(): Promise<ApiKeyInfo[]> {
    const all = await this.redis.hgetall(this.hashKey);
    return Object.values(all)
      .map((text) => parseWith(StoredKey, JSON.parse(text), 'stored api key'))
      .sort((a, b) => a.created_at - b.created_at);
  }

  /** Revokes by key id (as `list` shows it); returns whether a key was revoked. */
  async revoke(id: string): Promise<boolean> {
    const all = await this.redis.hgetall(this.hashKey);
    for (const [hash, text] of Object.entries(all)) {
      if ((JSON.parse(text) as { id?: string }).id === id) return (await this.redis.hdel(this.hashKey, hash)) === 1;
    }
    return false;
  }

  async verify(key: string): Promise<Principal | null> {
    if (!KEY_PATTERN.test(key)) return null;
    const text = await this.redis.hget(this.hashKey, digest(key));
    if (!text) return null;
    const info = parseWith(StoredKey, JSON.parse(text), 'stored api key');
    return { keyId: info.id, role: info.role, ...(info.tenant ? { tenant: info.tenant } : {}) };
  }
}

function digest(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** The key a request carries: `Authorization: Bearer <key>`, or `?api_key=` where headers cannot be set (browser WebSockets). */
export function presentedKey(headers: Record<string, string | string[] | undefined>, query: unknown): string | undefined {
  const header = headers.authorization;
  if (typeof header === 'string' && header.startsWith('Bearer ')) return header.slice(7).trim();
  const fromQuery = (query as { api_key?: unknown } | undefined)?.api_key;
  return typeof fromQuery === 'string' ? fromQuery : undefined;
}

export function requireRole(principal: Principal, allowed: readonly Role[], action: string): void {
  if (!allowed.includes(principal.role)) {
    throw new ApiError(403, 'FORBIDDEN', `a ${principal.role} key may not ${action}`);
  }
}

/**
 * A client sees only its tenant's jobs; another tenant's job answers exactly
 * like a job that does not exist, so ids cannot be probed.
 */
export function mayAccess(principal: Principal, job: Pick<Job, 'id' | 'tenant'>): boolean {
  return principal.role !== 'client' || principal.tenant === job.tenant;
}

export function notFound(id: string): ApiError {
  return new ApiError(404, 'NOT_FOUND', `job ${id} does not exist`);
}
