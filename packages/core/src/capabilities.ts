import { z } from 'zod';
import { canonicalJson, contentId } from './canonical';
import { Hardware, Label, ModelName, PoolName, ServiceName, TenantId, constraintTree } from './requirements';

/** What a worker can do; a job runs only on a worker whose capabilities satisfy its requirement class. */
export const WorkerCapabilities = z
  .object({
    services: z.array(ServiceName).min(1).max(32),
    hardware: Hardware.default({}),
    /** models each service can serve; '*' = any (the worker fetches what it lacks) */
    models: z.record(ServiceName, z.union([z.literal('*'), z.array(ModelName).max(10_000)])).default({}),
    custom_nodes: z.array(Label).max(1_000).default([]),
    tenants: z
      .object({
        /** when given, only these tenants; an empty list would admit nobody, so it is refused (omit it to admit everyone) */
        allowed: z.array(TenantId).min(1, 'an empty allowed list admits no tenant; leave it out to admit every tenant').max(1_000).optional(),
        denied: z.array(TenantId).max(1_000).optional(),
      })
      .strict()
      .optional(),
    /** a worker reserved for one workflow runs only that workflow's jobs */
    workflow_id: z.string().min(1).max(200).optional(),
    /** arbitrary attributes that jobs' positive and negative constraints are checked against */
    labels: constraintTree(10_000).default({}),
  })
  .strict();
export type WorkerCapabilities = z.input<typeof WorkerCapabilities>;

export const WorkerId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/, 'a worker id is letters, digits, _ . : -, at most 128 characters');
export const MachineId = WorkerId;

export const WorkerRegistration = z
  .object({
    id: WorkerId,
    pool: PoolName,
    machine_id: MachineId.default('local'),
    capabilities: WorkerCapabilities,
    concurrency: z.number().int().min(1).max(1_000).default(1),
    version: z.string().max(100).optional(),
    hostname: z.string().max(255).optional(),
    /**
     * set when this registration makes the worker a borrower in `pool` for cross-pool
     * fallback: its own pool, where it waits and is woken; here it only takes jobs
     * through claimFallback, under its pool's policy
     */
    home_pool: PoolName.optional(),
  })
  .strict()
  .refine((r) => r.home_pool === undefined || r.home_pool !== r.pool, { message: 'home_pool must differ from pool: a worker borrows only from other pools', path: ['home_pool'] });
export type WorkerRegistration = z.input<typeof WorkerRegistration>;

/** Most models one report names, all lists together: a claim's cost stays bounded however much a disk holds. */
export const MAX_REPORTED_MODELS = 256;

/**
 * The models a worker holds (Broker.reportModels): loaded in its service's memory
 * (warm), on local disk, and downloading now. A claim prefers the jobs whose
 * models the worker holds (docs/broker.md, "Model affinity"). A model named in
 * several lists counts in the best of them.
 */
export const WorkerModels = z
  .object({
    loaded: z.array(ModelName).max(MAX_REPORTED_MODELS).default([]),
    on_disk: z.array(ModelName).max(MAX_REPORTED_MODELS).default([]),
    downloading: z.array(ModelName).max(MAX_REPORTED_MODELS).default([]),
  })
  .strict()
  .refine((m) => new Set([...m.loaded, ...m.on_disk, ...m.downloading]).size <= MAX_REPORTED_MODELS, {
    message: `a report names at most ${MAX_REPORTED_MODELS} models`,
  });
export type WorkerModels = z.output<typeof WorkerModels>;
export type WorkerModelsInput = z.input<typeof WorkerModels>;

/** Model tiers as stored (`wmodels:<worker>`, `holders:<model>`): each model once, at the best list it is in. */
export function modelTiers(models: WorkerModels): Map<string, 1 | 2 | 3> {
  const tiers = new Map<string, 1 | 2 | 3>();
  for (const [list, tier] of [[models.loaded, 3], [models.on_disk, 2], [models.downloading, 1]] as const) {
    for (const model of list) if (!tiers.has(model)) tiers.set(model, tier);
  }
  return tiers;
}

export interface CapabilityProfile {
  id: string;
  definition: string;
}

/** Workers with equal capabilities share one profile, and a match verdict is cached per profile and class. */
export function capabilityProfile(capabilities: z.output<typeof WorkerCapabilities>): CapabilityProfile {
  const definition = canonicalJson(capabilities);
  return { id: contentId(definition), definition };
}
