import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { canonicalJson, contentId } from './canonical';
import { capabilityProfile, WorkerCapabilities } from './capabilities';
import { KeyLayout } from './keys';
import { functionLibrary } from './library';
import { migratePool, migratePools, SCHEMA_VERSION } from './migrations';
import { requirementClass } from './requirements';
import { usePrivateRedis } from '@emp/testkit/private-redis';

const { redis } = usePrivateRedis();
const keys = new KeyLayout();
const POOL = 'standard';

// The library as the release before schema versions stored jobs (see the fixture's header).
const LIBRARY_V1 = readFileSync(new URL('./testing/fixtures/library-v1.lua', import.meta.url), 'utf8');
const PRELUDE_V1 = ['', 10_000, 30_000, 86_400_000, 604_800_000, 0];

interface V1Job {
  id: string;
  tenant: string;
  service?: string;
  requirements?: Record<string, unknown>;
  priority?: number;
  max_attempts?: number;
  backoff?: Record<string, unknown>;
  deadlines?: { queue_ttl_ms?: number; start_timeout_ms?: number; execution_timeout_ms?: number };
  delay_ms?: number;
  webhook?: { url: string; events?: string[] };
  workflow_id?: string;
  step?: number;
  payload?: unknown;
}

function v1Call(name: string, args: Array<string | number>, pool = POOL): Promise<unknown> {
  return redis.call('FCALL', name, 1, keys.anchor(pool), ...PRELUDE_V1, ...args);
}

/** What that release's class was: it named the tenant and the workflow. */
function v1Class(job: V1Job) {
  const definition = canonicalJson({ ...job.requirements, service: job.service ?? 'simulation', tenant: job.tenant, workflow_id: job.workflow_id });
  return { id: contentId(definition), definition };
}

/** Submits as that release's Broker.submit did (its argument layout, its stored fields). */
async function v1Submit(job: V1Job): Promise<void> {
  const service = job.service ?? 'simulation';
  const fields: Array<string | number> = ['tenant', job.tenant, 'service', service, 'max_attempts', job.max_attempts ?? 3, 'max_infra_attempts', 10];
  if (job.backoff) fields.push('backoff', JSON.stringify(job.backoff));
  if (job.deadlines?.execution_timeout_ms) fields.push('exec_timeout_ms', job.deadlines.execution_timeout_ms);
  if (job.webhook) fields.push('webhook', JSON.stringify(job.webhook));
  if (job.workflow_id) fields.push('workflow_id', job.workflow_id);
  if (job.step !== undefined) fields.push('step', job.step);
  const cls = v1Class(job);
  await redis.sadd(keys.pools(), POOL);
  await v1Call('emp_submit', [
    job.id, cls.id, cls.definition, job.priority ?? 0, '', '', 86_400_000, job.delay_ms ?? 0,
    job.deadlines?.queue_ttl_ms ?? '', job.deadlines?.start_timeout_ms ?? '', JSON.stringify(job.payload ?? {}),
    fields.length, ...fields,
  ]);
}

async function v1Worker(id: string, capabilities: WorkerCapabilities): Promise<void> {
  const profile = capabilityProfile(WorkerCapabilities.parse(capabilities));
  await v1Call('emp_register_worker', [id, 'old-machine', profile.id, profile.definition, '1', 'pool', POOL, 'concurrency', 1]);
}

const jobId = (n: number) => `${POOL}.v1job${String(n).padStart(8, '0')}`;
const BULK = 250;

/** Writes, with the old library, jobs in every state that stored layout could hold them in. */
async function writeV1Pool(): Promise<{ activeToken: string }> {
  await redis.call('FUNCTION', 'LOAD', 'REPLACE', LIBRARY_V1);
  // held by a worker of that release: submitted and claimed before anything else is queued
  await v1Worker('w-old', { services: ['simulation'] });
  await v1Submit({ id: jobId(6), tenant: 'acme', workflow_id: 'wf-1', step: 1, priority: 10 });
  const claimed = (await v1Call('emp_claim', ['w-old', ''])) as string[];
  expect(claimed.slice(0, 2)).toEqual(['job', jobId(6)]);
  // ended (canceled), to be retried by hand after the upgrade
  await v1Submit({ id: jobId(7), tenant: 'acme', workflow_id: 'wf-3', step: 7 });
  await v1Call('emp_cancel', [jobId(7), 'not now']);
  // queued: a tenant's workflow step with deadlines and a webhook, another tenant's large payload,
  // a strictly isolated job, a delayed one, and a workflow id per request (a class each, then)
  await v1Submit({
    id: jobId(1), tenant: 'acme', workflow_id: 'wf-1', step: 2, priority: 5, payload: { prompt: 'a cat' },
    webhook: { url: 'https://hooks.example.com/emp', events: ['completed'] },
    deadlines: { queue_ttl_ms: 3_600_000, start_timeout_ms: 7_200_000, execution_timeout_ms: 60_000 },
  });
  await v1Submit({
    id: jobId(2), tenant: 'globex', max_attempts: 5, backoff: { type: 'fixed', delay_ms: 500 },
    payload: { prompt: 'x'.repeat(200) },
  });
  await v1Submit({ id: jobId(3), tenant: 'acme', requirements: { isolation: 'strict' } });
  await v1Submit({ id: jobId(4), tenant: 'acme', workflow_id: 'wf-2', delay_ms: 3_600_000 });
  for (let i = 0; i < BULK; i++) await v1Submit({ id: jobId(100 + i), tenant: 'bulk', workflow_id: `wf-bulk-${i}` });
  // a worker of that release waiting for a job (nothing for its service)
  await v1Worker('w-idle', { services: ['ollama'] });
  expect((await v1Call('emp_claim', ['w-idle', '']) as string[])[0]).toBe('none');
  return { activeToken: claimed[2]! };
}

/** Every key and its value, to tell whether a call changed anything. */
async function snapshot(): Promise<Map<string, string>> {
  const all = new Map<string, string>();
  for (const key of (await redis.keys('*')).sort()) {
    const dump = await redis.dumpBuffer(key);
    all.set(key, createHash('sha1').update(dump ?? '').digest('hex'));
  }
  return all;
}

describe('upgrading a pool stored by the release before schema versions', () => {
  it('keeps every job\'s fields and makes each claimable by every worker that may run it', async () => {
    const { activeToken } = await writeV1Pool();
    await redis.sadd(keys.pools(), 'empty');
    // the old layout, as the old library left it: classes name tenants and workflows, no opt
    const stored = await redis.hgetall(`${keys.prefix(POOL)}job:${jobId(1)}`);
    expect(stored.class).toBe(v1Class({ id: '', tenant: 'acme', workflow_id: 'wf-1' }).id);
    expect(stored.opt).toBeUndefined();
    expect(await redis.hget(`${keys.prefix(POOL)}job:${jobId(6)}`, 'token')).toBe('1');
    expect(await redis.get(keys.schemaVersion(POOL))).toBeNull();

    // the normal path: connecting loads today's library and migrates every known pool
    const broker = await Broker.connect({ redis, config: { avoidMs: 0 } });
    expect(await redis.call('FCALL_RO', 'emp_version', 0)).toBe(functionLibrary().version);
    expect(await redis.get(keys.schemaVersion(POOL))).toBe(String(SCHEMA_VERSION));
    expect(await redis.exists(keys.schemaMigration(POOL))).toBe(0);
    expect(await redis.get(keys.schemaVersion('empty'))).toBe(String(SCHEMA_VERSION));

    // a second run changes nothing
    const before = await snapshot();
    expect(await migratePools(redis, keys)).toEqual([
      { pool: 'empty', version: SCHEMA_VERSION, calls: 1 },
      { pool: POOL, version: SCHEMA_VERSION, calls: 1 },
    ]);
    expect(await snapshot()).toEqual(before);

    // every field read back, in today's class
    const today = (tenant: string, requirements: Record<string, unknown> = {}) =>
      requirementClass({ service: 'simulation', tenant, requirements }).id;
    const j1 = await broker.getJob(jobId(1));
    expect(j1).toMatchObject({
      state: 'queued', tenant: 'acme', service: 'simulation', priority: 5, position: 0, payload: { prompt: 'a cat' },
      requirement_class: today('acme'), requirements: { pool: POOL }, workflow_id: 'wf-1', step: 2,
      webhook: { url: 'https://hooks.example.com/emp', events: ['completed'] }, max_attempts: 3, max_infra_attempts: 10,
      deadlines: { execution_timeout_ms: 60_000 },
    });
    expect(j1!.deadlines.queue_deadline! - j1!.timestamps.submitted_at).toBe(3_600_000);
    expect(j1!.deadlines.start_deadline! - j1!.timestamps.submitted_at).toBe(7_200_000);
    const j2 = await broker.getJob(jobId(2));
    expect(j2).toMatchObject({ state: 'queued', tenant: 'globex', max_attempts: 5, payload: { prompt: 'x'.repeat(200) }, requirement_class: today('globex') });
    expect(await redis.hget(`${keys.prefix(POOL)}job:${jobId(2)}`, 'backoff')).toBe('{"type":"fixed","delay_ms":500}');
    expect(await broker.getJob(jobId(3))).toMatchObject({
      state: 'queued', requirements: { isolation: 'strict' }, requirement_class: today('acme', { isolation: 'strict' }),
    });
    const j4 = await broker.getJob(jobId(4));
    expect(j4).toMatchObject({ state: 'queued', workflow_id: 'wf-2', requirement_class: today('acme') });
    expect(j4!.timestamps.run_at).toBeGreaterThan(Date.now());
    expect(await broker.getJob(jobId(6))).toMatchObject({ state: 'starting', worker: 'w-old', attempts: 1, workflow_id: 'wf-1', step: 1 });
    expect(await broker.getJob(jobId(7))).toMatchObject({ state: 'canceled', workflow_id: 'wf-3', step: 7, requirement_class: today('acme') });
    expect(await broker.getJob(jobId(150))).toMatchObject({ state: 'queued', workflow_id: 'wf-bulk-50', requirement_class: today('bulk') });
    // no field today's layout no longer keeps
    const hash = await redis.hgetall(`${keys.prefix(POOL)}job:${jobId(6)}`);
    expect([hash.token, hash.max_attempts, hash.max_infra_attempts]).toEqual([undefined, undefined, undefined]);

    // listed from the old sorted-set index, after a job submitted since (in today's streams)
    const since = await broker.submit({ service: 'simulation', tenant: 'acme', requirements: { pool: POOL }, payload: { prompt: 'y'.repeat(200) } });
    const listed: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await broker.listJobs({ tenant: 'acme', pool: POOL, limit: 2, ...(cursor ? { cursor } : {}) });
      listed.push(...page.jobs.map((j) => j.id));
      cursor = page.next_cursor;
    } while (cursor);
    expect(listed[0]).toBe(since.id);
    expect(listed.slice(1).sort()).toEqual([1, 3, 4, 6, 7].map(jobId).sort());
    expect((await broker.listJobs({ pool: POOL, limit: 100 })).jobs.length).toBe(100);
    await broker.cancel(since.id, 'only listed');

    // the queue views count them, in today's classes: one for every tenant and workflow, and the strict one
    expect(today('acme')).toBe(today('bulk'));
    const stats = await broker.queueStats(POOL);
    const depths = Object.fromEntries(stats.classes.map((c) => [c.requirementClass, c.depth]));
    expect(depths).toEqual({ [today('acme')]: BULK + 2, [today('acme', { isolation: 'strict' })]: 1 });
    expect(stats.classes.every((c) => c.definition.workflow_id === undefined)).toBe(true);
    // (queued counts the delayed job too)
    expect(await broker.jobCounts(POOL)).toEqual([
      { service: 'simulation', queued: BULK + 4, delayed: 1, starting: 1, running: 0, retrying: 0 },
    ]);
    const waiting = await redis.hget(keys.worker(POOL, 'w-idle'), 'waiting');
    expect(waiting).toBe('1');

    // workers restricted to tenants or a workflow find them, with the fields a claim hands over
    await broker.registerWorker({ id: 'w-acme', pool: POOL, capabilities: { services: ['simulation'], tenants: { allowed: ['acme'] } } });
    const first = await broker.claim(POOL, 'w-acme');
    expect(first.job).toMatchObject({ id: jobId(1), tenant: 'acme', workflowId: 'wf-1', step: 2, executionTimeoutMs: 60_000, priority: 5 });
    expect((await broker.claim(POOL, 'w-acme')).job?.id).toBe(jobId(3));
    await broker.registerWorker({ id: 'w-flow', pool: POOL, capabilities: { services: ['simulation'], workflow_id: 'wf-bulk-7' } });
    expect((await broker.claim(POOL, 'w-flow')).job).toMatchObject({ id: jobId(107), workflowId: 'wf-bulk-7' });
    await broker.registerWorker({ id: 'w-deny', pool: POOL, capabilities: { services: ['simulation'], tenants: { denied: ['bulk'] } } });
    expect((await broker.claim(POOL, 'w-deny')).job).toMatchObject({ id: jobId(2), payload: { prompt: 'x'.repeat(200) } });
    expect((await broker.claim(POOL, 'w-deny')).job).toBeNull();
    await broker.registerWorker({ id: 'w-any', pool: POOL, capabilities: { services: ['simulation'] } });
    expect((await broker.claim(POOL, 'w-any')).job).toMatchObject({ id: jobId(100), workflowId: 'wf-bulk-0' });

    // the job the old worker holds finishes with the token it was given
    await broker.complete({ pool: POOL, jobId: jobId(6), token: activeToken, workerId: 'w-old' }, { ok: true });
    expect(await broker.getJob(jobId(6))).toMatchObject({ state: 'succeeded', result: { ok: true } });
    // an ended job retried by hand returns to today's class with its workflow
    expect(await broker.retry(jobId(7))).toBe('queued');
    await broker.registerWorker({ id: 'w-wf3', pool: POOL, capabilities: { services: ['simulation'], workflow_id: 'wf-3' } });
    expect((await broker.claim(POOL, 'w-wf3')).job).toMatchObject({ id: jobId(7), workflowId: 'wf-3', step: 7 });
  });

  it('works a bounded page per call, and picks up where a migration cut short stopped', async () => {
    await writeV1Pool();
    await redis.call('FUNCTION', 'LOAD', 'REPLACE', functionLibrary().source);
    // a few calls by hand, as a process that died mid-migration would have made
    let reply: unknown[] = [];
    for (let i = 0; i < 4; i++) reply = (await redis.call('FCALL', 'emp_migrate', 1, keys.anchor(POOL), '')) as unknown[];
    expect(reply[0]).toBe('classes');
    expect(reply.length).toBeLessThanOrEqual(1 + 2 * 40); // a page of the class list, not all 250 classes
    const done = await migratePool(redis, keys, POOL);
    expect(done.version).toBe(SCHEMA_VERSION);
    expect(done.calls).toBeGreaterThan(10);
    const broker = await Broker.connect({ redis });
    const stats = await broker.queueStats(POOL);
    expect(stats.classes.map((c) => c.depth).sort((a, b) => a - b)).toEqual([1, BULK + 2]);
  });

  it('stamps a pool that never held a job with the current version, so nothing is migrated there', async () => {
    const broker = await Broker.connect({ redis });
    await broker.submit({ service: 'simulation', tenant: 'acme', requirements: { pool: 'fresh' } });
    await broker.registerWorker({ id: 'w', pool: 'workers-first', capabilities: { services: ['simulation'] } });
    expect(await redis.get(keys.schemaVersion('fresh'))).toBe(String(SCHEMA_VERSION));
    expect(await redis.get(keys.schemaVersion('workers-first'))).toBe(String(SCHEMA_VERSION));
    expect(await migratePools(redis, keys)).toEqual([
      { pool: 'fresh', version: SCHEMA_VERSION, calls: 1 },
      { pool: 'workers-first', version: SCHEMA_VERSION, calls: 1 },
    ]);
  });
});
