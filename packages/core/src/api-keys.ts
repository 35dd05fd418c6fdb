import { hash as hashOf, randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { RedisClient } from './broker/types';
import { KeyLayout } from './keys';
import { TenantId } from './requirements';
import { parseWith } from './validation';

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

export interface ApiKeyRecord {
  id: string;
  role: Role;
  tenant?: string;
  name?: string;
  created_at: number;
  revoked_at?: number;
}

/** How long a verified key is trusted without asking Redis again, unless a revocation says otherwise. */
const CACHE_MS = 5_000;

/** The one-shot hash: every request's key is hashed to look it up in the cache, and a Hash object each showed in the API's profile. */
function sha256(text: string): string {
  return hashOf('sha256', text, 'hex');
}

/**
 * API keys, stored only as their SHA-256 in the hash `<ns>:apikeys` (hash ->
 * record), with `<ns>:apikey-ids` (id -> hash) for revoking by id. A key reads
 * `emp_<id>_<secret>`; the id names it in lists and logs, the secret never
 * leaves the response that created it.
 *
 * Verified keys are cached (5 s), so a request costs no Redis call for its key.
 * A revocation is published on `<ns>:apikeys:revoked` (the key id), and every
 * API server following revocations drops the key from its cache and ends the
 * live feeds it holds at once; one that lost its Redis connection drops its
 * whole cache when it is back, since it may have missed some. The cache time
 * is only the bound for a server that follows no revocations.
 */
export class ApiKeyStore {
  private readonly cache = new Map<string, { principal: Principal | null; until: number }>();
  private readonly revokedListeners = new Set<(keyId: string) => void>();
  /** revocations seen: a key read from Redis before one is not cached after it */
  private revocations = 0;

  private readonly recordsKey: string;
  private readonly idsKey: string;
  private readonly revocationsChannel: string;

  /** On a connection the caller owns; the API and the CLI get theirs from `Broker.apiKeys()`. */
  constructor(
    private readonly redis: RedisClient,
    namespace = 'emp',
    private readonly cacheMs = CACHE_MS,
  ) {
    const keys = new KeyLayout(namespace);
    this.recordsKey = keys.apiKeyRecords();
    this.idsKey = keys.apiKeyIds();
    this.revocationsChannel = keys.apiKeyRevocations();
  }

  async create(input: NewApiKey): Promise<{ key: string; record: ApiKeyRecord }> {
    const spec = parseWith(NewApiKey, input, 'API key');
    const id = randomBytes(6).toString('hex');
    const key = `emp_${id}_${randomBytes(24).toString('base64url')}`;
    const record: ApiKeyRecord = { id, role: spec.role, created_at: Date.now() };
    if (spec.tenant) record.tenant = spec.tenant;
    if (spec.name) record.name = spec.name;
    const hash = sha256(key);
    await this.redis.hset(this.recordsKey, hash, JSON.stringify(record));
    await this.redis.hset(this.idsKey, id, hash);
    return { key, record };
  }

  async list(): Promise<ApiKeyRecord[]> {
    const records = Object.values(await this.redis.hgetall(this.recordsKey)).map((text) => JSON.parse(text) as ApiKeyRecord);
    return records.sort((a, b) => a.created_at - b.created_at || a.id.localeCompare(b.id));
  }

  /** Returns false when no key has this id; revoking twice is harmless. */
  async revoke(id: string): Promise<boolean> {
    const hash = await this.redis.hget(this.idsKey, id);
    if (!hash) return false;
    const text = await this.redis.hget(this.recordsKey, hash);
    if (!text) return false;
    const record = JSON.parse(text) as ApiKeyRecord;
    record.revoked_at ??= Date.now();
    await this.redis.hset(this.recordsKey, hash, JSON.stringify(record));
    this.forget(id);
    await this.redis.publish(this.revocationsChannel, id);
    return true;
  }

  /**
   * Subscribes (on a connection of its own) to revocations made anywhere, by
   * another server or the CLI, so they take effect here at once. Returns the
   * function that stops following.
   */
  async followRevocations(): Promise<() => Promise<void>> {
    const subscriber = this.redis.duplicate();
    subscriber.on('error', () => undefined); // it reconnects by itself
    let connected = false;
    subscriber.on('ready', () => {
      // back after a disconnection: revocations published meanwhile were not heard
      if (connected) this.cache.clear();
      connected = true;
    });
    subscriber.on('message', (channel: string, id: string) => {
      if (channel === this.revocationsChannel) this.forget(id);
    });
    await subscriber.subscribe(this.revocationsChannel);
    return async () => {
      await subscriber.quit().catch(() => subscriber.disconnect());
    };
  }

  /** Called with a key's id when it is revoked (here or, while following revocations, anywhere). */
  onRevoked(listener: (keyId: string) => void): () => void {
    this.revokedListeners.add(listener);
    return () => this.revokedListeners.delete(listener);
  }

  private forget(id: string): void {
    this.revocations += 1;
    for (const [cached, entry] of this.cache) if (entry.principal?.keyId === id) this.cache.delete(cached);
    for (const listener of this.revokedListeners) listener(id);
  }

  /** Whether `key` was verified as valid within the cache time (no Redis call): such a request need not be limited by its address. */
  isCachedValid(key: string): boolean {
    if (!/^emp_[0-9a-f]{12}_[A-Za-z0-9_-]{32}$/.test(key)) return false;
    const cached = this.cache.get(sha256(key));
    return cached !== undefined && cached.principal !== null && cached.until > Date.now();
  }

  /** The principal of a presented key, or null when it is unknown, malformed or revoked (looked up by its hash, never compared as text). */
  async verify(key: string): Promise<Principal | null> {
    if (!/^emp_[0-9a-f]{12}_[A-Za-z0-9_-]{32}$/.test(key)) return null;
    const hash = sha256(key);
    const cached = this.cache.get(hash);
    if (cached && cached.until > Date.now()) return cached.principal;
    const revocations = this.revocations;
    const text = await this.redis.hget(this.recordsKey, hash);
    let principal: Principal | null = null;
    if (text) {
      const record = JSON.parse(text) as ApiKeyRecord;
      if (!record.revoked_at) principal = { keyId: record.id, role: record.role, tenant: record.tenant || undefined };
    }
    if (this.cache.size > 10_000) this.cache.clear();
    if (revocations === this.revocations) this.cache.set(hash, { principal, until: Date.now() + this.cacheMs });
    return principal;
  }
}
