import { Broker, openRedis } from '@emp/core';
import { type RedisClusterProcess, call, startRedisCluster } from '@emp/testkit';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ListeningApiServer, startApiServer } from './server';

// The API on a 3 masters + 3 replicas Redis Cluster: `?durable=1` answers once
// a replica has the job; a master dies, the cluster fails over and the same
// server (no restart) goes on answering; the promoted master has no replica
// left, which a durable submit reports as 503 NOT_REPLICATED, until the dead
// node comes back as its replica.

const POOL = 'api-failover';
let cluster: RedisClusterProcess;
let server: ListeningApiServer;
let broker: Broker;
const closers: Array<() => Promise<void> | void> = [];
const http = (method: string, path: string, body?: unknown) => call(server.url, method, path, body === undefined ? {} : { body });

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
  const redis = openRedis(`redis://${cluster.startupNodes.map((n) => `${n.host}:${n.port}`).join(',')}`);
  redis.on('error', () => undefined);
  closers.push(() => redis.disconnect());
  broker = await Broker.connect({ redis });
  server = await startApiServer({ broker, logger: pino({ level: 'silent' }), auth: false, rateLimit: false, port: 0, queueSampleMs: false });
  closers.push(() => server.close());
}, 60_000);

afterAll(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  await cluster?.stop();
});

async function masterOfPool(): Promise<number> {
  const probe = new Redis(cluster.startupNodes[0]!);
  try {
    return await cluster.ownerOfSlot(Number(await probe.call('CLUSTER', 'KEYSLOT', broker.keys.anchor(POOL))));
  } finally {
    probe.disconnect();
  }
}

describe('the API on a Redis Cluster that fails over', () => {
  it('?durable=1 answers 201 once a replica has the job; a bad flag is a 400', async () => {
    const submitted = await http('POST', '/v1/jobs?durable=1', { service: 'simulation', requirements: { pool: POOL } });
    expect(submitted.status).toBe(201);
    const [replica] = await cluster.replicasOf(await masterOfPool());
    const onReplica = new Redis({ port: replica!, host: '127.0.0.1' });
    closers.push(() => onReplica.disconnect());
    await onReplica.call('READONLY');
    expect(await onReplica.exists(broker.keys.job(POOL, submitted.body.id))).toBe(1);

    const batch = await call(server.url, 'POST', '/v1/jobs/batch?durable=true', { body: { jobs: [{ service: 'simulation', requirements: { pool: POOL } }] } });
    expect(batch.status).toBe(200);
    expect(batch.body.results[0]).toMatchObject({ pool: POOL, duplicate: false });

    const bad = await http('POST', '/v1/jobs?durable=yes', { service: 'simulation' });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).toMatch(/durable is 1 or 0/);
  });

  it("after the pool's master dies the server answers without a restart; a durable submit is a 503 NOT_REPLICATED until the dead node is back as a replica", { timeout: 40_000 }, async () => {
    const before = await http('POST', '/v1/jobs', { service: 'simulation', requirements: { pool: POOL } });
    expect(before.status).toBe(201);
    const master = await masterOfPool();
    await cluster.kill(master);
    // a request made during the failover waits it out
    const during = http('POST', '/v1/jobs', { service: 'simulation', requirements: { pool: POOL } });
    await cluster.waitForFailover(master);
    expect((await during).status).toBe(201);

    expect((await http('GET', `/v1/jobs/${before.body.id}`)).body).toMatchObject({ id: before.body.id, state: 'queued' });
    const refused = await http('POST', '/v1/jobs?durable=1', { service: 'simulation', requirements: { pool: POOL } });
    expect(refused.status).toBe(503);
    expect(refused.body.error).toMatchObject({ code: 'NOT_REPLICATED' });
    expect(refused.body.error.message).toMatch(/is queued on the Redis master, but no replica acknowledged it within 1000 ms.*survives a failover only if/);
    expect((await http('POST', '/v1/jobs?durable=0', { service: 'simulation', requirements: { pool: POOL } })).status).toBe(201);

    // the dead node comes back: it rejoins as the new master's replica, and durable submits are acknowledged again
    expect(await cluster.revive(master)).toBe(await masterOfPool());
    expect((await http('POST', '/v1/jobs?durable=1', { service: 'simulation', requirements: { pool: POOL } })).status).toBe(201);
  });
});
