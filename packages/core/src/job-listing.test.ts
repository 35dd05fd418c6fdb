import { usePrivateRedis } from '@emp/testkit/private-redis';
import { beforeEach, describe, expect, it } from 'vitest';
import { Broker, type JobListFilter } from './broker';
import { ValidationError } from './errors';
import { jobOfEvent } from './events';

const { redis } = usePrivateRedis();
let now = 1_000_000;

beforeEach(() => {
  now = 1_000_000;
});

async function broker(): Promise<Broker> {
  return Broker.connect({ redis, clock: () => now, config: { avoidMs: 0 } });
}

/** Every page of a listing, following cursors, as job ids. */
async function allPages(b: Broker, filter: JobListFilter): Promise<string[][]> {
  const pages: string[][] = [];
  let cursor: string | undefined;
  do {
    const page = await b.listJobs({ ...filter, ...(cursor ? { cursor } : {}) });
    pages.push(page.jobs.map((j) => j.id));
    cursor = page.next_cursor;
  } while (cursor && pages.length < 1_000);
  return pages;
}

describe('listing jobs', () => {
  it('pages newest first across pools without gaps or repeats, also for jobs submitted in the same millisecond', async () => {
    const b = await broker();
    const submitted: string[] = [];
    for (let i = 0; i < 23; i++) {
      if (i % 4 !== 0) now += 1; // some share a timestamp
      const pool = i % 3 === 0 ? 'heavy' : 'standard';
      submitted.push((await b.submit({ service: 'simulation', requirements: { pool } })).id);
    }
    const pages = await allPages(b, { limit: 5 });
    expect(pages.every((page) => page.length <= 5)).toBe(true);
    const listed = pages.flat();
    expect(new Set(listed).size).toBe(listed.length);
    expect(listed.sort()).toEqual([...submitted].sort());
    const first = await b.listJobs({ limit: 23 });
    const times = first.jobs.map((j) => j.submitted_at);
    expect(times).toEqual([...times].sort((x, y) => y - x));
    expect(first.jobs[0]).toMatchObject({ state: 'queued', submitted_at: now });
  });

  it('resumes a cursor from another pool\'s index correctly when jobs share a timestamp', async () => {
    const b = await broker();
    const submitted: string[] = [];
    for (let i = 0; i < 12; i++) submitted.push((await b.submit({ service: 'simulation', tenant: i % 2 ? 'acme' : 'globex', requirements: { pool: ['standard', 'heavy', 'fast-lane'][i % 3]! } })).id);
    for (const filter of [{}, { tenant: 'acme' }]) {
      for (const limit of [1, 2, 5]) {
        const listed = (await allPages(b, { ...filter, limit })).flat();
        const expected = submitted.filter((_, i) => !('tenant' in filter) || i % 2 === 1);
        expect(listed.sort()).toEqual([...expected].sort());
      }
    }
  });

  it('filters by tenant, state, service, pool and submission time', async () => {
    const b = await broker();
    await b.registerWorker({ id: 'w', pool: 'standard', capabilities: { services: ['simulation'] } });
    const a1 = await b.submit({ service: 'simulation', tenant: 'acme' });
    now += 10;
    const a2 = await b.submit({ service: 'ollama', tenant: 'acme' });
    now += 10;
    const o1 = await b.submit({ service: 'simulation', tenant: 'other' });
    const h1 = await b.submit({ service: 'simulation', tenant: 'acme', requirements: { pool: 'heavy' } });
    await b.cancel(a2.id);
    const ids = async (filter: JobListFilter) => (await allPages(b, filter)).flat().sort();

    expect(await ids({ tenant: 'acme' })).toEqual([a1.id, a2.id, h1.id].sort());
    expect(await ids({ tenant: 'acme', pool: 'standard' })).toEqual([a1.id, a2.id].sort());
    expect(await ids({ states: ['canceled'] })).toEqual([a2.id]);
    expect(await ids({ services: ['simulation'], tenant: 'other' })).toEqual([o1.id]);
    expect(await ids({ since: 1_000_010 })).toEqual([a2.id, o1.id, h1.id].sort());
    expect(await ids({ until: 1_000_010 })).toEqual([a1.id, a2.id].sort());
    expect(await ids({ since: 1_000_005, until: 1_000_015 })).toEqual([a2.id]);
  });

  it('answers a sparse filter in bounded pages that still reach every match', async () => {
    const b = await broker();
    const wanted: string[] = [];
    for (let i = 0; i < 2_500; i++) {
      now += 1;
      const job = await b.submit({ service: i % 1_200 === 0 ? 'ollama' : 'simulation' });
      if (i % 1_200 === 0) wanted.push(job.id);
    }
    const pages = await allPages(b, { services: ['ollama'], limit: 10 });
    expect(pages.length).toBeGreaterThan(1); // the 2,000-entry budget cut the walk short
    expect(pages.flat().sort()).toEqual(wanted.sort());
  });

  it('drops jobs from the index once their retention has passed', async () => {
    const b = await Broker.connect({ redis, config: { retentionMs: 50 } });
    await b.registerWorker({ id: 'w', pool: 'standard', capabilities: { services: ['simulation'] } });
    const job = await b.submit({ service: 'simulation', tenant: 'acme' });
    const claim = await b.claim('standard', 'w');
    await b.complete(claim.job!.lease, { ok: true });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await b.listJobs({})).jobs.map((j) => j.id)).toEqual([]); // the hash is gone: not listed
    expect(await redis.xlen('emp:{standard}:joblog')).toBe(1);
    expect(await redis.xlen('emp:{standard}:joblog:tenant:acme')).toBe(1);
    await b.tick('standard');
    expect(await redis.xlen('emp:{standard}:joblog')).toBe(0);
    expect(await redis.exists('emp:{standard}:joblog:tenant:acme'), 'an empty tenant stream goes').toBe(0);
    expect(job.id).toMatch(/^standard\./);
  });

  it('keeps submission order when the clock goes back', async () => {
    const b = await broker();
    const submitted: string[] = [];
    for (const at of [1_000_050, 1_000_020, 1_000_020, 1_000_060, 1_000_010]) {
      now = at;
      submitted.push((await b.submit({ service: 'simulation', tenant: 'acme' })).id);
    }
    for (const filter of [{}, { tenant: 'acme' }]) {
      expect((await allPages(b, { ...filter, limit: 2 })).flat(), 'newest submitted first').toEqual([...submitted].reverse());
    }
    const first = await b.listJobs({ limit: 1 });
    expect(first.jobs[0]!.submitted_at, 'each job shows its own submitted_at').toBe(1_000_010);
  });

  it('lists and sweeps a shard upgraded from the sorted-set index, its jobs in time order with the newer ones', async () => {
    const b = await Broker.connect({ redis, clock: () => now, config: { retentionMs: 1_000 } });
    await b.registerWorker({ id: 'w', pool: 'standard', capabilities: { services: ['simulation'] } });
    const jobs = new Map<string, { tenant: string; at: number }>();
    const submit = async (i: number) => {
      const tenant = i % 2 ? 'acme' : 'globex';
      const { id } = await b.submit({ service: 'simulation', tenant, requirements: { pool: i % 3 ? 'standard' : 'heavy' } });
      jobs.set(id, { tenant, at: now });
      return id;
    };
    const old: string[] = [];
    for (let i = 0; i < 7; i++) {
      if (i % 3) now += 1; // some share a millisecond
      old.push(await submit(i));
    }
    // the layout before 2026-12-07: two sorted sets per shard, scored by submitted_at
    for (const shard of ['standard', 'heavy']) {
      const log = `emp:{${shard}}:joblog`;
      for (const [entry, [, member]] of (await redis.xrange(log, '-', '+')) as Array<[string, [string, string]]>) {
        const [id, tenant] = member!.split('|');
        await redis.zadd(`emp:{${shard}}:jobs`, entry.split('-')[0]!, member!);
        await redis.zadd(`emp:{${shard}}:jobs:tenant:${tenant}`, entry.split('-')[0]!, id!);
      }
      await redis.del(log, `emp:{${shard}}:joblog:tenant:acme`, `emp:{${shard}}:joblog:tenant:globex`);
    }
    now -= 3; // the newer jobs interleave with the older ones in time
    for (let i = 0; i < 8; i++) {
      if (i % 2) now += 1;
      await submit(i);
    }

    const middle = jobs.get(old[3]!)!.at;
    for (const filter of [{}, { tenant: 'acme' }, { until: middle }, { since: middle, tenant: 'globex' }] as JobListFilter[]) {
      const wanted = [...jobs].filter(([, job]) =>
        (!filter.tenant || job.tenant === filter.tenant) && job.at >= (filter.since ?? 0) && job.at <= (filter.until ?? Infinity));
      for (const limit of [1, 3, 50]) {
        const listed = (await allPages(b, { ...filter, limit })).flat();
        const what = `${JSON.stringify(filter)} by ${limit}`;
        expect([...listed].sort(), `${what}: each once`).toEqual(wanted.map(([id]) => id).sort());
        const times = listed.map((id) => jobs.get(id)!.at);
        expect(times, `${what}: newest first`).toEqual([...times].sort((x, y) => y - x));
      }
    }

    // every job finishes and expires: the sweep empties the sorted sets, and they are gone
    for (;;) {
      const claimed = await b.claim('standard', 'w');
      if (!claimed.job) break;
      await b.complete(claimed.job.lease, null);
    }
    for (const id of jobs.keys()) await redis.pexpire(`emp:{${id.split('.')[0]}}:job:${id}`, 1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    for (const shard of ['standard', 'heavy']) {
      await b.tick(shard);
      expect(await redis.exists(`emp:{${shard}}:jobs`, `emp:{${shard}}:jobs:tenant:acme`, `emp:{${shard}}:jobs:tenant:globex`)).toBe(0);
      expect(await redis.xlen(`emp:{${shard}}:joblog`)).toBe(0);
    }
    expect((await b.listJobs({})).jobs).toEqual([]);
  });

  it('moves a job kept for the failed retention out of the streams once older than the succeeded one, and lists it in its place', async () => {
    const b = await Broker.connect({ redis, clock: () => now, config: { retentionMs: 1_000, failedRetentionMs: 100_000 } });
    await b.registerWorker({ id: 'w', pool: 'standard', capabilities: { services: ['simulation'] } });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await b.submit({ service: 'simulation', tenant: 'acme' })).id);
      now += 1;
    }
    await b.cancel(ids[1]!, 'kept a week');
    await b.cancel(ids[3]!, 'kept a week');
    await b.tick('standard');
    expect(await redis.xlen('emp:{standard}:joblog'), 'not yet: younger than the succeeded retention').toBe(5);

    now += 1_000;
    await redis.del('emp:{standard}:jobs:swept'); // the sweep's once-a-second gate runs on Redis's clock
    await b.tick('standard');
    expect(await redis.xlen('emp:{standard}:joblog')).toBe(3);
    expect(await redis.xlen('emp:{standard}:joblog:tenant:acme')).toBe(3);
    expect(await redis.zrange('emp:{standard}:jobs', 0, -1)).toEqual([`${ids[1]}|acme`, `${ids[3]}|acme`]);
    expect(await redis.zrange('emp:{standard}:jobs:tenant:acme', 0, -1)).toEqual([ids[1], ids[3]]);
    for (const filter of [{}, { tenant: 'acme' }]) {
      for (const limit of [1, 2, 10]) expect((await allPages(b, { ...filter, limit })).flat()).toEqual([...ids].reverse());
    }
    expect((await allPages(b, { states: ['canceled'], limit: 1 })).flat()).toEqual([ids[3], ids[1]]);
  });

  it('refuses a cursor it did not hand out', async () => {
    const b = await broker();
    await expect(b.listJobs({ cursor: 'bm90IGEgY3Vyc29y' })).rejects.toThrow(ValidationError);
    await expect(b.listJobs({ limit: 0 })).rejects.toThrow(/limit/);
  });
});

describe('a job\'s events', () => {
  it('come from the pool stream, only that job\'s, resumable after any of them', async () => {
    const b = await broker();
    await b.registerWorker({ id: 'w', pool: 'standard', capabilities: { services: ['simulation'] } });
    const job = await b.submit({ service: 'simulation' });
    await b.submit({ service: 'simulation' });
    const claim = await b.claim('standard', 'w');
    await b.start(claim.job!.lease);
    await b.progress(claim.job!.lease, { stage: 'running', value: 1, max: 2 });
    await b.complete(claim.job!.lease, { done: 1 });
    const all = await b.jobEvents(job.id);
    expect(all.events.map((e) => e.type)).toEqual(['job.queued', 'job.starting', 'job.running', 'job.progress', 'job.succeeded']);
    expect(all.events.every((e) => jobOfEvent(e) === job.id)).toBe(true);
    const rest = await b.jobEvents(job.id, { after: all.events[1]!.id });
    expect(rest.events.map((e) => e.type)).toEqual(['job.running', 'job.progress', 'job.succeeded']);
    await expect(b.jobEvents(job.id, { after: 'x' })).rejects.toThrow(ValidationError);
  });
});
