import { z } from 'zod';
import { PoolName, ServiceName } from './requirements';
import { parseWith } from './validation';

export const DEFAULT_SERVICES = ['comfyui', 'comfyui-remote', 'ollama', 'openai', 'http', 'simulation'] as const;

const HOUR = 3_600_000;
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
     * model affinity (docs/broker.md, "Model affinity"): how long a job is left for a
     * worker that holds its models loaded or on disk before a worker that would have to
     * download them takes it (about the download time it saves); also the age after
     * which a job outranks the jobs a worker holds warm. 0: no job is left waiting (a
     * claim still prefers the jobs whose models the worker holds)
     */
    affinityWaitMs: z.number().int().min(0).default(30_000),
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
  })
  .strict();
export type BrokerConfig = z.output<typeof BrokerConfig>;
export type BrokerConfigInput = z.input<typeof BrokerConfig>;

export function brokerConfig(input: BrokerConfigInput = {}): BrokerConfig {
  return parseWith(BrokerConfig, input, 'broker config');
}
