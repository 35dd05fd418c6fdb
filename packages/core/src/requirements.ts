import { z } from 'zod';
import { canonicalJson, contentId } from './canonical';

export const ServiceName = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,31}$/, 'a service name is lowercase letters, digits and dashes, starting with a letter, at most 32 characters');
export const PoolName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'a pool name is lowercase letters, digits and dashes, at most 32 characters');
export const TenantId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'a tenant id is letters, digits, _ . -, at most 64 characters');
export const ModelName = z.string().min(1).max(200);
export const Label = z.string().min(1).max(100);

type Scalar = string | number | boolean;
export type ConstraintValue = Scalar | Scalar[] | { [key: string]: ConstraintValue };

const Scalar = z.union([z.string().max(200), z.number().finite(), z.boolean()]);
export const ConstraintValue: z.ZodType<ConstraintValue> = z
  .lazy(() => z.union([Scalar, z.array(Scalar).max(64), z.record(Label, ConstraintValue)]))
  // a component of its own in the OpenAPI document, which a recursive shape needs
  .meta({ id: 'ConstraintValue' });
export type Constraints = { [label: string]: ConstraintValue };

/** Constraints nest at most this deep (`{ a: { b: 1 } }` is 2). */
export const MAX_CONSTRAINT_DEPTH = 8;

/**
 * Why a labels/constraints tree is too large, or null. Walked without recursion
 * and before the recursive schema, so a hostile value can neither overflow the
 * stack here nor reach Lua's cjson (which refuses 1,000 levels mid-function).
 */
function treeTooLarge(value: unknown, maxEntries: number): string | null {
  const stack: Array<[unknown, number]> = [[value, 1]];
  let entries = 0;
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (node === null || typeof node !== 'object') continue;
    if (depth > MAX_CONSTRAINT_DEPTH) return `nested deeper than ${MAX_CONSTRAINT_DEPTH} levels`;
    for (const child of Object.values(node)) {
      if (++entries > maxEntries) return `more than ${maxEntries} labels and values in all`;
      stack.push([child, depth + 1]);
    }
  }
  return null;
}

/** Labels (a worker's) or constraints (a job's): a bounded tree of scalars, scalar sets and objects. */
export function constraintTree(maxEntries: number): z.ZodType<Constraints> {
  return z
    .unknown()
    .superRefine((value, ctx) => {
      const problem = treeTooLarge(value, maxEntries);
      if (problem) ctx.addIssue({ code: 'custom', message: problem, abort: true });
    })
    .pipe(z.record(Label, ConstraintValue)) as unknown as z.ZodType<Constraints>;
}
export const Constraints = constraintTree(1_000);

export const Hardware = z
  .object({
    gpu_memory_gb: z.number().nonnegative().max(100_000).optional(),
    cpu_cores: z.number().nonnegative().max(100_000).optional(),
    ram_gb: z.number().nonnegative().max(1_000_000).optional(),
  })
  .strict();

/** What a job needs from the worker that runs it. */
export const JobRequirements = z
  .object({
    pool: PoolName.optional(),
    hardware: Hardware.optional(),
    models: z.array(ModelName).max(32).optional(),
    custom_nodes: z.array(Label).max(64).optional(),
    /** strict: only a worker dedicated to this job's tenant may run it */
    isolation: z.enum(['shared', 'strict']).optional(),
    /** the worker must have all of these (arrays: all elements; numbers: at least; objects: recursively) */
    constraints: Constraints.optional(),
    /** the worker must have none of these */
    exclude: Constraints.optional(),
  })
  .strict();
export type JobRequirements = z.infer<typeof JobRequirements>;

export interface RequirementClass {
  id: string;
  /** canonical JSON of everything that decides which workers may run the job */
  definition: string;
}

/**
 * The requirement class of a job: jobs with equal classes may run on the same
 * workers, so the queue is indexed by class and a claim looks at class heads.
 * Only what decides that is in it: service, hardware, models, custom nodes,
 * constraints and isolation. The tenant is in it only under strict isolation
 * (a dedicated worker); otherwise tenants and workflow ids, which most workers
 * ignore, would make a class per tenant or per workflow, and a claim's walk
 * over classes as long as the queue. A worker restricted to some tenants or to
 * one workflow finds its jobs in the class's lanes (see docs/broker.md).
 */
export function requirementClass(input: {
  service: string;
  tenant: string;
  requirements: JobRequirements;
}): RequirementClass {
  const { pool: _pool, ...matched } = input.requirements;
  const definition = canonicalJson({
    ...matched,
    service: input.service,
    tenant: matched.isolation === 'strict' ? input.tenant : undefined,
  });
  return { id: contentId(definition), definition };
}

/**
 * `requirementClass` of a job parsed with its schema (plain JSON data, so its JSON text says
 * all the class depends on), remembered by that text: a bulk submit's jobs mostly share a
 * few classes, and the canonical form and its hash took 1.3 us a job.
 */
export function requirementClassOfParsed(input: { service: string; tenant: string; requirements: JobRequirements }): RequirementClass {
  const { requirements } = input;
  const text = JSON.stringify(requirements);
  // a large tree is hashed each time rather than kept as a memo key
  if (text.length > PARSED_CLASS_KEY_MAX) return requirementClass(input);
  const key = `${input.service}\u0000${requirements.isolation === 'strict' ? input.tenant : ''}\u0000${text}`;
  let cls = parsedClasses.get(key);
  if (cls === undefined) {
    if (parsedClasses.size >= PARSED_CLASSES_KEPT) parsedClasses.clear();
    cls = requirementClass(input);
    parsedClasses.set(key, cls);
  }
  return cls;
}
const parsedClasses = new Map<string, RequirementClass>();
/** Most classes remembered at once (the memo starts over past it). */
const PARSED_CLASSES_KEPT = 10_000;
/** Longest requirements text (JSON) remembered. */
const PARSED_CLASS_KEY_MAX = 2_048;
