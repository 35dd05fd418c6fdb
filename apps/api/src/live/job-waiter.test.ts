import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Broker, Job } from '@emp/core';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventHub } from './event-hub';
import { waitForJob } from './job-waiter';

let stack: ApiStack;

// no worker: a job stays queued until the test ends it (a cancel is a terminal transition like any other)
beforeAll(async () => {
  stack = await startApiStack({ worker: false });
});
afterAll(async () => {
  await stack?.stop();
});

/** The real broker, with `around` run at the first read of a job: to end the job just before or just after that read. */
function brokerEndingJobAtFirstRead(around: (read: () => Promise<Job | null>) => Promise<Job | null>): Broker {
  let first = true;
  return new Proxy(stack.broker, {
    get(target, property, receiver) {
      if (property !== 'getJob') return Reflect.get(target, property, receiver);
      return (id: string) => {
        if (!first) return target.getJob(id);
        first = false;
        return around(() => target.getJob(id));
      };
    },
  });
}

describe('waiting for a job to finish', () => {
  it('answers at once with a job that has finished', async () => {
    const { id } = await stack.broker.submit({ service: 'http' });
    await stack.broker.cancel(id);
    const started = Date.now();
    expect((await waitForJob(stack.server.hub, stack.broker, id, 30_000))?.state).toBe('canceled');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('sees a job that finishes after the wait began but before its first read, in that read', async () => {
    const { id } = await stack.broker.submit({ service: 'http' });
    const broker = brokerEndingJobAtFirstRead(async (read) => {
      await stack.broker.cancel(id, 'before the read');
      return read();
    });
    expect((await waitForJob(stack.server.hub, broker, id, 30_000))?.state).toBe('canceled');
  });

  it('sees a job that finishes just after its first read, from the live event, long before the timeout', async () => {
    const { id } = await stack.broker.submit({ service: 'http' });
    const broker = brokerEndingJobAtFirstRead(async (read) => {
      const queued = await read();
      expect(queued?.state).toBe('queued');
      await stack.broker.cancel(id, 'after the read');
      return queued;
    });
    const started = Date.now();
    expect((await waitForJob(stack.server.hub, broker, id, 30_000))?.state).toBe('canceled');
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('gives the job as it is when the time is up', async () => {
    const { id } = await stack.broker.submit({ service: 'http' });
    expect((await waitForJob(stack.server.hub, stack.broker, id, 200))?.state).toBe('queued');
  });

  it('answers null for a job that does not exist', async () => {
    expect(await waitForJob(stack.server.hub, stack.broker, 'standard.m3kx9a0b1c2d3e4f', 30_000)).toBeNull();
  });
});

/** The real broker, counting its reads of jobs. */
function countingReads(): { broker: Broker; reads: () => number } {
  let reads = 0;
  const broker = new Proxy(stack.broker, {
    get(target, property, receiver) {
      if (property !== 'getJob') return Reflect.get(target, property, receiver);
      return (id: string) => {
        reads += 1;
        return target.getJob(id);
      };
    },
  });
  return { broker, reads: () => reads };
}

/** A waiting submit as the route makes it: the hub's mark, then the job submitted (not read back). */
async function submitMarked(hub: EventHub): Promise<{ id: string; mark: ReturnType<EventHub['mark']> }> {
  const mark = hub.mark();
  const { id, duplicate } = await stack.broker.submit({ service: 'http' });
  expect(duplicate).toBe(false);
  return { id, mark };
}

describe('waiting for a job submitted after the hub\'s mark', () => {
  it('answers a job that ended before the wait began with only the final read, the hub having seen its end', async () => {
    const hub = stack.server.hub;
    const { id, mark } = await submitMarked(hub);
    expect(hub.endedSince('standard', id, mark)).toBe(false);
    await stack.broker.cancel(id, 'between the submit and the wait');
    await expect.poll(() => hub.endedSince('standard', id, mark)).toBe(true);
    const { broker, reads } = countingReads();
    expect((await waitForJob(hub, broker, id, 30_000, undefined, { mark }))?.state).toBe('canceled');
    expect(reads()).toBe(1);
  });

  it('waits for the live end of a job that had not ended, reading it once, at the end', async () => {
    const hub = stack.server.hub;
    const { id, mark } = await submitMarked(hub);
    const { broker, reads } = countingReads();
    setTimeout(() => void stack.broker.cancel(id, 'while waited for'), 200);
    expect((await waitForJob(hub, broker, id, 30_000, undefined, { mark }))?.state).toBe('canceled');
    expect(reads()).toBe(1);
  });

  it('waits the same way with a job read after the mark (a GET), reading it once, at the end', async () => {
    const hub = stack.server.hub;
    const mark = hub.mark();
    const { id } = await stack.broker.submit({ service: 'http' });
    const read = (await stack.broker.getJob(id))!;
    expect(read.state).toBe('queued');
    const { broker, reads } = countingReads();
    setTimeout(() => void stack.broker.cancel(id, 'while waited for'), 200);
    expect((await waitForJob(hub, broker, id, 30_000, undefined, { job: read, mark }))?.state).toBe('canceled');
    expect(reads()).toBe(1);
  });

  it('reads the job again when the hub cannot tell: a pool reader started after the mark, or more endings than it remembers', async () => {
    const hub = new EventHub(stack.broker, pino({ level: 'silent' }), { recentEndings: 2 });
    try {
      const early = hub.mark();
      await hub.start();
      const { id, mark } = await submitMarked(hub);
      // the reader of 'standard' was ready only after the first mark
      expect(hub.endedSince('standard', id, early)).toBeUndefined();
      expect(hub.endedSince('standard', id, mark)).toBe(false);
      for (let i = 0; i < 3; i++) {
        const other = await stack.broker.submit({ service: 'http' });
        await stack.broker.cancel(other.id);
      }
      // three endings since the mark, two remembered: the job's own end could be among those forgotten
      await expect.poll(() => hub.endedSince('standard', id, mark)).toBeUndefined();
      // so the wait reads the job (still queued), waits for its end, and reads it again
      const { broker, reads } = countingReads();
      setTimeout(() => void stack.broker.cancel(id, 'while waited for'), 200);
      expect((await waitForJob(hub, broker, id, 30_000, undefined, { mark }))?.state).toBe('canceled');
      expect(reads()).toBe(2);
    } finally {
      await hub.close();
    }
  });

  it('answers a job that had ended by its submit at once, without reading it again', async () => {
    const { id } = await stack.broker.submit({ service: 'http' });
    await stack.broker.cancel(id);
    const read = (await stack.broker.getJob(id))!;
    const { broker, reads } = countingReads();
    expect(await waitForJob(stack.server.hub, broker, id, 30_000, undefined, { job: read, mark: stack.server.hub.mark() })).toBe(read);
    expect(reads()).toBe(0);
  });
});

describe('a waiting request whose client goes away', () => {
  it('stops waiting when the connection closes before the answer', async () => {
    const { id } = await stack.broker.submit({ service: 'http' });
    let answered!: (outcome: { state: string | undefined; ms: number }) => void;
    const outcome = new Promise<{ state: string | undefined; ms: number }>((resolve) => (answered = resolve));
    const server = createServer((_req, res) => {
      const started = Date.now();
      void waitForJob(stack.server.hub, stack.broker, id, 30_000, res).then((job) => answered({ state: job?.state, ms: Date.now() - started }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const waiting = request({ port, host: '127.0.0.1', path: '/' });
      waiting.on('error', () => undefined);
      waiting.end();
      setTimeout(() => waiting.destroy(), 200);
      const { state, ms } = await outcome;
      expect(state).toBe('queued');
      expect(ms).toBeLessThan(10_000);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
