import { startRedis, type RedisProcess } from '@emp/core/redis-server';
import { waitFor } from '@emp/testkit';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { brokerConfigFromEnv } from './config';
import { NotReplicatedError, ValidationError } from './errors';
import { SubmitJobInput } from './job';
import { parseRedisTarget } from './redis-connection';

// Durable submit (docs/scale-out.md) on a single Redis: with a replica the
// submit answers once the replica has the job; without one it answers
// NOT_REPLICATED after its timeout, with the job queued, and a broker
// configured for durable submits refuses to start.

const { redis } = usePrivateRedis();
const closers: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

describe('durable submit on a single Redis', () => {
  it('without a replica, a durable submit answers NOT_REPLICATED after its timeout, and the job is queued all the same', async () => {
    const broker = await Broker.connect({ redis, config: { durableSubmitTimeoutMs: 50 } });
    const error = await broker.submit({ service: 'simulation' }, { durable: true }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NotReplicatedError);
    expect((error as NotReplicatedError).code).toBe('NOT_REPLICATED');
    const id = /^job (\S+) is queued on the Redis master, but no replica acknowledged it within 50 ms/.exec((error as Error).message)?.[1];
    expect(id).toBeDefined();
    expect((await broker.getJob(id!))?.state).toBe('queued');

    // submitAndRead and submitMany say the same
    await expect(broker.submitAndRead(SubmitJobInput.parse({ service: 'simulation' }), { durable: true })).rejects.toBeInstanceOf(NotReplicatedError);
    const many = await broker.submitMany([{ service: 'simulation' }, { service: 'simulation' }], { durable: true });
    expect(many.map((r) => r instanceof NotReplicatedError)).toEqual([true, true]);
    // a plain submit does not wait
    expect((await broker.submit({ service: 'simulation' })).duplicate).toBe(false);
  });

  it("a broker with durableSubmit 'replica' does not start on a Redis without a replica", async () => {
    await expect(Broker.connect({ redis, config: { durableSubmit: 'replica' } })).rejects.toThrow(
      /durableSubmit 'replica' \(EMP_DURABLE_SUBMIT\) needs a connected replica on every Redis master, and .* has none/,
    );
  });

  it('with a replica, every submit of a durable broker is answered once the replica has the job', async () => {
    // a replica's first sync starts at once, not after the default 5 s wait for more replicas
    const primary: RedisProcess = await startRedis({ args: ['--repl-diskless-sync-delay', '0'] });
    closers.push(() => primary.stop());
    const replica: RedisProcess = await startRedis({ args: ['--replicaof', primary.host, String(primary.port)] });
    closers.push(() => replica.stop());
    const onPrimary = new Redis(primary.url);
    const onReplica = new Redis(replica.url);
    closers.push(() => onPrimary.disconnect());
    closers.push(() => onReplica.disconnect());
    // online on the primary's side too (after a diskless sync, once the replica's first ACK arrives)
    await waitFor('the replica in sync', async () => /^slave0:.*state=online/m.test(await onPrimary.info('replication')), 10_000);

    const broker = await Broker.connect({ redis: onPrimary, config: brokerConfigFromEnv({ EMP_DURABLE_SUBMIT: 'replica' }) });
    const submitted = await broker.submit({ service: 'simulation', payload: { durable: true } });
    // WAIT returned: the replica has the job now, not eventually
    expect(await onReplica.exists(broker.keys.job(submitted.pool, submitted.id))).toBe(1);
    const { job } = await broker.submitAndRead(SubmitJobInput.parse({ service: 'simulation' }));
    expect(await onReplica.exists(broker.keys.job(job!.pool, job!.id))).toBe(1);
  });

  it('EMP_DURABLE_SUBMIT is off or replica', () => {
    expect(brokerConfigFromEnv({ EMP_DURABLE_SUBMIT: 'replica', EMP_DURABLE_SUBMIT_TIMEOUT_MS: '250' })).toMatchObject({ durableSubmit: 'replica', durableSubmitTimeoutMs: 250 });
    expect(() => brokerConfigFromEnv({ EMP_DURABLE_SUBMIT: 'always' })).toThrow(/EMP_DURABLE_SUBMIT.*durableSubmit/s);
  });
});

describe('pointing emp at a Redis Cluster', () => {
  it('reads several hosts in one URL, or EMP_REDIS_CLUSTER=1, as a cluster', () => {
    expect(parseRedisTarget('redis://127.0.0.1:7000', {})).toMatchObject({ cluster: false, nodes: [{ host: '127.0.0.1', port: 7000 }] });
    expect(parseRedisTarget('redis://a:7000,b:7001,[::1]:7002', {})).toMatchObject({
      cluster: true,
      nodes: [{ host: 'a', port: 7000 }, { host: 'b', port: 7001 }, { host: '::1', port: 7002 }],
    });
    expect(parseRedisTarget('rediss://user:p%40ss@seed:7000', { EMP_REDIS_CLUSTER: '1' })).toMatchObject({ cluster: true, tls: true, username: 'user', password: 'p@ss' });
    expect(parseRedisTarget('redis://:secret@host/2', {})).toMatchObject({ cluster: false, password: 'secret', db: 2 });
  });

  it('says what is wrong with a target it cannot use', () => {
    expect(() => parseRedisTarget('http://host:1', {})).toThrow(ValidationError);
    expect(() => parseRedisTarget('redis://a:1,b:99999', {})).toThrow(/not a host:port in the Redis URL .*: b:99999/);
    expect(() => parseRedisTarget('redis://a:1,b:2/3', {})).toThrow(/a Redis Cluster has only database 0/);
    expect(() => parseRedisTarget('redis://a:1', { EMP_REDIS_CLUSTER: 'yes' })).toThrow(/EMP_REDIS_CLUSTER is 1 or 0, not yes/);
  });
});
