/// <reference path="./cluster-key-slot.d.ts" />
import calculateSlot from 'cluster-key-slot';
import { MAX_SHARDS_PER_POOL, poolOfShard, shardIndex } from './pool-shards';
/**
 * The Redis key layout. Everything about one shard shares the hash tag
 * `{<shard>}`, so every function call stays within one cluster slot; a job id
 * starts with its shard, so any call about a job finds it. A pool's shard 0 is
 * named as the pool, its shard k >= 1 `<pool>_<k>` (pool-shards.ts); the methods
 * below take a shard where they say `pool` (an unsharded pool is its one shard).
 *
 *   <ns>:{<pool>}:shard            anchor passed as KEYS[1] to every function
 *   <ns>:{<pool>}:job:<id>         job hash; its payload in field `payload` when up to 64 bytes, and while queued one of up to
 *                                  512 bytes in pieces (`payload`, `pn`, `p2`..: functions/includes/00-base.lua `pieces`)
 *   <ns>:{<pool>}:payload:<id>     a job's payload otherwise (a larger one, or a claimed job's), expiring with the job
 *   <ns>:{<pool>}:q:<class>        queued jobs of one requirement class (score: priority, then order)
 *   <ns>:{<pool>}:classes          non-empty classes scored by their head job
 *   <ns>:{<pool>}:tq:<class>:<tenant>   lane: the class's queued jobs of one tenant; ct:<class>: its tenants by lane head;
 *                                  wq:<class>:<workflow>: the class's queued jobs of one workflow (workers restricted to
 *                                  tenants or a workflow claim through them); laned: the shard keeps lanes ('scanning' while
 *                                  the queued jobs are put into them, then 'done'), absent until a restricted worker registers
 *   <ns>:{<pool>}:class:<class>    class definition, routable and listed flags, dclass: its jobs' duration class (routing.ts; moved_to: the class it is today, on a class an older layout stored); classlist / unroutable: sets of the classes in use (swept when empty)
 *   <ns>:{<pool>}:timers           one entry per job with something due (delay, retry, deadline, lease)
 *   <ns>:{<pool>}:deferred         "delayed:<service>" / "retrying:<service>" -> jobs waiting on a timer (job counts)
 *   <ns>:{<pool>}:events           the shard's event stream
 *   <ns>:{<pool>}:worker:<id>      worker hash (its `cursor`: where a claim walk paused on its budget goes on); workers / workers:offline: last_seen indexes; idle: waiting workers (worker -> profile; the worker hash's `waiting` says so too)
 *   <ns>:{<pool>}:wmodels:<worker> model -> tier the worker reported holding ('3' loaded, '2' on disk, '1' downloading);
 *                                  holders:<model>: worker -> tier, the same reports by model (a claim asks whether another
 *                                  worker holds a job's models); both replaced by emp_worker_models, dropped when the worker
 *                                  goes offline or is removed (docs/broker.md, "Model affinity")
 *   <ns>:{<pool>}:signal:<worker>  list the worker blocks on: wake-ups, cancel notices and (in shard 0) shards: when its pool was resharded
 *   <ns>:{<pool>}:borrowers        set of the workers registered here as borrowers of another pool (their hash's home_pool;
 *                                  cross-pool fallback: they claim here only through claim_fallback and are never in `idle`)
 *   <ns>:{<pool>}:wjobs:<worker>   jobs the worker holds
 *   <ns>:{<pool>}:profile:<id>     capability profile; profiles: every profile ever registered
 *   <ns>:{<pool>}:machine:<id>     machine hash; machines / machines:offline
 *   <ns>:{<pool>}:idem:<key>       a job's idempotency key (<tenant>:<key>) -> job id | request fingerprint
 *   <ns>:{<pool>}:wfidem:<key>     a workflow's idempotency key (<tenant>:<key>) -> workflow id | request fingerprint
 *   <ns>:{<pool>}:joblog           stream, every job in submission order (listing): entry id <submitted_at>-<n>, field j
 *                                  "<id>|<tenant>"; joblog:tenant:<t>: one tenant's, field j the id, under the same entry ids;
 *                                  jobs ("<id>|<tenant>") and jobs:tenant:<t> (ids): sorted sets scored by submitted_at ms, the
 *                                  entries the sweep moved out of the streams (jobs kept for the failed retention; before
 *                                  2026-12-07 the whole index); a listing merges both; joblog:sweep: the entry after which the
 *                                  sweep resumes, jobs:sweep: its rank in jobs; jobs:swept: once-a-second gate (docs/broker.md,
 *                                  "Listing jobs")
 *   <ns>:{<pool>}:clock            tick_at: when the shard last ticked; unwatched_from / unwatched_to: the last gap between
 *                                  ticks longer than clockGapMs, after which leases and offline deadlines get a grace
 *                                  (docs/broker.md, "Clock work")
 *   <ns>:{<pool>}:schema_version   the layout of the pool's stored data (jobs, classes, lanes); absent in a pool written
 *                                  before versions were kept (1) or that never held a job; emp_migrate brings a pool
 *                                  up to the library's layout on load (migrations.ts); schema_migration: where a
 *                                  migration stands (from, phase, cursor) while one runs
 *   <ns>:{<pool>}:paused           service -> {since, by, reason}: services whose jobs no claim takes
 *   <ns>:{<pool>}:machine-commands:<id>  stream of operator commands (drain, restart, shutdown; prefetch, evict with
 *                                  field model) for a machine's agent; the machine hash's last_command_handled is where
 *                                  its agent resumes
 *   <ns>:{<pool>}:demand:<bucket>  jobs submitted in one 5-minute bucket (bucket = floor(now ms / 300000), the function's
 *                                  now: the virtual clock in simulation), written by submit (not by retries): field
 *                                  c:<class> the jobs of one requirement class, d:<class> what it stands for (JSON: its
 *                                  distinct models, or [`service:<service>`] without models); expires 8 days after the
 *                                  bucket's first write. broker.modelDemand turns it into counts per model, per
 *                                  `service:<service>` and `*` (fields so named: the layout before 2026-12-07)
 *   <ns>:{<pool>}:machine-logs:<id>      output lines of the machine's supervised processes (capped, MAXLEN ~ 5000):
 *                                  fields process (`<service>-<slot>` or `worker-<primary>-<slot>`), stream (stdout | stderr),
 *                                  line (at most 4 KiB), ts (ms)
 *   <ns>:{<pool>}:queue-history  stream of queue samples, one per sampling slot (entry id <slot start ms>-0, so
 *                                  API instances sampling the same slot write it once), trimmed to the last hour:
 *                                  field sample (JSON, core's QueueSample: ts, pool, depth and oldest_age_ms of the pool,
 *                                  its services and classes; finished {succeeded, failed, canceled, expired} and wait
 *                                  {count, p50_ms, p95_ms, max_ms, buckets: histogram over WAIT_BUCKET_BOUNDS_MS} of the
 *                                  pool and per service, for the interval before the slot; pool finished absent: unknown)
 *   <ns>:{<pool>}:queue-history:day  the same samples over the last day, one per 10 sampling slots (entry id: the
 *                                  coarse slot's start): depth and ages the highest of its samples, finished summed,
 *                                  waits merged; written once the coarse slot has passed
 *   <ns>:{<pool>}:planner         the planner's last round for the pool (planner_decision; core/planner.ts): run_at (ms),
 *                                  wait_target_ms, forecast (JSON: per model rate, current, lastHour, method, explanation),
 *                                  capacity (JSON: the capacity hint, machines and how it was found), decisions (JSON: the
 *                                  last 50 prefetch / evict decisions, oldest first: ts, machine, action, model, reason, forecast)
 *   <ns>:{<pool>}:durations:<dclass>  execution times (ms, running start -> success) of the pool's last 256 (to 288) succeeded
 *                                  jobs of one duration class (service + sorted models, `dclass` on the job's class), newest first;
 *                                  durations:service:<service> the same for all of a service's classes (a class short of
 *                                  samples is routed by it); dclasses: hash dclass -> JSON {service, models} of every class
 *                                  with durations (routing.ts, docs/pools.md).
 *   <ns>:{<pool>}:wf:<id>          a workflow (docs/workflows.md; functions/includes/65-workflows.lua): id, tenant, state, priority,
 *                                  seq (the place in line every step keeps), submitted_at, finished_at, error, failed_step,
 *                                  cancel_reason, def (the compiled steps), steps, left; per step st:/need:/jobs:/ileft:/
 *                                  ready_at:/ended_at:/err:<step>; per step job j:<job id> -> <step>#<item>; wf:<id>:out: step ->
 *                                  its result (JSON), <step>#<item> -> an item's; both expire with the jobs' retention once it
 *                                  ended; wfs: every workflow as "<id>|<tenant>" by submitted_at; wfs:tenant:<t>: one tenant's
 *                                  ids by submitted_at (both trimmed to the retention at each submit). A workflow's step jobs are in
 *                                  the same shard (their ids: the workflow's id, 's', step and item index in two base-36 digits)
 *   <ns>:pools                     every shard ever used (outside any shard): a pool's name is its shard 0, `<pool>_<k>` its shard k
 *   <ns>:shard-counts              pool -> how many shards its submits are placed on; <pool>:serve -> how many its workers
 *                                  claim in (more while a reshard's left-over shards hold jobs); absent: one (pool-shards.ts,
 *                                  docs/scale-out.md "Shards within a pool"; outside any shard)
 *   <ns>:apikeys                   API keys: SHA-256 of the key -> record (JSON); apikey-ids: key id -> hash;
 *                                  apikeys:revoked: pub/sub channel of revoked key ids (outside any shard)
 *   <ns>:ratelimit:<bucket>        the API's request counters (@fastify/rate-limit's Redis store; outside any shard)
 *   <ns>:secret:<name>             a secret every instance shares (e.g. `asset-urls`, the HMAC key of signed asset URLs),
 *                                  generated once by whichever instance asks first (outside any shard)
 *   <ns>:{_webhooks}:*             webhook delivery (outside any pool; `_` keeps the tag apart from pool names), one slot:
 *                                  shard: anchor of the webhook functions; due: message id -> when its next attempt is due
 *                                  (an in-flight one: when its lease ends); undelivered: every message not yet ended (pending,
 *                                  in flight or behind its chain's head) -> when it was queued or resent; msg:<id>: the message (tenant, url, job, type,
 *                                  body, state, attempts, next_at), kept `messageRetentionMs` once ended; chain:<job>:<url hash>:
 *                                  one job's messages to one URL in order (only the head is due); throttle:<chain>: when the
 *                                  chain's last progress was delivered; log:<job>: delivery attempts (JSON, capped);
 *                                  disabled:<tenant>: url -> when it answered 410 Gone; secret:<tenant>: signing secrets
 *                                  (current, previous, previous_until); reader:<pool>: the instance reading the pool's stream;
 *                                  busy:<url>: attempts in flight to the URL (message -> lease end);
 *                                  ep:<id>: a tenant's (or the operator's) webhook endpoint (webhook-endpoints.ts);
 *                                  endpoints: every endpoint id by creation time, endpoints:t:<tenant> a tenant's,
 *                                  endpoints:op the operator-scoped ones; busy:ep:<id>: attempts in flight to the
 *                                  endpoint; rate:<id>:<second>: its attempts in that second; eplog:<id>: its delivery
 *                                  attempts (JSON, capped); epmsgs:<id>: its messages by creation time (recover);
 *                                  events: operator events of the outbox (webhook.endpoint.disabled, webhook.events.lost), capped
 */
export class KeyLayout {
  constructor(readonly namespace = 'emp') {}

  /** the hash tag of a shard: what puts all its keys in one cluster slot (shardHashTag: spread over the slots) */
  shardTag(pool: string): string {
    return shardHashTag(pool);
  }
  prefix(pool: string): string {
    return `${this.namespace}:${this.shardTag(pool)}:`;
  }
  anchor(pool: string): string {
    return `${this.prefix(pool)}shard`;
  }
  job(pool: string, id: string): string {
    return `${this.prefix(pool)}job:${id}`;
  }
  paused(pool: string): string {
    return `${this.prefix(pool)}paused`;
  }
  events(pool: string): string {
    return `${this.prefix(pool)}events`;
  }
  signal(pool: string, worker: string): string {
    return `${this.prefix(pool)}signal:${worker}`;
  }
  worker(pool: string, worker: string): string {
    return `${this.prefix(pool)}worker:${worker}`;
  }
  workers(pool: string): string {
    return `${this.prefix(pool)}workers`;
  }
  /** workers registered here as borrowers of another pool (cross-pool fallback): not this pool's own */
  borrowers(pool: string): string {
    return `${this.prefix(pool)}borrowers`;
  }
  /** waiting workers (worker -> profile), whom a submit may wake */
  idle(pool: string): string {
    return `${this.prefix(pool)}idle`;
  }
  offlineWorkers(pool: string): string {
    return `${this.prefix(pool)}workers:offline`;
  }
  workerModels(pool: string, worker: string): string {
    return `${this.prefix(pool)}wmodels:${worker}`;
  }
  modelHolders(pool: string, model: string): string {
    return `${this.prefix(pool)}holders:${model}`;
  }
  workerJobs(pool: string, worker: string): string {
    return `${this.prefix(pool)}wjobs:${worker}`;
  }
  machine(pool: string, machine: string): string {
    return `${this.prefix(pool)}machine:${machine}`;
  }
  machines(pool: string): string {
    return `${this.prefix(pool)}machines`;
  }
  offlineMachines(pool: string): string {
    return `${this.prefix(pool)}machines:offline`;
  }
  machineCommands(pool: string, machine: string): string {
    return `${this.prefix(pool)}machine-commands:${machine}`;
  }
  machineLogs(pool: string, machine: string): string {
    return `${this.prefix(pool)}machine-logs:${machine}`;
  }
  /** the demand counters of one 5-minute bucket (`bucket` = floor(ms / DEMAND_BUCKET_MS)) */
  demand(pool: string, bucket: number): string {
    return `${this.prefix(pool)}demand:${bucket}`;
  }
  clock(pool: string): string {
    return `${this.prefix(pool)}clock`;
  }
  schemaVersion(pool: string): string {
    return `${this.prefix(pool)}schema_version`;
  }
  schemaMigration(pool: string): string {
    return `${this.prefix(pool)}schema_migration`;
  }
  queueHistory(pool: string): string {
    return `${this.prefix(pool)}queue-history`;
  }
  queueHistoryDay(pool: string): string {
    return `${this.prefix(pool)}queue-history:day`;
  }
  planner(pool: string): string {
    return `${this.prefix(pool)}planner`;
  }
  durations(pool: string, dclass: string): string {
    return `${this.prefix(pool)}durations:${dclass}`;
  }
  serviceDurations(pool: string, service: string): string {
    return `${this.prefix(pool)}durations:service:${service}`;
  }
  durationClasses(pool: string): string {
    return `${this.prefix(pool)}dclasses`;
  }
  /** a workflow's record (docs/workflows.md) */
  workflow(pool: string, id: string): string {
    return `${this.prefix(pool)}wf:${id}`;
  }
  /** the results of a workflow's ended steps */
  workflowOutputs(pool: string, id: string): string {
    return `${this.workflow(pool, id)}:out`;
  }
  /** every workflow of the pool as "<id>|<tenant>" by submission time */
  workflows(pool: string): string {
    return `${this.prefix(pool)}wfs`;
  }
  /** one tenant's workflows of the pool (ids) by submission time */
  tenantWorkflows(pool: string, tenant: string): string {
    return `${this.prefix(pool)}wfs:tenant:${tenant}`;
  }
  /** a job's idempotency record in a shard (`<tenant>:<key>` -> job id | fingerprint), as the submit function writes it */
  idempotency(pool: string, key: string): string {
    return `${this.prefix(pool)}idem:${key}`;
  }
  /** a workflow's idempotency record in a shard, as workflow_submit writes it */
  workflowIdempotency(pool: string, key: string): string {
    return `${this.prefix(pool)}wfidem:${key}`;
  }
  /** every shard ever used (a pool's name is its shard 0) */
  pools(): string {
    return `${this.namespace}:pools`;
  }
  /** pool -> its shard count, <pool>:serve -> the shards its workers serve, <pool>:former -> JSON {count: until ms} of the counts it had within the idempotency window (pool-shards.ts) */
  shardCounts(): string {
    return `${this.namespace}:shard-counts`;
  }
  apiKeyRecords(): string {
    return `${this.namespace}:apikeys`;
  }
  apiKeyIds(): string {
    return `${this.namespace}:apikey-ids`;
  }
  /** a pub/sub channel, not a key */
  apiKeyRevocations(): string {
    return `${this.namespace}:apikeys:revoked`;
  }
  /** what @fastify/rate-limit puts before each bucket it counts */
  rateLimitPrefix(): string {
    return `${this.namespace}:ratelimit:`;
  }
  sharedSecret(name: string): string {
    return `${this.namespace}:secret:${name}`;
  }
  /** the hash tag of webhook delivery's shard */
  webhookShardTag(): string {
    return '{_webhooks}';
  }
  webhookPrefix(): string {
    return `${this.namespace}:${this.webhookShardTag()}:`;
  }
  webhookAnchor(): string {
    return `${this.webhookPrefix()}shard`;
  }
  webhookMessage(id: string): string {
    return `${this.webhookPrefix()}msg:${id}`;
  }
  webhookDue(): string {
    return `${this.webhookPrefix()}due`;
  }
  webhookUndelivered(): string {
    return `${this.webhookPrefix()}undelivered`;
  }
  webhookLog(jobId: string): string {
    return `${this.webhookPrefix()}log:${jobId}`;
  }
  webhookDisabled(tenant: string): string {
    return `${this.webhookPrefix()}disabled:${tenant}`;
  }
  webhookEndpoint(id: string): string {
    return `${this.webhookPrefix()}ep:${id}`;
  }
  /** every endpoint (no tenant), a tenant's endpoints, or '' for the operator-scoped ones */
  webhookEndpoints(tenant?: string): string {
    if (tenant === undefined) return `${this.webhookPrefix()}endpoints`;
    return tenant === '' ? `${this.webhookPrefix()}endpoints:op` : `${this.webhookPrefix()}endpoints:t:${tenant}`;
  }
  webhookEndpointLog(id: string): string {
    return `${this.webhookPrefix()}eplog:${id}`;
  }
  webhookEvents(): string {
    return `${this.webhookPrefix()}events`;
  }
}

const SLOT_COUNT = 16384;
/** A pool's shards are spread over this many equal arcs of the slot circle, one arc per shard (MAX_SHARDS_PER_POOL of them). */
const ARC = SLOT_COUNT / MAX_SHARDS_PER_POOL;
const shardTags = new Map<string, string>();

/**
 * The hash tag of a shard. Shard 0 is `{<pool>}`, as every pool's was before
 * shards. Shard k >= 1 is `{<pool>_<k>-<n>}`, with the smallest n that puts its
 * slot in the k-th arc of a spread that starts at shard 0's slot: arc
 * bitreverse(k) of 64 equal arcs (256 slots each). Hashing `{<pool>_<k>}`
 * alone would drop the shards on the masters at random (with 12 shards on 3
 * masters, the busiest master gets more than 1.2x the mean far more often than
 * not); this way the first N shards sit at evenly spaced slots whatever N is
 * (exactly for N a power of two, within one arc otherwise), so masters serving
 * equal slot ranges get equal shares. A pure function of the name: every
 * process and version finds the same tag, with no stored map.
 */
export function shardHashTag(shard: string): string {
  const k = shardIndex(shard);
  if (k === 0) return `{${shard}}`;
  const known = shardTags.get(shard);
  if (known) return known;
  const start = (calculateSlot(poolOfShard(shard)) + bitReversed(k) * ARC) % SLOT_COUNT;
  for (let n = 0; ; n++) {
    const tag = `${shard}-${n}`;
    if ((calculateSlot(tag) - start + SLOT_COUNT) % SLOT_COUNT < ARC) {
      shardTags.set(shard, `{${tag}}`);
      return `{${tag}}`;
    }
  }
}

/** k's 6 bits in reverse order (0..63): the van der Corput order, which keeps any first N evenly spread. */
function bitReversed(k: number): number {
  let reversed = 0;
  for (let bit = 0; bit < 6; bit++) reversed = (reversed << 1) | ((k >> bit) & 1);
  return reversed;
}
