import { type ChildProcess, spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { Broker, type BrokerConfigInput, type Job, Scheduler, type SimulationOptions, type StreamEvent, WORKER_CONFIG_ENV, WORKER_MAIN, type WorkerProcessConfigInput, jobOfEvent } from '@emp/core';
import { waitFor } from '@emp/testkit';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type Connector, JobFailure } from './connector';
import { simulationConnector } from './connectors/simulation';
import { Worker, type WorkerOptions } from './worker';

const POOL = 'standard';
const silent = pino({ level: 'silent' });

const db = usePrivateRedis();
const { redis } = db;
const workers: Worker[] = [];
const schedulers: Scheduler[] = [];
const children: ChildProcess[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await Promise.all(workers.splice(0).map((w) => w.stop({ graceMs: 0 })));
  await Promise.all(schedulers.splice(0).map((s) => s.stop()));
});

async function connect(config: BrokerConfigInput = {}): Promise<Broker> {
  return Broker.connect({ redis, config });
}

async function startWorker(
  broker: Broker,
  options: Partial<WorkerOptions> & { simulation?: SimulationOptions } = {},
): Promise<Worker> {
  const { simulation, ...rest } = options;
  const worker = new Worker({
    broker,
    id: 'w1',
    pool: POOL,
    capabilities: { services: ['simulation'] },
    connectors: [simulationConnector({ durationMs: 50, steps: 2, ...simulation })],
    logger: silent,
    ...rest,
  });
  workers.push(worker);
  await worker.start();
  return worker;
}


async function jobInState(broker: Broker, id: string, ...states: Job['state'][]): Promise<Job> {
  return waitFor(`job ${id} to be ${states.join(' or ')}`, async () => {
    const job = await broker.getJob(id);
    return job && states.includes(job.state) ? job : undefined;
  });
}

async function eventsOf(broker: Broker, jobId?: string): Promise<StreamEvent[]> {
  const events = await broker.readEvents(POOL, '0', { count: 100_000 });
  return jobId ? events.filter((e) => jobOfEvent(e) === jobId) : events;
}

async function fcallCalls(): Promise<number> {
  const info = await redis.info('commandstats');
  return Number(/cmdstat_fcall:calls=(\d+)/.exec(info)?.[1] ?? 0);
}

async function workerState(broker: Broker, id: string): Promise<string | undefined> {
  return (await broker.workers(POOL)).find((w) => w.id === id)?.state;
}

/** A connector that runs until aborted, recording when it saw the abort. */
function untilAbortedConnector(record: { abortedAt?: number; reason?: unknown }): Connector {
  return {
    service: 'simulation',
    run: (_job, ctx) =>
      new Promise((_resolve, reject) => {
        ctx.signal.addEventListener('abort', () => {
          record.abortedAt = Date.now();
          record.reason = ctx.signal.reason;
          reject(ctx.signal.reason as Error);
        });
      }),
  };
}

describe('running jobs', () => {
  it('runs a submitted simulation job end to end, with progress in order and the result stored', async () => {
    const broker = await connect();
    const worker = await startWorker(broker, { simulation: { durationMs: 600, steps: 4 } });
    const completed: string[] = [];
    worker.on('job:completed', (job) => completed.push(job.id));

    const { id } = await broker.submit({ service: 'simulation', payload: { result: { image: 'cat.png' } } });
    const job = await jobInState(broker, id, 'succeeded', 'failed');

    expect(job.state).toBe('succeeded');
    expect(job.result).toEqual({ simulated: true, duration_ms: 600, steps: 4, image: 'cat.png' });
    expect(job.attempts).toBe(1);
    expect(completed).toEqual([id]);

    const events = await eventsOf(broker, id);
    const types = events.map((e) => e.type).filter((t) => t !== 'job.progress');
    expect(types).toEqual(['job.queued', 'job.starting', 'job.running', 'job.succeeded']);
    const progress = events.flatMap((e) => (e.type === 'job.progress' ? [e.progress] : []));
    expect(progress.length).toBeGreaterThan(0);
    const values = progress.map((p) => p.value as number);
    expect(values).toEqual([...values].sort((a, b) => a - b));
    expect(new Set(values).size).toBe(values.length);
    // the last value is always sent, even when throttling skipped some in between
    expect(progress.at(-1)).toMatchObject({ stage: 'running', value: 4, max: 4 });
    // every progress event lies between running and succeeded
    const running = events.findIndex((e) => e.type === 'job.running');
    const succeeded = events.findIndex((e) => e.type === 'job.succeeded');
    events.forEach((e, i) => e.type === 'job.progress' && expect(i > running && i < succeeded).toBe(true));
    await waitFor('the worker to be idle again', async () => (await workerState(broker, 'w1')) === 'idle');
  });

  it('sends a job\'s last progress report before its result, and none after it', async () => {
    const broker = await connect();
    let late: (() => void) | undefined;
    await startWorker(broker, {
      connectors: [
        {
          service: 'simulation',
          startsItself: true,
          async run(_job, ctx) {
            await ctx.start();
            // reported in the same turn as the result: no progress interval has passed since the first
            ctx.progress({ stage: 'running', value: 1, max: 2 });
            ctx.progress({ stage: 'running', value: 2, max: 2 });
            late = () => ctx.progress({ stage: 'running', value: 3, max: 2 });
            return { ok: true };
          },
        },
      ],
    });
    const { id } = await broker.submit({ service: 'simulation' });
    await jobInState(broker, id, 'succeeded');
    late!();
    await sleep(100);
    const types = (await eventsOf(broker, id)).map((e) => (e.type === 'job.progress' ? `progress ${e.progress.value}` : e.type));
    expect(types.filter((t) => t.startsWith('progress')), 'the first report, then the last, and nothing after the result').toEqual(['progress 1', 'progress 2']);
    expect(types.at(-1)).toBe('job.succeeded');
  });

  it('sends the progress of all its running jobs in one call per tick, not one per job', async () => {
    const broker = await connect();
    const monitor = await redis.monitor();
    let progressCalls = 0;
    let reports = 0;
    monitor.on('monitor', (_time: string, args: string[]) => {
      if (args[0]?.toLowerCase() === 'fcall' && args[1] === 'emp_progress') {
        progressCalls++;
        reports += (args.length - 10) / 3; // name, key count, key, the prelude's 6 values, then id, token, progress each
      }
    });
    try {
      await startWorker(broker, {
        concurrency: 8,
        progressIntervalMs: 100,
        connectors: [
          {
            service: 'simulation',
            async run(_job, ctx) {
              await ctx.start();
              for (let step = 1; step <= 50; step++) {
                ctx.progress({ stage: 'running', value: step, max: 50 });
                await sleep(10);
              }
              return { ok: true };
            },
          },
        ],
      });
      const ids = await Promise.all(Array.from({ length: 8 }, async () => (await broker.submit({ service: 'simulation' })).id));
      for (const id of ids) await jobInState(broker, id, 'succeeded');
      await sleep(50);

      // eight jobs for about 0.5 s at one report per 100 ms each: ~48 reports in about 8 calls (a few more
      // where a job's start or last report falls off the tick), where one call per report would be ~48
      expect(reports).toBeGreaterThanOrEqual(8 * 3);
      expect(progressCalls).toBeLessThanOrEqual(reports / 3);
      for (const id of ids) {
        const values = (await eventsOf(broker, id)).flatMap((e) => (e.type === 'job.progress' ? [e.progress.value as number] : []));
        expect(values.at(-1)).toBe(50);
        expect(values).toEqual([...values].sort((a, b) => a - b));
      }
    } finally {
      monitor.disconnect();
    }
  });

  it('records a JobFailure with its kind and any other error as retryable', async () => {
    const broker = await connect();
    const worker = await startWorker(broker, {
      connectors: [
        {
          service: 'simulation',
          async run(job) {
            const payload = job.payload as { throw?: string };
            if (payload.throw === 'bad') throw new JobFailure('non_retryable', 'prompt is empty', { type: 'BadPrompt', details: { field: 'prompt' } });
            throw new TypeError('boom');
          },
        },
      ],
    });
    const outcomes: string[] = [];
    worker.on('job:failed', (job, error, outcome) => outcomes.push(`${error.kind}:${outcome}`));

    const bad = await broker.submit({ service: 'simulation', payload: { throw: 'bad' } });
    const flaky = await broker.submit({ service: 'simulation', payload: { throw: 'other' }, max_attempts: 5 });

    const failed = await jobInState(broker, bad.id, 'failed');
    expect(failed.error).toEqual({ kind: 'non_retryable', message: 'prompt is empty', type: 'BadPrompt', details: { field: 'prompt' } });
    expect(failed.attempts).toBe(1);
    const retrying = await jobInState(broker, flaky.id, 'retrying');
    expect(retrying.error).toEqual({ kind: 'retryable', message: 'boom', type: 'TypeError' });
    expect(retrying.failures).toBe(1);
    expect(outcomes.sort()).toEqual(['non_retryable:failed', 'retryable:retrying']);
  });

  it('fails an attempt with kind timeout when it runs past its execution timeout', async () => {
    const broker = await connect();
    const record: { reason?: unknown } = {};
    await startWorker(broker, { connectors: [untilAbortedConnector(record)] });
    const { id } = await broker.submit({
      service: 'simulation',
      deadlines: { execution_timeout_ms: 300 },
      backoff: { delay_ms: 60_000 },
    });
    const job = await jobInState(broker, id, 'retrying', 'failed');
    expect(job.error?.kind).toBe('timeout');
    expect(job.failures).toBe(1);
    expect(record.reason).toMatchObject({ name: 'AbortError', reason: 'timeout' });
  });
});

describe('starting', () => {
  it('leaves the job starting until a connector that starts itself is ready', async () => {
    const broker = await connect();
    let ready!: () => void;
    const modelLoaded = new Promise<void>((resolve) => (ready = resolve));
    await startWorker(broker, {
      connectors: [
        {
          service: 'simulation',
          startsItself: true,
          async run(_job, ctx) {
            ctx.progress({ stage: 'downloading_model', value: 1, max: 2 });
            await modelLoaded;
            await ctx.start();
            return { loaded: true };
          },
        },
      ],
    });
    const { id } = await broker.submit({ service: 'simulation' });
    await waitFor('the download progress', async () => (await broker.getJob(id))?.progress?.stage === 'downloading_model');
    expect((await broker.getJob(id))?.state).toBe('starting');
    ready();
    const job = await jobInState(broker, id, 'succeeded');
    expect(job.result).toEqual({ loaded: true });
    const types = (await eventsOf(broker, id)).map((e) => e.type);
    expect(types).toEqual(['job.queued', 'job.starting', 'job.progress', 'job.running', 'job.succeeded']);
  });

  it('registers again when the broker has forgotten it, and keeps taking jobs', async () => {
    const broker = await connect();
    await startWorker(broker, { heartbeatMs: 50 });
    await waitFor('the worker to be idle', async () => (await workerState(broker, 'w1')) === 'idle');
    await redis.del(broker.keys.worker(POOL, 'w1'));
    await waitFor('the worker to be registered again', async () => (await workerState(broker, 'w1')) === 'idle');
    const { id } = await broker.submit({ service: 'simulation' });
    expect((await jobInState(broker, id, 'succeeded')).attempts).toBe(1);
  });
});

  it('registers again when its capabilities change, and takes a job that only now matches', async () => {
    const broker = await connect();
    const worker = await startWorker(broker);
    const { id, routable } = await broker.submit({ service: 'simulation', requirements: { models: ['sdxl.safetensors'] } });
    expect(routable).toBe(false);

    expect(await worker.updateCapabilities({ models: { simulation: ['sdxl.safetensors'] } })).toBe(true);
    expect((await jobInState(broker, id, 'succeeded')).worker).toBe('w1');
    const [registered] = await broker.workers(POOL);
    expect(JSON.parse(registered!.capabilities!)).toMatchObject({ services: ['simulation'], models: { simulation: ['sdxl.safetensors'] } });
    expect(await worker.updateCapabilities({ models: { simulation: ['sdxl.safetensors'] } })).toBe(false);
  });

describe('model reports', () => {
  it('names the models of the jobs it completed last as loaded, most recent first, and nothing before it ran one', async () => {
    const broker = await connect();
    const worker = await startWorker(broker, { warmModels: 2, capabilities: { services: ['simulation'], models: { simulation: '*' } } });
    const reported = async () => (await broker.workers(POOL))[0]?.models;
    await jobInState(broker, (await broker.submit({ service: 'simulation' })).id, 'succeeded');
    expect(await reported()).toBeUndefined();
    for (const model of ['a', 'b', 'c']) {
      await jobInState(broker, (await broker.submit({ service: 'simulation', requirements: { models: [model] } })).id, 'succeeded');
    }
    await waitFor('the report of the last two models', async () => (await reported()) === JSON.stringify({ loaded: ['c', 'b'], on_disk: [], downloading: [] }));
    expect(await redis.hgetall(broker.keys.workerModels(POOL, 'w1'))).toEqual({ b: '3', c: '3' });
    await worker.stop({ graceMs: 0 });
    expect(await redis.exists(broker.keys.workerModels(POOL, 'w1'))).toBe(0);
  });
});

describe('waiting without polling', () => {
  it('fills its free slots with one claim call when it starts, and runs no more jobs at once than its concurrency', async () => {
    const broker = await connect();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await broker.submit({ service: 'simulation', priority: i })).id);
    let running = 0;
    let most = 0;
    const release: Array<() => void> = [];
    const before = await fcallCalls();
    const worker = await startWorker(broker, {
      concurrency: 3,
      connectors: [
        {
          service: 'simulation',
          startsItself: true,
          run: () =>
            new Promise((resolve) => {
              most = Math.max(most, ++running);
              release.push(() => {
                running--;
                resolve(null);
              });
            }),
        },
      ],
    });
    const completed: string[] = [];
    worker.on('job:completed', (job) => completed.push(job.id));
    await waitFor('three jobs running', async () => (running === 3 ? true : undefined));
    // registration, then one claim for the three free slots (the highest priorities first)
    expect(await fcallCalls() - before).toBeLessThanOrEqual(2);
    expect(await Promise.all(ids.slice(2).map(async (id) => (await broker.getJob(id))?.state))).toEqual(['starting', 'starting', 'starting']);
    while (completed.length < 5) {
      release.splice(0).forEach((done) => done());
      await sleep(20);
    }
    expect(most).toBe(3);
  });

  it('sends Redis no claims while idle, and a submit wakes it', async () => {
    const broker = await connect();
    // heartbeats are FCALLs too: keep them out of the quiet window
    const worker = await startWorker(broker, { heartbeatMs: 60_000 });
    await waitFor('the worker to be idle', async () => (await workerState(broker, 'w1')) === 'idle');

    const callsBefore = await fcallCalls();
    const eventsBefore = (await eventsOf(broker)).length;
    await sleep(500);
    expect(await fcallCalls()).toBe(callsBefore);
    expect((await eventsOf(broker)).length).toBe(eventsBefore);

    const started: string[] = [];
    worker.on('job:started', (job) => started.push(job.id));
    const { id } = await broker.submit({ service: 'simulation' });
    // well inside the 30 s safety-net recheck: only the wake-up can have started it
    await jobInState(broker, id, 'succeeded');
    expect(started).toEqual([id]);
  });

  it('takes the job a wake-up is for with the claim it queued behind its signal wait, not another round trip', async () => {
    const broker = await connect();
    const worker = await startWorker(broker, { heartbeatMs: 60_000 });
    await waitFor('the worker to be idle', async () => (await workerState(broker, 'w1')) === 'idle');
    // claims on the broker's own connection would go through claim(); the queued one does not
    const claims: string[] = [];
    const claim = broker.claim.bind(broker);
    broker.claim = (pool, workerId, wokenFor) => {
      claims.push(workerId);
      return claim(pool, workerId, wokenFor);
    };

    const first = await broker.submit({ service: 'simulation' });
    await jobInState(broker, first.id, 'succeeded');
    // idle again: the next wake-up is served the same way
    const second = await broker.submit({ service: 'simulation' });
    expect((await jobInState(broker, second.id, 'succeeded')).worker).toBe('w1');
    expect(claims).toEqual([]);
    expect(worker.running).toBe(0);
  });

  it('sends no claim while idle for many times its signal wait', async () => {
    const broker = await connect();
    // a wait with a claim queued behind it must not time out: the claim would run for nothing
    const worker = await startWorker(broker, { heartbeatMs: 60_000, signalWaitMs: 20 });
    await waitFor('the worker to be idle', async () => (await workerState(broker, 'w1')) === 'idle');
    const callsBefore = await fcallCalls();
    await sleep(300);
    expect(await fcallCalls()).toBe(callsBefore);
    const { id } = await broker.submit({ service: 'simulation' });
    expect((await jobInState(broker, id, 'succeeded')).worker).toBe('w1');
    expect(worker.running).toBe(0);
  });

  it('stops at once while idle, its queued claim released by going draining', async () => {
    const broker = await connect();
    const worker = await startWorker(broker, { heartbeatMs: 60_000 });
    await waitFor('the worker to be idle', async () => (await workerState(broker, 'w1')) === 'idle');
    // a queued claim still waiting would hold stop() for its whole grace period (vitest's timeout is shorter)
    await worker.stop({ graceMs: 60_000 });
    expect(await workerState(broker, 'w1')).toBe('offline');
    // nothing is claimed for a stopped worker
    const { id } = await broker.submit({ service: 'simulation' });
    await sleep(100);
    expect((await broker.getJob(id))?.state).toBe('queued');
  });

  it('aborts a canceled running job within moments, through the signal list', async () => {
    const broker = await connect();
    const record: { abortedAt?: number; reason?: unknown } = {};
    // no heartbeat during the test: the notice must come through the blocking waiter
    const worker = await startWorker(broker, { heartbeatMs: 60_000, connectors: [untilAbortedConnector(record)] });
    const dropped: string[] = [];
    worker.on('job:dropped', (job, reason) => dropped.push(`${job.id}:${reason}`));

    const { id } = await broker.submit({ service: 'simulation' });
    await jobInState(broker, id, 'running');
    await broker.cancel(id, 'user changed their mind');

    await waitFor('the connector to see the abort', () => record.abortedAt !== undefined && worker.running === 0, 5_000);
    expect(record.reason).toMatchObject({ name: 'AbortError', reason: 'canceled' });
    expect(dropped).toEqual([`${id}:canceled`]);
    const job = await broker.getJob(id);
    expect(job?.state).toBe('canceled');
    expect(job?.cancel_reason).toBe('user changed their mind');
  });

  it('drops a job the heartbeat reports canceled, if the notice was missed', async () => {
    const broker = await connect();
    const record: { abortedAt?: number; reason?: unknown } = {};
    const worker = await startWorker(broker, { heartbeatMs: 100, connectors: [untilAbortedConnector(record)] });
    const { id } = await broker.submit({ service: 'simulation' });
    await jobInState(broker, id, 'running');
    // cancel and swallow the notice in one transaction, so the waiter never sees it
    // (the broker has no such call: this is the function's prelude, see includes/00-base.lua)
    const c = broker.config;
    const prelude = ['', c.eventsMaxLen, c.leaseMs, c.retentionMs, c.failedRetentionMs, c.avoidMs];
    await redis
      .multi()
      .call('FCALL', 'emp_cancel', 1, broker.keys.anchor(POOL), ...prelude, id, '')
      .del(broker.keys.signal(POOL, 'w1'))
      .exec();
    expect((await broker.getJob(id))?.state).toBe('canceled');
    await waitFor('the connector to see the abort', () => record.abortedAt !== undefined && worker.running === 0, 5_000);
    expect(record.reason).toMatchObject({ reason: 'canceled' });
  });
});

describe('concurrency', () => {
  it('runs at most `concurrency` jobs at once and finishes them all', async () => {
    const broker = await connect();
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push((await broker.submit({ service: 'simulation' })).id);

    const inner = simulationConnector({ durationMs: 200, steps: 2 });
    let current = 0;
    let most = 0;
    const counting: Connector = {
      service: 'simulation',
      async run(job, ctx) {
        most = Math.max(most, ++current);
        try {
          return await inner.run(job, ctx);
        } finally {
          current--;
        }
      },
    };
    await startWorker(broker, { concurrency: 4, connectors: [counting] });

    for (const id of ids) expect((await jobInState(broker, id, 'succeeded', 'failed')).state).toBe('succeeded');
    expect(most).toBe(4);
    const events = await eventsOf(broker);
    expect(events.filter((e) => e.type === 'job.succeeded')).toHaveLength(8);
  });

  it('keeps one blocking waiter: a cancel reaches a busy worker with free slots and with none', async () => {
    const broker = await connect();
    const record: { abortedAt?: number } = {};
    const worker = await startWorker(broker, { concurrency: 2, heartbeatMs: 60_000, connectors: [untilAbortedConnector(record)] });
    const a = await broker.submit({ service: 'simulation' });
    const b = await broker.submit({ service: 'simulation' });
    await jobInState(broker, a.id, 'running');
    await jobInState(broker, b.id, 'running');
    const clients = await redis.client('LIST');
    expect(String(clients).match(/cmd=blmpop/g)).toHaveLength(1);

    await broker.cancel(a.id);
    await waitFor('one job to be dropped', () => worker.running === 1, 5_000);
    await broker.cancel(b.id);
    await waitFor('both jobs to be dropped', () => worker.running === 0, 5_000);
  });
});

describe('stopping', () => {
  it('hands a job that outlasts the grace period back without charging the user, and shows offline', async () => {
    const broker = await connect();
    const worker = await startWorker(broker, { simulation: { durationMs: 60_000, steps: 10 } });
    const { id } = await broker.submit({ service: 'simulation' });
    await jobInState(broker, id, 'running');

    await worker.stop({ graceMs: 200 });

    const job = await broker.getJob(id);
    expect(job?.state).toBe('queued');
    expect(job?.infra_failures).toBe(1);
    expect(job?.failures).toBe(0);
    expect(job?.error).toMatchObject({ kind: 'infrastructure', message: 'worker shutting down' });
    expect(worker.running).toBe(0);
    expect(await workerState(broker, 'w1')).toBe('offline');
    const clients = String(await redis.client('LIST'));
    expect(clients).not.toMatch(/cmd=blmpop/);
  });

  it('lets a job finish within the grace period and claims nothing more', async () => {
    const broker = await connect();
    const first = await broker.submit({ service: 'simulation' });
    const second = await broker.submit({ service: 'simulation' });
    const worker = await startWorker(broker, { simulation: { durationMs: 300, steps: 3 } });
    await jobInState(broker, first.id, 'running');

    await worker.stop({ graceMs: 10_000 });

    expect((await broker.getJob(first.id))?.state).toBe('succeeded');
    expect((await broker.getJob(second.id))?.state).toBe('queued');
    expect((await broker.getJob(second.id))?.attempts).toBe(0);
    expect(await workerState(broker, 'w1')).toBe('offline');
  });
});

describe('a worker that dies', () => {
  it('loses its job when its lease runs out; another worker runs it once', async () => {
    const leaseMs = 500;
    const broker = await connect({ leaseMs });
    const scheduler = new Scheduler(broker, { maxIntervalMs: 100 });
    schedulers.push(scheduler);
    scheduler.start();
    const { id } = await broker.submit({ service: 'simulation' });

    const { child, exited, output } = spawnWorker({ worker_id: 'doomed', lease_ms: leaseMs, durationMs: 60_000 });

    await waitFor(`the doomed worker to run the job (its output: ${output()})`, async () => {
      const job = await broker.getJob(id);
      return job?.state === 'running' && job.worker === 'doomed';
    }, 30_000);
    // the survivor waits idle, so it can only get the job once the lease is reaped
    const survivor = await startWorker(broker, { id: 'survivor', simulation: { durationMs: 100, steps: 1 } });
    await sleep(3 * leaseMs); // the doomed worker's heartbeats keep its lease meanwhile
    expect((await broker.getJob(id))?.worker).toBe('doomed');

    child.kill('SIGKILL');
    await exited;

    const job = await jobInState(broker, id, 'succeeded', 'failed');
    expect(job.state).toBe('succeeded');
    expect(job.attempts).toBe(2);
    expect(job.infra_failures).toBe(1);
    expect(job.failures).toBe(0);
    expect(job.result).toMatchObject({ simulated: true, duration_ms: 100 });
    // the job is succeeded in Redis a moment before the survivor has handled the reply
    await waitFor('the survivor to let go of the job', async () => survivor.running === 0, 5_000);

    const events = await eventsOf(broker, id);
    expect(events.filter((e) => e.type === 'job.succeeded')).toHaveLength(1);
    expect(events.flatMap((e) => (e.type === 'job.starting' ? [e.worker] : []))).toEqual(['doomed', 'survivor']);
    expect(events.find((e) => e.type === 'job.queued' && e.reason === 'worker_lost')).toBeDefined();
  });
});

describe('a worker process asked to stop', () => {
  it('hands its running job back at once on SIGTERM, without waiting out the lease, and goes offline', async () => {
    // a lease far longer than the wait below: only the hand-back can requeue the job in time
    const broker = await connect({ leaseMs: 60_000 });
    const { id } = await broker.submit({ service: 'simulation' });
    const { child, exited, output } = spawnWorker({ worker_id: 'spot-1', lease_ms: 60_000, durationMs: 600_000, grace_ms: 0 });
    await waitFor(`the worker to run the job (its output: ${output()})`, async () => (await broker.getJob(id))?.state === 'running', 30_000);

    child.kill('SIGTERM');

    const job = await jobInState(broker, id, 'queued');
    expect(job.error).toMatchObject({ kind: 'infrastructure', message: 'worker shutting down' });
    expect(job.infra_failures).toBe(1);
    expect(job.failures).toBe(0);
    expect(await exited).toBe(0);
    expect(output()).toContain('stopped');
    expect(await workerState(broker, 'spot-1')).toBe('offline');

    // and another worker runs it to the end
    await startWorker(broker, { id: 'survivor', simulation: { durationMs: 50, steps: 1 } });
    const done = await jobInState(broker, id, 'succeeded');
    expect(done.attempts).toBe(2);
  });
});

describe('logs', () => {
  it('carry worker, machine, service, connector and job, plus deployment env and region', async () => {
    const broker = await connect();
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
    const connector = { ...simulationConnector({ durationMs: 10, steps: 1 }), id: 'simulation@local' };
    await startWorker(broker, { logger, connectors: [connector], machineId: 'm-7', deploymentEnv: 'staging', region: 'eu-west' });
    const { id } = await broker.submit({ service: 'simulation' });
    await jobInState(broker, id, 'succeeded');
    const jobLines = lines.filter((l) => l.job_id === id);
    expect(jobLines.map((l) => l.msg)).toEqual(expect.arrayContaining(['job received', 'job started', 'job completed']));
    for (const line of jobLines) {
      expect(line).toMatchObject({
        worker_id: 'w1',
        machine_id: 'm-7',
        service: 'simulation',
        service_type: 'simulation',
        connector_id: 'simulation@local',
        deployment_env: 'staging',
        region: 'eu-west',
      });
    }
    expect(lines.find((l) => l.msg === 'worker started')).toMatchObject({ deployment_env: 'staging', region: 'eu-west', machine_id: 'm-7' });
  });
});

/** Starts the worker process entry (main.ts) as a child process against the test's Redis. */
function spawnWorker(options: { worker_id: string; lease_ms: number; durationMs: number; grace_ms?: number }): { child: ChildProcess; exited: Promise<number | null>; output: () => string } {
  const { durationMs, ...rest } = options;
  const config: WorkerProcessConfigInput = {
    redis_url: db.url(),
    pool: 'standard',
    connectors: [{ type: 'simulation', options: { durationMs, steps: 10 } }],
    ...rest,
  };
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER_MAIN], {
    env: { ...process.env, [WORKER_CONFIG_ENV]: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, output: () => output };
}
