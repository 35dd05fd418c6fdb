import { once } from 'node:events';
import { type RedisClusterProcess, startRedisCluster } from '@emp/testkit';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { jobOfEvent } from './events';
import { poolOfJobId } from './job';
import { functionLibrary } from './library';
import { shardsOf } from './pool-shards';

// The same code on a real 3-master Redis Cluster on loopback: every call about a
// pool stays in that pool's hash slot, and pools spread over the masters.

let cluster: RedisClusterProcess;
let client: Cluster;
const extraClients: Array<Cluster | Redis> = [];

async function readyCluster(): Promise<Cluster> {
  const c = new Cluster([...cluster.startupNodes], { redisOptions: { maxRetriesPerRequest: 3 } });
  extraClients.push(c);
  if (c.status !== 'ready') await once(c, 'ready');
  return c;
}

function nodeClient(port: number): Redis {
  const r = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
  extraClients.push(r);
  return r;
}

async function flushFunctionsEverywhere(): Promise<void> {
  await Promise.all(cluster.nodes.map((n) => nodeClient(n.port).call('FUNCTION', 'FLUSH')));
}

async function libraryVersions(): Promise<string[]> {
  return Promise.all(
    cluster.nodes.map((n) =>
      (nodeClient(n.port).call('FCALL_RO', 'emp_version', 0) as Promise<string>).catch((e: Error) => `missing: ${e.message}`),
    ),
  );
}

/** One pool name per master, found by the slot of its anchor key. */
async function poolsOnDistinctMasters(broker: Broker): Promise<Map<number, string>> {
  const byNode = new Map<number, string>();
  for (let i = 0; i < 500 && byNode.size < cluster.nodes.length; i++) {
    const pool = `pool-${i}`;
    const slot = Number(await client.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(pool)));
    const owner = await cluster.ownerOfSlot(slot);
    if (!byNode.has(owner)) byNode.set(owner, pool);
  }
  return byNode;
}

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3 });
  client = await readyCluster();
}, 60_000);

afterAll(async () => {
  for (const c of extraClients) c.disconnect();
  await cluster?.stop();
});

describe('Redis Cluster', () => {
  it('runs three masters that split the slots', async () => {
    const masters = client.nodes('master');
    expect(masters).toHaveLength(3);
    const info = (await nodeClient(cluster.nodes[0]!.port).call('CLUSTER', 'INFO')) as string;
    expect(info).toMatch(/cluster_state:ok/);
    expect(info).toMatch(/cluster_size:3/);
  });

  it('Broker.connect loads the function library on every master', async () => {
    await flushFunctionsEverywhere();
    await Broker.connect({ redis: client });
    const version = functionLibrary().version;
    expect(await libraryVersions()).toEqual([version, version, version]);
  });

  it('Broker.connect loads the library on every master even on a Cluster client created a moment ago', async () => {
    await flushFunctionsEverywhere();
    const fresh = new Cluster([...cluster.startupNodes]);
    extraClients.push(fresh);
    const broker = await Broker.connect({ redis: fresh });
    const version = functionLibrary().version;
    expect(await libraryVersions()).toEqual([version, version, version]);
    // and the broker works
    await broker.registerWorker({ id: 'w-fresh', pool: 'fresh', capabilities: { services: ['simulation'] } });
    await Broker.connect({ redis: client }); // leave the library loaded for the other tests
  });

  it('submit, claim, start, progress, complete in pools whose slots live on different masters', async () => {
    const broker = await Broker.connect({ redis: client });
    const pools = await poolsOnDistinctMasters(broker);
    expect(pools.size).toBe(3);

    for (const [owner, pool] of pools) {
      const worker = `w-${pool}`;
      await broker.registerWorker({ id: worker, pool, capabilities: { services: ['simulation'], labels: { gpu: 'a100' } } });
      const submitted = await broker.submit({ service: 'simulation', payload: { pool }, requirements: { pool, constraints: { gpu: 'a100' } } });
      expect(submitted).toMatchObject({ pool, duplicate: false, routable: true });
      expect(submitted.id.startsWith(`${pool}.`)).toBe(true);

      const queued = await broker.getJob(submitted.id);
      expect(queued).toMatchObject({ state: 'queued', pool, position: 0, payload: { pool } });
      const stats = await broker.queueStats(pool);
      expect(stats.classes.map((c) => c.depth)).toEqual([1]);
      expect(stats.onlineWorkers).toBe(1);

      // everything about the pool sits in its one slot on its one master
      const slot = Number(await client.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(pool)));
      expect(Number(await client.call('CLUSTER', 'KEYSLOT', broker.keys.events(pool)))).toBe(slot);
      for (const node of cluster.nodes) {
        const keysHere = Number(await nodeClient(node.port).call('CLUSTER', 'COUNTKEYSINSLOT', slot));
        if (node.port === owner) expect(keysHere).toBeGreaterThan(3);
        else expect(keysHere).toBe(0);
      }
      const keysOnOwner = (await nodeClient(owner).call('CLUSTER', 'GETKEYSINSLOT', slot, 1000)) as string[];
      expect(keysOnOwner).toContain(`emp:{${pool}}:events`);
      expect(keysOnOwner.every((key) => key.startsWith(`emp:{${pool}}:`))).toBe(true);

      const claim = await broker.claim(pool, worker);
      expect(claim.job?.id).toBe(submitted.id);
      const lease = claim.job!.lease;
      await broker.start(lease);
      await broker.progress(lease, { stage: 'running', value: 1, max: 2 });
      expect((await broker.heartbeat(pool, worker, [lease])).length).toBe(0);
      await broker.complete(lease, { images: [`${pool}.png`] });

      const done = await broker.getJob(submitted.id);
      expect(done).toMatchObject({ state: 'succeeded', result: { images: [`${pool}.png`] }, worker });
      const events = await broker.readEvents(pool, '0', { count: 1_000 });
      expect(events.filter((e) => jobOfEvent(e) === submitted.id).map((e) => e.type)).toEqual([
        'job.queued',
        'job.starting',
        'job.running',
        'job.progress',
        'job.succeeded',
      ]);
      expect(events.every((e) => e.pool === pool)).toBe(true);
      expect((await broker.tick(pool)).handled).toBeGreaterThanOrEqual(0);
      expect((await broker.workers(pool)).map((w) => w.id)).toEqual([worker]);
    }
    expect(await broker.pools()).toEqual(expect.arrayContaining([...pools.values()]));
  });

  it('submitMany sends each pool its own pipeline, on its own master', async () => {
    const broker = await Broker.connect({ redis: client });
    const pools = [...(await poolsOnDistinctMasters(broker)).values()];
    const inputs = Array.from({ length: 300 }, (_, i) => ({ service: 'simulation', requirements: { pool: pools[i % 3]! }, payload: { i } }));
    const results = await broker.submitMany(inputs);
    expect(results.filter((r) => r instanceof Error)).toEqual([]);
    for (const [i, result] of results.entries()) {
      expect((result as { pool: string }).pool).toBe(pools[i % 3]);
    }
    const depths = await Promise.all(pools.map(async (p) => (await broker.queueStats(p)).classes.reduce((s, c) => s + c.depth, 0)));
    expect(depths.every((d) => d >= 100)).toBe(true);
  });

  it('an idle worker blocked on a duplicate cluster connection is woken by a submit within milliseconds', async () => {
    const broker = await Broker.connect({ redis: client });
    const pools = [...(await poolsOnDistinctMasters(broker)).values()];
    for (const pool of pools) {
      const worker = `sleeper-${pool}`;
      await broker.registerWorker({ id: worker, pool, capabilities: { services: ['ollama'], models: { ollama: ['llama3'] } } });
      expect((await broker.claim(pool, worker)).job).toBeNull(); // now recorded idle

      const blocking = client.duplicate();
      extraClients.push(blocking);
      if (blocking.status !== 'ready') await once(blocking, 'ready');
      const waiting = broker.waitForSignals(blocking, pool, worker, 5_000);
      await new Promise((resolve) => setTimeout(resolve, 50)); // the BLMPOP is on the wire
      const submittedAt = performance.now();
      const submitted = await broker.submit({ service: 'ollama', requirements: { pool, models: ['llama3'] } });
      const signals = await waiting;
      const wokenAfterMs = performance.now() - submittedAt;

      expect(signals).toHaveLength(1);
      expect(signals[0]).toMatchObject({ type: 'wake' });
      expect(wokenAfterMs).toBeLessThan(500);
      const woken = signals[0] as { requirementClass: string };
      expect((await broker.claim(pool, worker, woken.requirementClass)).job?.id).toBe(submitted.id);
      blocking.disconnect();
    }
  });

  it('a reader blocked on XREAD of a pool stream on a duplicate connection sees the next event', async () => {
    const broker = await Broker.connect({ redis: client });
    const [pool] = [...(await poolsOnDistinctMasters(broker)).values()];
    const reader = client.duplicate();
    extraClients.push(reader);
    if (reader.status !== 'ready') await once(reader, 'ready');
    const reading = broker.readEvents(pool!, '$', { blockMs: 5_000, connection: reader });
    await new Promise((resolve) => setTimeout(resolve, 50));
    const submitted = await broker.submit({ service: 'http', requirements: { pool: pool! } });
    const events = await reading;
    expect(events.map((e) => [e.type, jobOfEvent(e)])).toEqual([['job.queued', submitted.id]]);
    reader.disconnect();
  });

  it('lists jobs across pools on different masters, pauses a service and commands a machine, each call in its pool\'s slot', async () => {
    const broker = await Broker.connect({ redis: client });
    const pools = [...(await poolsOnDistinctMasters(broker)).values()];
    const submitted = [];
    for (let i = 0; i < 9; i++) submitted.push((await broker.submit({ service: 'http', tenant: 'cluster-lister', requirements: { pool: pools[i % 3]! } })).id);
    const listed: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await broker.listJobs({ tenant: 'cluster-lister', limit: 4, ...(cursor ? { cursor } : {}) });
      listed.push(...page.jobs.map((j) => j.id));
      cursor = page.next_cursor;
    } while (cursor);
    expect(listed.sort()).toEqual(submitted.sort());

    await broker.registerWorker({ id: 'cluster-w', pool: pools[0]!, capabilities: { services: ['ollama'] } });
    await broker.setServicePaused(pools[0]!, 'ollama', true);
    await broker.submit({ service: 'ollama', requirements: { pool: pools[0]! } });
    expect((await broker.claim(pools[0]!, 'cluster-w')).job).toBeNull();
    await broker.setServicePaused(pools[0]!, 'ollama', false);
    expect((await broker.claim(pools[0]!, 'cluster-w')).job?.service).toBe('ollama');

    await broker.registerMachine(pools[1]!, 'cluster-m', 'ready');
    const command = await broker.machineCommand(pools[1]!, 'cluster-m', 'restart');
    expect((await client.xrange(broker.keys.machineCommands(pools[1]!, 'cluster-m'), '-', '+')).map(([id]) => id)).toEqual([command]);
  });

  it('one pool spread over every master: its shards land on their own masters, claims find jobs on each, no call crosses slots', async () => {
    const broker = await Broker.connect({ redis: client });
    // a pool whose first three shards hash to three different masters
    let pool = '';
    for (let i = 0; i < 500 && !pool; i++) {
      const candidate = `spread-${i}`;
      const owners = await Promise.all(shardsOf(candidate, 3).map(async (shard) => cluster.ownerOfSlot(Number(await client.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(shard))))));
      if (new Set(owners).size === 3) pool = candidate;
    }
    expect(pool).not.toBe('');
    const errorsBefore = await crossSlotErrors();
    await broker.setShardCount(pool, 3);
    await broker.registerWorker({ id: 'spread-w', pool, capabilities: { services: ['simulation'] }, concurrency: 8 });
    const results = await broker.submitMany(Array.from({ length: 90 }, (_, i) => ({ service: 'simulation', requirements: { pool }, payload: { i } })));
    const ids = results.map((r) => (r instanceof Error ? '' : r.id));
    expect(ids.filter((id) => id === '')).toEqual([]);
    // each shard's jobs on its own master
    for (const shard of shardsOf(pool, 3)) {
      const owner = await cluster.ownerOfSlot(Number(await client.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(shard))));
      const here = ids.filter((id) => poolOfJobId(id) === shard);
      expect(here.length).toBeGreaterThan(5);
      expect(await nodeClient(owner).exists(...here.map((id) => broker.keys.job(shard, id)))).toBe(here.length);
    }
    expect((await broker.queueStats(pool)).classes[0]?.depth).toBe(90);
    const taken: string[] = [];
    for (;;) {
      const found = await broker.claimInShards(pool, 'spread-w', { count: 8 });
      const jobs = found.results.flatMap((r) => (r.job ? [r.job] : []));
      if (jobs.length === 0) break;
      for (const job of jobs) await broker.complete(job.lease, { ok: true });
      taken.push(...jobs.map((job) => job.id));
    }
    expect(taken.sort()).toEqual([...ids].sort());
    expect(await crossSlotErrors()).toBe(errorsBefore);
  });
});

/** CROSSSLOT errors answered so far, summed over every node (INFO errorstats). */
async function crossSlotErrors(): Promise<number> {
  let total = 0;
  for (const node of cluster.nodes) {
    const info = await nodeClient(node.port).info('errorstats');
    total += Number(/^errorstat_CROSSSLOT:count=(\d+)/m.exec(info)?.[1] ?? 0);
  }
  return total;
}
