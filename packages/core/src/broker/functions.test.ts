import { usePrivateRedis } from '@emp/testkit/private-redis';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { SubmitJobInput } from '../job';
import { Broker } from './broker';

// A server where FCALL_RO does not exist (renamed away, as a proxy that does not
// know the command leaves it): reads must fall back to FCALL.
const { redis } = usePrivateRedis({ args: ['--rename-command', 'FCALL_RO', '""'] });

/** How many calls the server refused with an ERR reply (unknown commands among them). */
async function refusedCalls(connection: Redis): Promise<number> {
  const info = (await connection.call('INFO', 'errorstats')) as string;
  return Number(/errorstat_ERR:count=(\d+)/.exec(info)?.[1] ?? 0);
}

describe('reads on a server that cannot run FCALL_RO', () => {
  it('are made again as FCALL, and every later read goes out as FCALL at once', async () => {
    await expect(redis.call('FCALL_RO', 'emp_version', 0)).rejects.toThrow(/unknown command 'FCALL_RO'/);
    const broker = await Broker.connect({ redis });
    const { id } = await broker.submit({ service: 'simulation' });
    await redis.call('CONFIG', 'RESETSTAT');

    expect(await broker.getJob(id)).toMatchObject({ id, state: 'queued' });
    expect(await refusedCalls(redis), 'the one FCALL_RO that found no such command').toBe(1);

    expect(await broker.getJob(id)).toMatchObject({ id });
    expect((await broker.queueStats('standard')).classes).toHaveLength(1);
    expect(await broker.jobCounts('standard')).toEqual([expect.objectContaining({ service: 'simulation', queued: 1 })]);
    expect(await refusedCalls(redis), 'no FCALL_RO tried after the fallback').toBe(1);
  });

  it('answers a submit whose read, pipelined behind it, FCALL_RO could not run', async () => {
    const broker = await Broker.connect({ redis });
    await redis.call('CONFIG', 'RESETSTAT');
    const { submitted, job } = await broker.submitAndRead(SubmitJobInput.parse({ service: 'simulation', tenant: 'acme' }));
    expect(job).toMatchObject({ id: submitted.id, state: 'queued', tenant: 'acme' });
    expect(await refusedCalls(redis)).toBe(1);
    await broker.submitAndRead(SubmitJobInput.parse({ service: 'simulation' }));
    expect(await refusedCalls(redis)).toBe(1);
  });
});
