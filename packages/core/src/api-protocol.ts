import { z } from 'zod';
import type { ValidationIssue } from './errors';
import { Job, JobId, JobState } from './job';
import { ShardCount, ShardName } from './pool-shards';
import { ModelName, PoolName, ServiceName } from './requirements';

/**
 * The wire shapes of the HTTP and WebSocket API that both the server
 * (apps/api) and the SDK (packages/client) use, defined once here beside the
 * job schemas they are made of.
 */

const Ms = z.number().int();

/** How long each phase of a job took, like RunPod's delayTime / executionTime. */
export const JobTimings = z
  .object({
    /** submitted -> claimed by a worker */
    queue_ms: Ms.optional(),
    /** claimed -> running: model download and load */
    start_ms: Ms.optional(),
    /** running -> finished */
    execution_ms: Ms.optional(),
    /** submitted -> finished */
    total_ms: Ms.optional(),
  })
  .strict();
export type JobTimings = z.infer<typeof JobTimings>;

/** A job as the API answers it (lists leave the payload out). */
export const JobView = Job.omit({ payload: true })
  .extend({
    payload: z.unknown().optional(),
    timings: JobTimings,
    /**
     * while queued: estimated ms until a worker takes the job, from the service's
     * recent run times and the capacity of the workers able to run it; absent
     * without such history or without a capable online worker
     */
    eta_ms: z.number().int().nonnegative().optional(),
  })
  .meta({ id: 'JobView', description: "A job: the core's Job plus its phase timings; lists leave the payload out" });
export type JobView = z.infer<typeof JobView>;

/** The answer to a submit: the job, and whether the Idempotency-Key matched an earlier identical request. */
/**
 * A job as the API answers it (GET /v1/jobs/:id) and webhooks carry it: the
 * core's Job plus its phase timings (payload left out for lists).
 */
export function jobView(job: Job, options: { payload?: boolean } = { payload: true }): JobView {
  const t = job.timestamps;
  const timings: JobTimings = {};
  if (t.claimed_at !== undefined) timings.queue_ms = t.claimed_at - t.submitted_at;
  if (t.claimed_at !== undefined && t.started_at !== undefined) timings.start_ms = t.started_at - t.claimed_at;
  if (t.started_at !== undefined && t.finished_at !== undefined) timings.execution_ms = t.finished_at - t.started_at;
  if (t.finished_at !== undefined) timings.total_ms = t.finished_at - t.submitted_at;
  // copied key by key, the payload last: an object rest and a spread with one key more cost several
  // times as much (the API answers every submit with this view)
  const view = {} as JobView;
  for (const key in job) if (key !== 'payload') (view as Record<string, unknown>)[key] = job[key as keyof Job];
  view.timings = timings;
  if (options.payload) view.payload = job.payload;
  return view;
}

export const SubmittedJob = JobView.extend({ duplicate: z.boolean() }).meta({ id: 'SubmittedJob' });
export type SubmittedJob = z.infer<typeof SubmittedJob>;

/** What a submit accepted (the broker's answer, and a batch's per-job result). */
export const SubmitResult = z
  .object({
    id: JobId,
    pool: PoolName,
    /** true when the idempotency key matched an earlier identical request */
    duplicate: z.boolean(),
    /** false while no worker that ever registered could run the job */
    routable: z.boolean(),
  })
  .strict();
export type SubmitResult = z.infer<typeof SubmitResult>;

const Issue: z.ZodType<ValidationIssue> = z.object({ path: z.string(), message: z.string() }).strict();
const ErrorDetail = z.object({ code: z.string(), message: z.string(), issues: z.array(Issue).optional() }).strict();

/** Every error answer: a stable code, a message for humans, and for bad input each field's path and reason. */
export const ApiErrorBody = z.object({ error: ErrorDetail }).strict().meta({ id: 'ApiError' });
export type ApiErrorBody = z.infer<typeof ApiErrorBody>;

/** A batch's answer: per job, in order, what was accepted or that job's own error. */
export const BatchSubmitResponse = z.object({ results: z.array(z.union([SubmitResult, ApiErrorBody])) }).strict();
export type BatchResult = z.infer<typeof BatchSubmitResponse>['results'][number];

export const JobPage = z
  .object({
    /** newest first, without payloads */
    jobs: z.array(JobView),
    /** pass it back as ?cursor for the next page; absent on the last one */
    next_cursor: z.string().optional(),
  })
  .strict();
export type JobPage = z.infer<typeof JobPage>;

/** An event's fields on the wire: its stream id is a cursor; fields flattened, JSON ones parsed. */
export const EventFields = z
  .object({
    id: z.string(),
    pool: PoolName,
    /** the pool's shard whose stream holds the event, when it is not the pool's first (`standard_2`): cursors are per `shard ?? pool` */
    shard: ShardName.optional(),
    ts: Ms,
    job: JobId.optional(),
    state: z.string().optional(),
    progress: z.unknown().optional(),
    /** on a job's terminal event, for subscribers of that job */
    result: z.unknown().optional(),
    error: z.unknown().optional(),
  })
  .catchall(z.unknown());
export type EventFields = z.infer<typeof EventFields>;

/** One event (history, SSE, SDK): `type` is job.queued, job.starting, job.running, job.progress, job.succeeded, job.failed, job.canceled, job.expired, job.retrying, worker.*, machine.*, ... */
export const EventView = EventFields.extend({ type: z.string() }).meta({ id: 'Event' });
export type EventView = z.infer<typeof EventView>;

export const JobEventsPage = z
  .object({
    /** oldest first */
    events: z.array(EventView),
    /** the last stream entry looked at: pass it as ?after to continue */
    cursor: z.string(),
  })
  .strict();
export type JobEventsPage = z.infer<typeof JobEventsPage>;

export const CancelResponse = z.object({ id: JobId, state: JobState, changed: z.boolean() }).strict();
export type CancelResponse = z.infer<typeof CancelResponse>;
export const RetryResponse = z.object({ id: JobId, state: JobState }).strict();
export type RetryResponse = z.infer<typeof RetryResponse>;
export const CompleteResponse = z.object({ id: JobId, state: z.literal('succeeded') }).strict();
export const FailResponse = z.object({ id: JobId, outcome: z.enum(['queued', 'retrying', 'failed']) }).strict();

/** A configured pool (docs/pools.md) with its queue, its workers and the duration classes its cutoffs take. */
export const PoolView = z
  .object({
    name: PoolName,
    /** expected durations this pool takes: from (the previous pool's cutoff) up to, not including, max_duration_s (s) */
    min_duration_s: z.number().nonnegative(),
    max_duration_s: z.number().positive().optional(),
    target_wait_s: z.number().positive(),
    profile: z.object({ min_gpu_memory_gb: z.number().positive().optional(), gpu: z.boolean().optional() }).strict(),
    /** whether jobs that name no pool and have no estimate go here */
    default: z.boolean(),
    depth: z.number().int().nonnegative(),
    /** age of the oldest queued job (ms) */
    oldest_age_ms: Ms.optional(),
    workers: z.object({ online: z.number().int(), idle: z.number().int(), busy: z.number().int() }).strict(),
    /** duration classes whose learned p90 falls in this pool, most executions first (at most 10) */
    durations: z.array(
      z
        .object({
          dclass: z.string(),
          service: ServiceName,
          models: z.array(z.string()),
          p50_s: z.number().nonnegative(),
          p90_s: z.number().nonnegative(),
          samples: z.number().int().nonnegative(),
        })
        .strict(),
    ),
  })
  .strict()
  .meta({ id: 'Pool' });
export type PoolView = z.infer<typeof PoolView>;

export const PoolReport = z
  .object({
    /** Redis's clock when the report was made */
    now: Ms,
    /** executions a class needs before routing trusts its durations (fewer: its service's, else the default pool) */
    min_samples: z.number().int().positive(),
    pools: z.array(PoolView),
  })
  .strict()
  .meta({ id: 'PoolReport' });
export type PoolReport = z.infer<typeof PoolReport>;

/**
 * One shard: the keys that share one hash tag, so one cluster slot on one master.
 * A pool's shards are `{<pool>}` and `{<pool>_<k>}` (pool-shards.ts); webhook delivery is one (`{_webhooks}`).
 */
export const ShardView = z
  .object({
    /** the hash tag every key of the shard carries: `{<pool>}` for shard 0, `{<pool>_<k>-<n>}` for shard k (keys.ts, shardHashTag), or `{_webhooks}` */
    shard: z.string(),
    /** the shard's name: `<pool>` for shard 0, `<pool>_<k>`, or `_webhooks` (what job ids and events name) */
    name: z.string(),
    /** what the shard holds: a pool's jobs, workers and machines, or webhook delivery */
    kind: z.enum(['pool', 'webhooks']),
    /** the pool whose shard it is (absent for webhooks) */
    pool: PoolName.optional(),
    /** the cluster slot of the hash tag (CLUSTER KEYSLOT); on one Redis the slot it would have on a cluster */
    slot: z.number().int().min(0).max(16383),
    /** host:port of the master serving the slot (on one Redis: that server) */
    node: z.string(),
    /** jobs queued (as the queue report counts them); for webhooks: messages not yet delivered or given up */
    queued: z.number().int().nonnegative(),
    /** jobs held by a worker (starting or running); absent for webhooks */
    running: z.number().int().nonnegative().optional(),
    /** online workers registered in the pool; absent for webhooks */
    workers: z.number().int().nonnegative().optional(),
    /** keys in the slot (CLUSTER COUNTKEYSINSLOT on its master); absent on one Redis, where no such count is cheap */
    keys: z.number().int().nonnegative().optional(),
  })
  .strict()
  .meta({ id: 'Shard' });
export type ShardView = z.infer<typeof ShardView>;

/** One Redis server holding data: a cluster master or replica, or the one Redis. */
export const ShardNodeView = z
  .object({
    /** host:port */
    node: z.string(),
    role: z.enum(['master', 'replica', 'single node']),
    /** the master a replica copies */
    replica_of: z.string().optional(),
    /** cluster slots it serves (a replica: 0; one Redis: all 16384) */
    slots: z.number().int().nonnegative(),
    /** the shards it serves (a replica: 0) and their queued jobs */
    shards: z.number().int().nonnegative(),
    queued: z.number().int().nonnegative(),
    /** INFO memory used_memory (bytes) */
    used_memory_bytes: z.number().int().nonnegative().optional(),
    /** INFO stats instantaneous_ops_per_sec */
    ops_per_sec: z.number().nonnegative().optional(),
    /** why INFO did not answer, when it did not (the node is down or unreachable) */
    error: z.string().optional(),
  })
  .strict()
  .meta({ id: 'ShardNode' });
export type ShardNodeView = z.infer<typeof ShardNodeView>;

/**
 * What Redis holds about a pool's shards (`<ns>:shard-counts`; pool-shards.ts): `count`, the
 * shards submits are placed on; `serve`, the shards workers claim in (more than `count` while
 * the shards a reshard took out of placement still hold jobs). PUT /v1/pools/:pool/shards answers it.
 */
/** `host:port` of a Redis node, as CLUSTER NODES names it */
export const NodeAddress = z.string().regex(/^[^\s:]+:[0-9]{1,5}$/, 'a node is host:port, as CLUSTER NODES names it (127.0.0.1:7003)');

/** A shard put on a master by a grow with `onto`: its slot and that master. */
export const ShardPlacement = z.object({ shard: ShardName, slot: z.number().int().min(0).max(16383), node: NodeAddress }).strict().meta({ id: 'ShardPlacement' });
export type ShardPlacement = z.infer<typeof ShardPlacement>;

export const PoolShards = z
  .object({
    pool: PoolName,
    count: ShardCount,
    serve: ShardCount,
    /** a grow with `onto`: where each added shard was put */
    moved: z.array(ShardPlacement).optional(),
  })
  .strict()
  .meta({ id: 'PoolShards' });
export type PoolShards = z.infer<typeof PoolShards>;

/** A pool in the shard report: its shard counts and the names of the shards its workers serve (shard 0 is the pool's own name). */
export const PoolShardsView = PoolShards.extend({
  /** the served shards' names, shard 0 first: `standard`, `standard_1`, ... (a hash tag is the name in braces) */
  shards: z.array(ShardName),
})
  .strict()
  .meta({ id: 'PoolShardsView' });
export type PoolShardsView = z.infer<typeof PoolShardsView>;

/** Where each shard lives and what it holds, and each Redis server's load (GET /v1/shards, `emp shards`). */
export const ShardReport = z
  .object({
    /** one Redis, or a Redis Cluster */
    mode: z.enum(['single', 'cluster']),
    /** every pool (the pools that have seen a job or a worker, and the configured ones) by name, with its shard counts and served shards */
    pools: z.array(PoolShardsView),
    /** every pool's shards by pool name and shard index (the served ones, and any other the pool ever used), then the webhook shard */
    shards: z.array(ShardView),
    /** masters by address, then replicas */
    nodes: z.array(ShardNodeView),
  })
  .strict()
  .meta({ id: 'ShardReport' });
export type ShardReport = z.infer<typeof ShardReport>;

const QueueDepth = { depth: z.number().int().nonnegative(), oldest_age_ms: Ms.optional() };

/** Queue depth and age of the oldest job per pool, service and requirement class. */
export const QueueReport = z
  .object({
    /** Redis's clock when the report was made */
    now: Ms,
    pools: z.array(
      z
        .object({
          pool: PoolName,
          ...QueueDepth,
          services: z.array(z.object({ service: ServiceName, ...QueueDepth, paused: z.boolean() }).strict()),
          /** classes with waiting jobs */
          classes: z.array(
            z
              .object({
                requirement_class: z.string(),
                definition: z.record(z.string(), z.unknown()),
                routable: z.boolean(),
                ...QueueDepth,
                head_job: JobId.optional(),
              })
              .strict(),
          ),
          paused: z.array(
            z.object({ service: ServiceName, since: Ms, by: z.string().optional(), reason: z.string().optional() }).strict(),
          ),
          /** delayed, retrying and deadline-bound jobs waiting on a timer */
          on_timers: z.number().int().nonnegative(),
          workers: z.object({ online: z.number().int(), idle: z.number().int(), offline: z.number().int() }).strict(),
        })
        .strict(),
    ),
  })
  .strict()
  .meta({ id: 'QueueReport' });
export type QueueReport = z.infer<typeof QueueReport>;

/**
 * Upper bounds (ms) of the buckets of a WaitDigest's histogram, a 1-2-5 series
 * from 10 ms to an hour; the last bucket holds the waits above the last bound.
 * Part of the stored queue history: change it only with a new field name.
 */
export const WAIT_BUCKET_BOUNDS_MS = [10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 3_600_000] as const;

/** Submit-to-start waits of the jobs that started in an interval: percentiles, and a histogram that merges across intervals. */
export const WaitDigest = z
  .object({
    count: z.number().int().nonnegative(),
    p50_ms: Ms,
    p95_ms: Ms,
    max_ms: Ms,
    /** jobs per bucket of WAIT_BUCKET_BOUNDS_MS (the one after the last bound included), trailing empty buckets left off */
    buckets: z.array(z.number().int().nonnegative()).max(WAIT_BUCKET_BOUNDS_MS.length + 1),
  })
  .strict()
  .meta({ id: 'WaitDigest' });
export type WaitDigest = z.infer<typeof WaitDigest>;

/** Jobs that ended, per terminal state (a state left out: none). */
export const FinishedCounts = z
  .object({
    succeeded: z.number().int().nonnegative(),
    failed: z.number().int().nonnegative(),
    canceled: z.number().int().nonnegative(),
    expired: z.number().int().nonnegative(),
  })
  .partial()
  .strict()
  .meta({ id: 'FinishedCounts' });
export type FinishedCounts = z.infer<typeof FinishedCounts>;

/**
 * What went through a queue in the interval a sample covers (the sampling
 * interval before its slot): jobs that ended and the waits of jobs that started.
 * `finished` absent on a pool's sample: the instance that wrote it did not watch
 * the whole interval (unknown, not zero); on a service: none ended. `wait` absent: none started.
 */
const QueueFlow = { finished: FinishedCounts.optional(), wait: WaitDigest.optional() };

/** One pool's queues at one sampling slot: what the queue report said of the pool, its services and its requirement classes, and what went through them. */
export const QueueSample = z
  .object({
    /** when it was taken (Redis's clock); one sample per pool and sampling slot */
    ts: Ms,
    pool: PoolName,
    ...QueueDepth,
    ...QueueFlow,
    services: z.array(z.object({ service: ServiceName, ...QueueDepth, ...QueueFlow }).strict()),
    classes: z.array(z.object({ requirement_class: z.string(), ...QueueDepth }).strict()),
  })
  .strict()
  .meta({ id: 'QueueSample' });
export type QueueSample = z.infer<typeof QueueSample>;

/** Which queue history: the last hour sample by sample, or the last day in coarser slots. */
export const QUEUE_HISTORY_RANGES = ['hour', 'day'] as const;
export type QueueHistoryRange = (typeof QUEUE_HISTORY_RANGES)[number];

/** Throughput and waits over the samples of a history answer. */
export const QueueFlowSummary = z
  .object({
    finished: FinishedCounts,
    /** how much of the range the samples with known throughput cover */
    covered_ms: z.number().int().nonnegative(),
    /** jobs that ended per minute over covered_ms (0 when nothing is covered) */
    jobs_per_min: z.number().nonnegative(),
    wait: WaitDigest.optional(),
  })
  .strict()
  .meta({ id: 'QueueFlowSummary' });
export type QueueFlowSummary = z.infer<typeof QueueFlowSummary>;

/** Queue samples over (at most) the last hour or day, as the API instances recorded them. */
export const QueueHistory = z
  .object({
    now: Ms,
    range: z.enum(QUEUE_HISTORY_RANGES).optional(),
    /** how far apart the samples are (the sampling interval; for a day, a coarser slot) */
    interval_ms: z.number().int().positive(),
    /** oldest first, per pool in order of pool name */
    samples: z.array(QueueSample),
    /** over every sample answered, and per pool */
    summary: z.object({ all: QueueFlowSummary, pools: z.array(QueueFlowSummary.extend({ pool: PoolName })) }).strict().optional(),
  })
  .strict()
  .meta({ id: 'QueueHistory' });
export type QueueHistory = z.infer<typeof QueueHistory>;

/** What the registry keeps of every worker and machine (values as stored in its hash; agents may add fields). */
const RegistryEntryView = z
  .object({
    pool: PoolName,
    id: z.string(),
    state: z.string().optional(),
    state_since: z.string().optional(),
    last_seen: z.string().optional(),
    registered_at: z.string().optional(),
    /** `<field>: <why>` for each stored field that cannot be read (core/registry.ts); absent when every one can */
    problems: z.array(z.string()).optional(),
  })
  .catchall(z.unknown());

/** A registered worker, its capabilities parsed. */
export const WorkerView = RegistryEntryView.extend({
  machine: z.string().optional(),
  concurrency: z.string().optional(),
  version: z.string().optional(),
  hostname: z.string().optional(),
  profile: z.string().optional(),
  capabilities: z.record(z.string(), z.unknown()).optional(),
  /** the models it last reported holding (Broker.reportModels; docs/broker.md, "Model affinity"); absent when it reported none or went offline */
  models: z
    .object({ loaded: z.array(z.string()), on_disk: z.array(z.string()), downloading: z.array(z.string()) })
    .strict()
    .optional(),
  models_at: z.string().optional(),
}).meta({ id: 'Worker' });
export const WorkerList = z.object({ now: Ms, workers: z.array(WorkerView) }).strict();
export type WorkerList = z.infer<typeof WorkerList>;

/** A registered machine with its last status snapshot and last operator command. */
export const MachineView = RegistryEntryView.extend({
  last_command: z.string().optional(),
  last_command_id: z.string().optional(),
  last_command_service: z.string().optional(),
  last_command_at: z.string().optional(),
}).meta({ id: 'Machine' });
export const MachineList = z.object({ now: Ms, machines: z.array(MachineView) }).strict();
export type MachineList = z.infer<typeof MachineList>;

/** A machine's recent process transitions and operator commands from its pool's event stream. */
export const MachineEventsPage = z
  .object({
    machine: z.string(),
    pool: PoolName,
    /** machine.process, machine.command and machine.command.done events, oldest first */
    events: z.array(EventView),
    /** stream entries looked at, newest backwards */
    scanned: z.number().int().nonnegative(),
    /** false when the scan stopped at its bound with older entries unread: older events of the machine may exist */
    complete: z.boolean(),
  })
  .strict();
export type MachineEventsPage = z.infer<typeof MachineEventsPage>;

export const PauseResponse = z
  .object({ service: ServiceName, paused: z.boolean(), pools: z.array(z.object({ pool: PoolName, changed: z.boolean() }).strict()) })
  .strict();
export const MachineCommandResponse = z
  .object({ command_id: z.string(), machine: z.string(), pool: PoolName, action: z.string(), service: ServiceName.optional(), model: ModelName.optional() })
  .strict();

/** Longest and default life of a signed asset URL (POST /v1/assets/sign), in seconds. */
export const SIGNED_ASSET_URL_MAX_S = 7 * 24 * 3600;
export const SIGNED_ASSET_URL_DEFAULT_S = 3600;

/** Asks for a URL of one asset that anyone may fetch, without a key, until it expires. */
export const SignAssetRequest = z
  .object({
    /** the asset's key, e.g. `standard.m3kx9a0b1c2d3e4f/1/9-ComfyUI_00001_.png` */
    key: z.string().min(1).max(1_000).optional(),
    /** or the URL a job's result gave for it (`<api>/v1/assets/<key>`) */
    url: z.string().url().max(2_000).optional(),
    expires_in_s: z.number().int().min(1).max(SIGNED_ASSET_URL_MAX_S).default(SIGNED_ASSET_URL_DEFAULT_S),
  })
  .strict()
  .refine((request) => (request.key === undefined) !== (request.url === undefined), { message: 'name the asset by exactly one of key or url' })
  .meta({ id: 'SignAssetRequest' });
export type SignAssetRequest = z.input<typeof SignAssetRequest>;

export const SignedAssetUrl = z
  .object({
    /** the asset's URL with `expires` (ms) and `signature` query parameters */
    url: z.string(),
    /** ms since the epoch */
    expires_at: Ms,
  })
  .strict()
  .meta({ id: 'SignedAssetUrl' });
export type SignedAssetUrl = z.infer<typeof SignedAssetUrl>;

const U64_MAX = 18_446_744_073_709_551_615n;
/** A Redis stream id: two unsigned 64-bit numbers (Redis refuses larger ones, which would read as a server error). */
export const StreamId = z
  .string()
  .regex(/^\d{1,20}-\d{1,20}$/, 'an event id looks like 1700000000000-0')
  // (refinements run after a failed pattern too: only well-formed ids are read as numbers)
  .refine((id) => !/^\d+-\d+$/.test(id) || id.split('-').every((part) => BigInt(part) <= U64_MAX), 'an event id is two numbers of at most 18446744073709551615');

/** What a WebSocket client may send on /v1/live. */
export const LiveClientMessage = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('subscribe'),
      job: JobId,
      /** resume after this event id, or 'start' for every event of the job; left out: a snapshot, then what follows */
      after: z.union([z.literal('start'), StreamId]).optional(),
    })
    .strict(),
  z.object({ type: z.literal('unsubscribe'), job: JobId }).strict(),
  z
    .object({
      /** every event of one workflow (its workflow.* events and its steps' job events), until it ends */
      type: z.literal('subscribe_workflow'),
      workflow: JobId,
      /** resume after this event id; 'start' (the default) for every event since its submission */
      after: z.union([z.literal('start'), StreamId]).optional(),
    })
    .strict(),
  z.object({ type: z.literal('unsubscribe_workflow'), workflow: JobId }).strict(),
  z
    .object({
      type: z.literal('monitor'),
      /** resume each shard's stream (a pool's name is its shard 0) after its event id; left out: a snapshot, then what follows */
      after: z.record(ShardName, StreamId).optional(),
    })
    .strict(),
]);
export type LiveClientMessage = z.input<typeof LiveClientMessage>;

/**
 * Sent before the events of a resumed feed (SSE, WebSocket) when events after
 * the client's cursor were trimmed from the pool's stream before it read them:
 * what it holds may be stale, so it should read the job (or the snapshot) again.
 * Events from `first_id` on follow as usual.
 */
export interface EventsMissed {
  type: 'events.missed';
  pool: string;
  /** for a job's feed: the job */
  job?: string;
  /** for a workflow's feed: the workflow */
  workflow?: string;
  /** the cursor the feed resumed from */
  after: string;
  /** the oldest event still kept (absent when the stream is empty) */
  first_id?: string;
}

/** What the server sends on /v1/live. */
export type LiveServerMessage =
  | { type: 'snapshot'; job: JobView; cursor: string }
  | (EventFields & { type: 'event'; event: string })
  | { type: 'position'; job: string; position: number; eta_ms?: number }
  | EventsMissed
  | { type: 'monitor.snapshot'; cursors: Record<string, string>; queues: unknown; workers: unknown; machines: unknown }
  | { type: 'error'; code: string; message: string; job?: string; workflow?: string; issues?: ValidationIssue[] };

/** WebSocket close code for a consumer that does not keep up (its send buffer passed the bound). */
export const CLOSE_SLOW_CONSUMER = 4008;
/** WebSocket close code when the API key the socket was opened with is revoked. */
export const CLOSE_KEY_REVOKED = 4001;

/** Stream ids (`<ms>-<seq>`) in order: the cursors of every event feed. */
export function compareStreamIds(a: string, b: string): number {
  const [am = '0', as = '0'] = a.split('-');
  const [bm = '0', bs = '0'] = b.split('-');
  return Number(am) - Number(bm) || Number(as) - Number(bs);
}

/** GET /v1/webhooks/secret and POST /v1/webhooks/secret/rotate: the secret a tenant's job webhooks are signed with. */
export const WebhookSecretResponse = z
  .object({
    tenant: z.string(),
    /** `whsec_` + base64: verify the `webhook-signature` header with it (Standard Webhooks) */
    secret: z.string(),
    /** after a rotation: until when (ms) messages are signed with the previous secret too */
    previous_valid_until: z.number().int().optional(),
  })
  .meta({ id: 'WebhookSecret' });
export type WebhookSecretResponse = z.infer<typeof WebhookSecretResponse>;
