import { z } from 'zod';
import { PoolName, ServiceName } from './requirements';
import { ValidationError } from './errors';
import { parseWith } from './validation';

export const DEFAULT_SERVICES = ['comfyui', 'comfyui-remote', 'ollama', 'openai', 'http', 'simulation'] as const;

const HOUR = 3_600_000;

/**
 * A pool by expected duration (docs/pools.md): jobs expected to run less than
 * `max_duration_s` (and at least the previous pool's cutoff) are routed here; the
 * last pool has no cutoff. `profile` is what a worker's hardware must meet to
 * register in it.
 */
export const PoolConfig = z
  .object({
    name: PoolName,
    /** exclusive upper cutoff of the expected duration (s); absent on the last pool only */
    max_duration_s: z.number().positive().max(30 * 86_400).optional(),
    /** the wait the pool aims for (s): what capacity hints and fallback policies measure against */
    target_wait_s: z.number().positive().max(86_400),
    profile: z
      .object({
        /** a worker must have at least this much GPU memory */
        min_gpu_memory_gb: z.number().positive().max(100_000).optional(),
        /** true: a worker must have a GPU (gpu_memory_gb > 0) */
        gpu: z.boolean().optional(),
      })
      .strict()
      .default({}),
    /**
     * cross-pool fallback (docs/pools.md): the pools this pool's idle workers may take jobs
     * from, in the order they look, each with its rule: the job has waited `after_s` there,
     * and is expected to take at most `max_expected_s` (so a long job never holds this pool's
     * worker for longer), `unknown_expected_s` being assumed for a job nobody estimated
     */
    fallback: z
      .array(
        z
          .object({
            from: PoolName,
            after_s: z.number().min(0).max(86_400),
            max_expected_s: z.number().positive().max(30 * 86_400).optional(),
            unknown_expected_s: z.number().positive().max(30 * 86_400).optional(),
          })
          .strict(),
      )
      .max(8)
      .default([]),
  })
  .strict();
export type PoolConfig = z.output<typeof PoolConfig>;

/** the age after which a job outranks warm ones when affinityWaitMs is 0 (the default): no deferral, and no starvation */
export const DEFAULT_AFFINITY_OVERDUE_MS = 60_000;

export const DEFAULT_POOLS: z.input<typeof PoolConfig>[] = [
  // a fast-lane worker helps standard only with jobs of a minute at most, so a fast job waits for it at most that long
  { name: 'fast', max_duration_s: 30, target_wait_s: 2, profile: {}, fallback: [{ from: 'standard', after_s: 10, max_expected_s: 60, unknown_expected_s: 60 }] },
  {
    name: 'standard',
    max_duration_s: 180,
    target_wait_s: 10,
    profile: {},
    fallback: [
      { from: 'fast', after_s: 2 },
      { from: 'heavy', after_s: 10, max_expected_s: 600 },
    ],
  },
  { name: 'heavy', target_wait_s: 10, profile: { min_gpu_memory_gb: 48 }, fallback: [{ from: 'standard', after_s: 10 }] },
];

/** Cutoffs increasing, the last pool open-ended, names unique. */
const PoolList = z
  .array(PoolConfig)
  .min(1, 'at least one pool; leave `pools` out for the default fast / standard / heavy')
  .max(32)
  .superRefine((pools, ctx) => {
    const seen = new Set<string>();
    pools.forEach((pool, i) => {
      if (seen.has(pool.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `pool '${pool.name}' is configured twice` });
      seen.add(pool.name);
      const last = i === pools.length - 1;
      if (last && pool.max_duration_s !== undefined) {
        ctx.addIssue({ code: 'custom', path: [i, 'max_duration_s'], message: `the last pool ('${pool.name}') takes every longer job, so it has no cutoff` });
      }
      if (!last && pool.max_duration_s === undefined) {
        ctx.addIssue({ code: 'custom', path: [i, 'max_duration_s'], message: `pool '${pool.name}' needs a cutoff: only the last pool has none` });
      }
      const previous = pools[i - 1]?.max_duration_s;
      if (pool.max_duration_s !== undefined && previous !== undefined && pool.max_duration_s <= previous) {
        ctx.addIssue({
          code: 'custom',
          path: [i, 'max_duration_s'],
          message: `cutoffs must increase: pool '${pool.name}' has ${pool.max_duration_s} s after '${pools[i - 1]!.name}' with ${previous} s`,
        });
      }
    });
  });

const DAY = 24 * HOUR;

export const BrokerConfig = z
  .object({
    /** key namespace, so several deployments can share one Redis */
    namespace: z.string().regex(/^[a-z][a-z0-9-]{0,31}$/).default('emp'),
    /** services jobs may ask for; anything else is refused at submit */
    services: z.array(ServiceName).min(1).default([...DEFAULT_SERVICES]),
    /** pool for jobs whose requirements name none */
    defaultPool: PoolName.default('standard'),
    maxPayloadBytes: z.number().int().positive().default(1024 * 1024),
    maxResultBytes: z.number().int().positive().default(1024 * 1024),
    /** a claimed job goes back to the queue when its worker stops renewing this lease */
    leaseMs: z.number().int().min(100).default(30_000),
    /** approximate length the event stream of each pool is trimmed to */
    eventsMaxLen: z.number().int().min(100).default(100_000),
    /** how long succeeded jobs are kept (0 = forever) */
    retentionMs: z.number().int().min(0).default(DAY),
    /** how long failed, canceled and expired jobs are kept for inspection and manual retry (0 = forever) */
    failedRetentionMs: z.number().int().min(0).default(7 * DAY),
    /** how long a job that failed on a worker is left for other workers first */
    avoidMs: z.number().int().min(0).default(10_000),
    /**
     * model affinity (docs/broker.md): how long a claim leaves a job whose models the claiming
     * worker lacks for another worker that holds them (about the download it saves). 0 (the
     * default, measured best in `emp simulate`: a worker that lacks a model downloads it rather
     * than idle) leaves no job waiting; a claim still prefers the jobs whose models it holds
     */
    affinityWaitMs: z.number().int().min(0).default(0),
    /**
     * model affinity: a job older than this outranks the jobs the claiming worker holds warm, so
     * that none starves behind them (0: never); by default affinityWaitMs, or
     * DEFAULT_AFFINITY_OVERDUE_MS when that is 0
     */
    affinityOverdueMs: z.number().int().min(0).optional(),
    idempotencyTtlMs: z.number().int().positive().default(DAY),
    /** a worker or machine silent this long is shown offline (and stays listed) */
    offlineAfterMs: z.number().int().min(100).default(30_000),
    /** an offline worker or machine is removed from the registry after this long */
    registryRetentionMs: z.number().int().min(0).default(7 * DAY),
    /**
     * most requirement classes a pool may have queued at once (a claim walks them):
     * a job that would open one more is refused with TooManyClassesError (HTTP 429)
     */
    maxQueuedClasses: z.number().int().min(1).default(10_000),
    /** most items one tick handles per kind */
    tickLimit: z.number().int().min(1).default(1_000),
    /**
     * a tick that finds its pool's previous tick older than this knows nobody
     * watched the clock meanwhile (Redis down, or no scheduler running): leases and
     * offline deadlines that ran out then get `leaseGraceMs` before they are acted
     * on. Keep it above the scheduler's longest sleep (1 s) and below `leaseMs`
     * minus the workers' heartbeat interval
     */
    clockGapMs: z.number().int().min(100).default(3_000),
    /**
     * that grace for leases: one renewal interval; by default `leaseMs / 3`, a worker's default
     * heartbeat interval (offline detection waits at least `offlineAfterMs / 2`, a machine's status interval)
     */
    leaseGraceMs: z.number().int().min(0).optional(),
    /**
     * pools by expected duration, shortest first (docs/pools.md): where a job that names no
     * pool is routed; a pool outside the list can still be named by a job or a worker
     */
    pools: PoolList.default(DEFAULT_POOLS as PoolConfig[]),
    /** executions of a duration class (or of its service) before routing goes by their p90 */
    routingMinSamples: z.number().int().min(1).max(256).default(20),
    /**
     * 'replica': a submit answers only once a replica has its job (WAIT 1), so that a failover
     * right after cannot lose it; 'off': once the master has it (asynchronous replication).
     * A submit's own `durable` option overrides it (docs/scale-out.md)
     */
    durableSubmit: z.enum(['off', 'replica']).default('off'),
    /** how long a durable submit waits for a replica before answering NOT_REPLICATED */
    durableSubmitTimeoutMs: z.number().int().min(1).max(60_000).default(1_000),
  })
  .strict()
  .superRefine((config, ctx) => {
    if (!config.pools.some((pool) => pool.name === config.defaultPool)) {
      ctx.addIssue({
        code: 'custom',
        path: ['defaultPool'],
        message: `'${config.defaultPool}' is not a configured pool (${config.pools.map((p) => p.name).join(', ')}): name one of them`,
      });
    }
    const names = new Set(config.pools.map((pool) => pool.name));
    config.pools.forEach((pool, i) => {
      pool.fallback.forEach((rule, k) => {
        if (rule.from === pool.name) {
          ctx.addIssue({ code: 'custom', path: ['pools', i, 'fallback', k, 'from'], message: `pool '${pool.name}' cannot fall back on itself` });
        } else if (!names.has(rule.from)) {
          ctx.addIssue({ code: 'custom', path: ['pools', i, 'fallback', k, 'from'], message: `'${rule.from}' is not a configured pool (${[...names].join(', ')})` });
        }
      });
    });
  });

/** The fallback rules of `pool`'s workers, as a Worker takes them (none for a pool outside the configuration). */
export function fallbackRules(config: BrokerConfig, pool: string): Array<{ pool: string; afterMs: number; maxExpectedS?: number; unknownExpectedS?: number }> {
  const rules = config.pools.find((each) => each.name === pool)?.fallback ?? [];
  return rules.map((rule) => ({ pool: rule.from, afterMs: rule.after_s * 1000, maxExpectedS: rule.max_expected_s, unknownExpectedS: rule.unknown_expected_s }));
}
export type BrokerConfig = z.output<typeof BrokerConfig>;
export type BrokerConfigInput = z.input<typeof BrokerConfig>;

export function brokerConfig(input: BrokerConfigInput = {}): BrokerConfig {
  return parseWith(BrokerConfig, input, 'broker config');
}

/**
 * The broker settings a deployment gives through the environment: EMP_POOLS (JSON
 * array of pools, see PoolConfig), EMP_DEFAULT_POOL, EMP_DURABLE_SUBMIT (off | replica)
 * and EMP_DURABLE_SUBMIT_TIMEOUT_MS. Read by `npm start` / `emp start`
 * and every `emp` command that talks to Redis, so they all route alike.
 */
export function brokerConfigFromEnv(env: Record<string, string | undefined>): BrokerConfigInput {
  const config: BrokerConfigInput = {};
  if (env.EMP_POOLS) {
    try {
      config.pools = JSON.parse(env.EMP_POOLS) as BrokerConfigInput['pools'];
    } catch (error) {
      throw new ValidationError('broker config', [{ path: 'EMP_POOLS', message: `not JSON: ${(error as Error).message}` }]);
    }
  }
  if (env.EMP_DEFAULT_POOL) config.defaultPool = env.EMP_DEFAULT_POOL;
  if (env.EMP_DURABLE_SUBMIT) config.durableSubmit = env.EMP_DURABLE_SUBMIT as BrokerConfigInput['durableSubmit'];
  if (env.EMP_DURABLE_SUBMIT_TIMEOUT_MS) config.durableSubmitTimeoutMs = Number(env.EMP_DURABLE_SUBMIT_TIMEOUT_MS);
  // checked here, so a bad variable is reported as the variable it is
  const durableVariables = ['EMP_DURABLE_SUBMIT', 'EMP_DURABLE_SUBMIT_TIMEOUT_MS'].filter((name) => env[name]);
  parseWith(BrokerConfig, config, `broker config (${['EMP_POOLS / EMP_DEFAULT_POOL', ...durableVariables].join(' / ')})`);
  return config;
}
