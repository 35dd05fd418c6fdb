import type { Cluster, Redis } from 'ioredis';
import { z } from 'zod';
import type { BrokerConfigInput } from '../config';
import { JOB_STATES, JobState } from '../job';
import { type JobRequirements, PoolName, ServiceName, TenantId } from '../requirements';

/** A connection to Redis (or Redis Cluster) as ioredis gives it; the broker's own stays inside core. */
export type RedisClient = Redis | Cluster;

/** What a worker holds while it runs an attempt; every call about the job carries it. */
export interface Lease {
  pool: string;
  jobId: string;
  /** the attempt's fencing token: calls with an older token are refused */
  token: string;
  workerId: string;
}

export interface ClaimedJob {
  lease: Lease;
  id: string;
  attempt: number;
  service: string;
  tenant: string;
  payload: unknown;
  requirements: JobRequirements;
  priority: number;
  workflowId?: string;
  step?: number;
  executionTimeoutMs?: number;
  submittedAt: number;
  /** the W3C trace context stored at submit (tracing on): the attempt's spans continue its trace */
  traceparent?: string;
}

export type ClaimResult =
  | { job: ClaimedJob }
  | {
      job: null;
      /** when a job this worker skipped (it just failed here, or it is left for a worker holding its models) becomes its to take */
      retryAt?: number;
      workerState: string;
    };

export type WorkerSignal =
  | { type: 'wake'; requirementClass: string }
  | { type: 'cancel' | 'expired' | 'timeout'; jobId: string }
  /** the pool's shard count changed (setShardCount): read it again, register in new shards, wait on them */
  | { type: 'shards' };

export type DropVerdict = 'canceled' | 'expired' | 'lost';

export interface ClassStats {
  requirementClass: string;
  definition: Record<string, unknown>;
  routable: boolean;
  depth: number;
  headJob?: string;
  headSubmittedAt?: number;
}

export interface QueueStats {
  pool: string;
  classes: ClassStats[];
  /** delayed, retrying and leased jobs with a timer */
  timers: number;
  idleWorkers: number;
  onlineWorkers: number;
  offlineWorkers: number;
}

/** Live jobs of one service in one pool, per state. */
export interface ServiceJobCounts {
  service: string;
  /** waiting to be claimed, delayed ones included */
  queued: number;
  /** queued jobs whose run_at has not come yet */
  delayed: number;
  starting: number;
  running: number;
  retrying: number;
}

/** A worker or machine hash as the registry holds it: field -> value as stored. */
export type RegistryEntry = { id: string } & Record<string, string>;

export interface BrokerOptions {
  redis: RedisClient;
  config?: BrokerConfigInput;
  /** a virtual clock (the fleet simulator); by default every function uses Redis TIME */
  clock?: () => number;
  /** skip loading the function library (someone else already did) */
  skipLibraryLoad?: boolean;
}

/** Filters of `Broker.listJobs`; every one is optional. */
export const JobListFilter = z
  .object({
    pool: PoolName.optional(),
    tenant: TenantId.optional(),
    states: z.array(JobState).max(JOB_STATES.length).optional(),
    services: z.array(ServiceName).max(32).optional(),
    /** submitted at or after (ms) */
    since: z.number().int().nonnegative().optional(),
    /** submitted at or before (ms) */
    until: z.number().int().nonnegative().optional(),
    /** from the previous page's `next_cursor` */
    cursor: z.string().max(400).optional(),
    limit: z.number().int().min(1).max(500).default(50),
  })
  .strict();
export type JobListFilter = z.input<typeof JobListFilter>;

export interface JobListItem {
  id: string;
  pool: string;
  state: JobState;
  submitted_at: number;
}

export interface JobListPage {
  /** newest first */
  jobs: JobListItem[];
  /** pass it back for the next page; absent on the last one */
  next_cursor?: string;
}

export const MACHINE_ACTIONS = ['drain', 'restart', 'shutdown', 'prefetch', 'evict', 'load'] as const;
export const MachineAction = z.enum(MACHINE_ACTIONS);
export type MachineAction = z.infer<typeof MachineAction>;
/** The actions on the machine's models (its cache on disk; load: into an idle GPU's memory): each names one model. */
export const MODEL_ACTIONS = ['prefetch', 'evict', 'load'] as const;
export type ModelAction = (typeof MODEL_ACTIONS)[number];
export type ProcessAction = Exclude<MachineAction, ModelAction>;

/**
 * An operator's command for a machine: drain, restart (the machine, or with
 * `service` one service's processes) or shut down; or prefetch a model into
 * its model cache (downloaded, not pinned: evictable by LRU afterwards), or
 * evict one from it (refused while a job holds it or it downloads), or load
 * one it holds into an idle GPU's memory through the worker's connector, so
 * the next job of it starts without a load (refused while a job runs there,
 * and by a backend that cannot load a model without a job: ComfyUI).
 */
export type MachineCommandInput =
  | { action: ProcessAction; service?: string; by?: string; reason?: string }
  | { action: ModelAction; model: string; by?: string; reason?: string };

export const MachineCommandOutcome = z.enum(['ok', 'failed']);
export type MachineCommandOutcome = z.infer<typeof MachineCommandOutcome>;

/** An operator's command as its machine agent reads it from the machine's command stream. */
export interface MachineCommand {
  /** stream id: acknowledged with machineCommandDone, resumed after */
  id: string;
  /** one of MACHINE_ACTIONS; anything else is acknowledged as failed */
  action: string;
  service?: string;
  /** prefetch, evict and load: the model */
  model?: string;
  by?: string;
  reason?: string;
  ts: number;
}

/** One output line of a supervised process, as the machine agent writes it to `machine-logs:<machine>`. */
export interface MachineLogEntry {
  id: string;
  process: string;
  stream: 'stdout' | 'stderr';
  line: string;
  ts: number;
}

export interface PausedService {
  service: string;
  since: number;
  by?: string;
  reason?: string;
}
