import { usePrivateRedis } from '@emp/testkit/private-redis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Broker, type ClaimedJob } from './broker';
import { IdempotencyConflictError, NotRetryableError, ValidationError } from './errors';
import { KeyLayout } from './keys';
import { undeclaredStreamEntries } from './testing/stream-contract';
import type { SubmitWorkflowInput } from './workflow';

const { redis } = usePrivateRedis();
const keys = new KeyLayout();
let now = 1_000_000;

beforeEach(() => {
  now = 1_000_000;
});

afterEach(async () => {
  expect(await undeclaredStreamEntries(redis), 'stream entries outside the event union').toEqual([]);
});

async function broker(): Promise<Broker> {
  const b = await Broker.connect({ redis, clock: () => now, config: { leaseMs: 10_000, avoidMs: 0 } });
  await b.registerWorker({ id: 'w', pool: 'standard', capabilities: { services: ['simulation'] } });
  return b;
}

async function claim(b: Broker): Promise<ClaimedJob> {
  now += 1;
  const claimed = await b.claim('standard', 'w');
  if (!claimed.job) throw new Error('no job to claim');
  return claimed.job;
}

async function nothingQueued(b: Broker): Promise<void> {
  expect((await b.claim('standard', 'w')).job ?? null).toBeNull();
}

/** The workflow events in the pool's stream, as [type, step, error, optional] (the fields the event has). */
async function workflowEvents(b: Broker): Promise<unknown[][]> {
  return (await b.readEvents('standard', '0', { count: 1000 }))
    .filter((e) => e.type.startsWith('workflow.'))
    .map((e) => [e.type, ...(['step', 'error', 'optional'] as const).filter((f) => f in e).map((f) => (e as Record<string, unknown>)[f])]);
}

function failing(message: string) {
  return { kind: 'non_retryable' as const, message };
}

const threeSteps: SubmitWorkflowInput = {
  pool: 'standard',
  steps: {
    generate: { service: 'simulation', payload: { prompt: 'a cat', count: 2 } },
    upscale: { service: 'simulation', needs: ['generate'], payload: { image: { $from: 'generate.images[0]' }, scale: 2 } },
    caption: { service: 'simulation', needs: ['upscale'], payload: { image: { $from: 'upscale.url' }, all: { $from: 'generate.images' } } },
  },
};

describe('workflow validation', () => {
  const refused = async (input: unknown, ...messages: string[]) => {
    const b = await broker();
    const error = await b.submitWorkflow(input as SubmitWorkflowInput).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    for (const message of messages) expect((error as Error).message).toContain(message);
  };

  it('names an unknown need and the steps there are', async () => {
    await refused({ steps: { a: { service: 'simulation' }, b: { service: 'simulation', needs: ['c'] } } }, "steps.b.needs.0: 'c' is not a step of this workflow (its steps: a, b)");
  });

  it('names a cycle', async () => {
    await refused(
      { steps: { a: { service: 'simulation', needs: ['c'] }, b: { service: 'simulation', needs: ['a'] }, c: { service: 'simulation', needs: ['b'] } } },
      "the steps' needs form a cycle: a -> b -> c -> a",
    );
    await refused({ steps: { a: { service: 'simulation', needs: ['a'] } } }, 'steps.a.needs.0: a step cannot need itself');
  });

  it('bounds the size', async () => {
    const steps = Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`s${i}`, { service: 'simulation' }]));
    await refused({ steps }, 'steps: a workflow has at most 50 steps');
    await refused({ steps: {} }, 'a workflow has at least one step');
  });

  it('refuses references to steps the step does not wait for, and malformed ones', async () => {
    await refused(
      { steps: { a: { service: 'simulation' }, b: { service: 'simulation', payload: { x: { $from: 'a.images[0]' } } } } },
      'steps.b.payload.x: {"$from":"a.images[0]"} names \'a\', which this step does not need (add it to needs)',
    );
    await refused(
      { steps: { a: { service: 'simulation' }, b: { service: 'simulation', needs: ['a'], payload: { x: { $from: 'a.images[zero]' } } } } },
      "steps.b.payload.x: {\"$from\":\"a.images[zero]\"}: 'a.images[zero]' is not a path: expected .field or [index] at '[zero]'",
    );
    await refused(
      { steps: { a: { service: 'simulation' }, b: { service: 'simulation', needs: ['a'], payload: { x: { $from: 'a', y: 1 } } } } },
      'a reference is an object with $from alone',
    );
    await refused({ steps: { a: { service: 'simulation', payload: { x: { $item: 'url' } } } } }, '$item is only meaningful in a step with for_each');
    await refused({ steps: { a: { service: 'simulation', for_each: [1, 2] } } }, 'steps.a.for_each: for_each takes a reference');
    await refused({ steps: { a: { service: 'simulation', priority: 5 } } }, 'steps.a');
  });

  it('refuses a step whose requirements name another pool', async () => {
    await refused({ pool: 'standard', steps: { a: { service: 'simulation', requirements: { pool: 'heavy' } } } }, "steps.a.requirements.pool: names pool heavy, but every step of a workflow runs in the workflow's pool (standard)");
  });
});

describe('workflow progression', () => {
  it('runs three steps in order, each payload built from the results before it, and records every step', async () => {
    const b = await broker();
    const submitted = await b.submitWorkflow(threeSteps);
    expect(submitted.state).toBe('running');

    const generate = await claim(b);
    expect(generate.workflowId).toBe(submitted.id);
    expect(generate.payload).toEqual({ prompt: 'a cat', count: 2 });
    await nothingQueued(b);
    await b.complete(generate.lease, { images: ['a.png', 'b.png'], big: 12345678901234567890, empty: [] });

    const upscale = await claim(b);
    expect(upscale.payload).toEqual({ image: 'a.png', scale: 2 });
    await b.complete(upscale.lease, { url: 'a-2x.png' });

    const caption = await claim(b);
    expect(caption.payload).toEqual({ image: 'a-2x.png', all: ['a.png', 'b.png'] });
    await b.complete(caption.lease, { text: 'a cat' });

    const workflow = await b.getWorkflow(submitted.id);
    expect(workflow).toMatchObject({ state: 'succeeded', progress: { ended: 3, total: 3 } });
    expect(workflow!.steps.map((s) => [s.name, s.state])).toEqual([['generate', 'succeeded'], ['upscale', 'succeeded'], ['caption', 'succeeded']]);
    expect(workflow!.steps[2]!.output).toEqual({ text: 'a cat' });
    expect(workflow!.steps[1]!.ready_at).toBeGreaterThan(0);
    const types = (await b.readEvents('standard', '0', { count: 1000 })).filter((e) => e.type.startsWith('workflow.')).map((e) => [e.type, 'step' in e ? e.step : '']);
    expect(types).toEqual([
      ['workflow.submitted', ''],
      ['workflow.step_succeeded', 'generate'],
      ['workflow.step_succeeded', 'upscale'],
      ['workflow.step_succeeded', 'caption'],
      ['workflow.succeeded', ''],
    ]);
  });

  it('passes result JSON on as written (empty arrays, long numbers)', async () => {
    const b = await broker();
    await b.submitWorkflow({
      steps: {
        a: { service: 'simulation' },
        b: { service: 'simulation', needs: ['a'], payload: { v: { $from: 'a' } } },
      },
      pool: 'standard',
    });
    const a = await claim(b);
    await b.complete(a.lease, { empty: [], obj: {}, big: '12345678901234567890', n: 1.5e-7, s: 'q"\\[' });
    const next = await claim(b);
    expect(next.payload).toEqual({ v: { empty: [], obj: {}, big: '12345678901234567890', n: 1.5e-7, s: 'q"\\[' } });
  });

  it('answers a repeat with the same idempotency key with the first workflow, refuses the key for another, and keeps tenants apart', async () => {
    const b = await broker();
    const first = await b.submitWorkflow({ ...threeSteps, idempotency_key: 'order-7' });
    expect(first).toMatchObject({ state: 'running', duplicate: false });
    // the first step runs: the repeat answers the workflow as it is now, and starts nothing
    await b.complete((await claim(b)).lease, { images: ['a.png'] });
    const again = await b.submitWorkflow({ ...threeSteps, idempotency_key: 'order-7' });
    expect(again).toEqual({ id: first.id, pool: 'standard', state: 'running', duplicate: true });
    expect((await b.listWorkflows({ limit: 10 })).map((w) => w.id)).toEqual([first.id]);
    const upscale = await claim(b);
    expect(upscale.payload).toMatchObject({ image: 'a.png' });
    await nothingQueued(b); // one upscale: the repeat queued no generate

    const other = { ...threeSteps, priority: 5, idempotency_key: 'order-7' };
    const conflict = await b.submitWorkflow(other).catch((e: unknown) => e);
    expect(conflict).toBeInstanceOf(IdempotencyConflictError);
    expect((conflict as Error).message).toContain(`idempotency key was used for a different workflow (${first.id})`);
    // another tenant's key of the same name is its own
    const theirs = await b.submitWorkflow({ ...threeSteps, tenant: 'acme', idempotency_key: 'order-7' });
    expect(theirs.duplicate).toBe(false);
    expect(theirs.id).not.toBe(first.id);
    // a job's key of the same name is not a workflow's
    const job = await b.submit({ service: 'simulation', requirements: { pool: 'standard' }, idempotency_key: 'order-7' });
    expect(job.duplicate).toBe(false);
  });

  it('fails a step whose reference does not resolve, naming the reference, and so the workflow', async () => {
    const b = await broker();
    const { id } = await b.submitWorkflow(threeSteps);
    const generate = await claim(b);
    await b.complete(generate.lease, { pictures: [] });
    await nothingQueued(b);
    const workflow = await b.getWorkflow(id);
    expect(workflow!.state).toBe('failed');
    expect(workflow!.failed_step).toBe('upscale');
    expect(workflow!.error).toBe('step upscale failed: reference {"$from":"generate.images[0]"} does not resolve: the result of step generate has no field images');
    expect(workflow!.steps.map((s) => s.state)).toEqual(['succeeded', 'failed', 'canceled']);
  });

  it('fails the workflow when a step fails after its retries, and cancels what is pending or running', async () => {
    const b = await broker();
    const { id } = await b.submitWorkflow({
      pool: 'standard',
      steps: {
        a: { service: 'simulation' },
        b: { service: 'simulation' },
        c: { service: 'simulation', needs: ['a', 'b'] },
      },
    });
    const a = await claim(b);
    const bJob = await claim(b);
    await b.fail(a.lease, failing('bad prompt'));
    const workflow = await b.getWorkflow(id);
    expect(workflow).toMatchObject({ state: 'failed', failed_step: 'a', error: `step a failed: job ${a.id} failed: bad prompt` });
    expect(workflow!.steps.map((s) => s.state)).toEqual(['failed', 'canceled', 'canceled']);
    expect((await b.getJob(bJob.id))!.state).toBe('canceled');
    const failure = `job ${a.id} failed: bad prompt`;
    expect(await workflowEvents(b)).toEqual([
      ['workflow.submitted'],
      ['workflow.step_failed', 'a', failure, false],
      ['workflow.failed', 'a', `step a failed: ${failure}`],
    ]);
    await expect(b.complete(bJob.lease, {})).rejects.toThrow(/LEASE_LOST|no longer held/);
    await expect(b.retry(a.id)).rejects.toBeInstanceOf(NotRetryableError);
  });

  it('a failure that ends its workflow and claims next leaves the worker busy with the job it claimed', async () => {
    const b = await broker();
    await b.submitWorkflow({ pool: 'standard', steps: { a: { service: 'simulation' }, b: { service: 'simulation' } } });
    const a = await claim(b);
    const bJob = await claim(b);
    const plain = await b.submit({ service: 'simulation' });
    // a's failure fails the workflow, which cancels b, the worker's other job: left with none, the
    // worker is recorded idle in the same call, before it claims the plain job
    const { outcome, next } = await b.fail(a.lease, failing('bad prompt'), { claimNext: true });
    expect(outcome).toBe('failed');
    expect((await b.getJob(bJob.id))!.state).toBe('canceled');
    expect(next?.job?.id).toBe(plain.id);
    expect(await redis.hget(keys.worker('standard', 'w'), 'state')).toBe('busy');
    expect(await redis.hexists(keys.worker('standard', 'w'), 'waiting')).toBe(0);
    expect(await redis.hexists(keys.idle('standard'), 'w')).toBe(0);
    expect(await redis.smembers(keys.workerJobs('standard', 'w'))).toEqual([plain.id]);
  });

  it('lets an optional step fail: its dependents run and its result reads as null', async () => {
    const b = await broker();
    const { id } = await b.submitWorkflow({
      pool: 'standard',
      steps: {
        a: { service: 'simulation', optional: true },
        b: { service: 'simulation', needs: ['a'], payload: { x: { $from: 'a.url' } } },
      },
    });
    const a = await claim(b);
    await b.fail(a.lease, failing('nope'));
    const next = await claim(b);
    expect(next.payload).toEqual({ x: null });
    await b.complete(next.lease, 1);
    expect((await b.getWorkflow(id))!.state).toBe('succeeded');
    expect(await workflowEvents(b)).toEqual([
      ['workflow.submitted'],
      ['workflow.step_failed', 'a', `job ${a.id} failed: nope`, true],
      ['workflow.step_succeeded', 'b'],
      ['workflow.succeeded'],
    ]);
  });

  it('fans out one job per item and fans in their results in order', async () => {
    const b = await broker();
    const { id } = await b.submitWorkflow({
      pool: 'standard',
      steps: {
        generate: { service: 'simulation' },
        upscale: { service: 'simulation', needs: ['generate'], for_each: { $from: 'generate.images' }, payload: { image: { $item: 'url' }, all: { $item: '' } } },
        collage: { service: 'simulation', needs: ['upscale'], payload: { images: { $from: 'upscale' } } },
      },
    });
    const g = await claim(b);
    await b.complete(g.lease, { images: [{ url: 'a' }, { url: 'b' }, { url: 'c' }] });
    const items = [await claim(b), await claim(b), await claim(b)];
    expect(items.map((j) => j.payload)).toEqual([
      { image: 'a', all: { url: 'a' } },
      { image: 'b', all: { url: 'b' } },
      { image: 'c', all: { url: 'c' } },
    ]);
    // finishing out of order: the fan-in keeps the items' order
    await b.complete(items[2]!.lease, 'C');
    await b.complete(items[0]!.lease, 'A');
    await nothingQueued(b);
    expect((await b.getWorkflow(id))!.steps[1]!.state).toBe('starting');
    await b.complete(items[1]!.lease, 'B');
    const collage = await claim(b);
    expect(collage.payload).toEqual({ images: ['A', 'B', 'C'] });
  });

  it('succeeds a fan-out over an empty list at once, with an empty list as its result', async () => {
    const b = await broker();
    const { id } = await b.submitWorkflow({
      pool: 'standard',
      steps: {
        a: { service: 'simulation' },
        each: { service: 'simulation', needs: ['a'], for_each: { $from: 'a.items' }, payload: { x: { $item: '' } } },
        after: { service: 'simulation', needs: ['each'], payload: { all: { $from: 'each' } } },
      },
    });
    const a = await claim(b);
    await b.complete(a.lease, { items: [] });
    const after = await claim(b);
    expect(after.payload).toEqual({ all: [] });
    await b.complete(after.lease, null);
    const workflow = await b.getWorkflow(id);
    expect(workflow!.state).toBe('succeeded');
    expect(workflow!.steps[1]).toMatchObject({ state: 'succeeded', jobs: [], output: [] });
  });

  it('fails an optional fan-out at its first failed item, cancels its other items, and goes on', async () => {
    const b = await broker();
    const { id } = await b.submitWorkflow({
      pool: 'standard',
      steps: {
        a: { service: 'simulation' },
        each: { service: 'simulation', needs: ['a'], optional: true, for_each: { $from: 'a' } },
        after: { service: 'simulation', needs: ['each'], payload: { all: { $from: 'each' } } },
      },
    });
    const a = await claim(b);
    await b.complete(a.lease, [1, 2, 3]);
    const items = [await claim(b), await claim(b)];
    await b.fail(items[0]!.lease, failing('bad item'));
    expect((await b.getJob(items[1]!.id))!.state).toBe('canceled');
    const after = await claim(b);
    expect(after.payload).toEqual({ all: null });
    await b.complete(after.lease, null);
    const workflow = await b.getWorkflow(id);
    expect(workflow!.state).toBe('succeeded');
    expect(workflow!.steps[1]!.state).toBe('failed');
    expect(workflow!.steps[1]!.jobs.map((j) => j.state)).toEqual(['failed', 'canceled', 'canceled']);
  });

  it('cancels the other items of an optional fan-out that fails as the last step, before the workflow succeeds', async () => {
    const b = await broker();
    const { id } = await b.submitWorkflow({
      pool: 'standard',
      steps: {
        a: { service: 'simulation' },
        each: { service: 'simulation', needs: ['a'], optional: true, for_each: { $from: 'a' } },
      },
    });
    const a = await claim(b);
    await b.complete(a.lease, [1, 2, 3]);
    const first = await claim(b);
    await b.fail(first.lease, failing('bad item'));
    const workflow = await b.getWorkflow(id);
    expect(workflow!.state).toBe('succeeded');
    // no item of the ended workflow is left to run
    expect(workflow!.steps[1]!.jobs.map((j) => j.state)).toEqual(['failed', 'canceled', 'canceled']);
    await nothingQueued(b);
    const events = await b.readEvents('standard', '0', { count: 10_000 });
    const end = events.findIndex((e) => e.type === 'workflow.succeeded');
    expect(events.slice(end + 1).map((e) => e.type)).toEqual([]);
  });

  it('resolves references through results with escapes, unicode, nesting and every kind of value', async () => {
    const b = await broker();
    await b.submitWorkflow({
      pool: 'standard',
      steps: {
        a: { service: 'simulation' },
        b: {
          service: 'simulation',
          needs: ['a'],
          payload: {
            k: { $from: 'a.k' },
            deep: { $from: 'a.list[1][1][0]' },
            obj: { $from: 'a.list[2]' },
            t: { $from: 'a.t' },
            f: { $from: 'a.f' },
            n: { $from: 'a.n' },
            num: { $from: 'a.num' },
            u: { $from: 'a.u' },
            last: { $from: 'a.last' },
          },
        },
      },
    });
    const first = await claim(b);
    const result = {
      'k"\\': 'decoy',
      x: 'a string with "quotes", \\ backslashes, } and ] and { [',
      list: ['"]', [1, [-2.5e3, null]], { 'k\\"}': { k: '}' }, k: ['é', '😀'] }],
      t: true,
      f: false,
      n: null,
      num: -0.125,
      u: 'é 😀 \u0000 \n',
      k: 'the real k',
      last: { a: [] },
    };
    await b.complete(first.lease, result);
    const next = await claim(b);
    expect(next.payload).toEqual({
      k: 'the real k',
      deep: -2500,
      obj: result.list[2],
      t: true,
      f: false,
      n: null,
      num: -0.125,
      u: result.u,
      last: { a: [] },
    });
  });

  it('resolves a field past a key that JSON text may hold but cjson cannot decode (a lone surrogate)', async () => {
    const b = await broker();
    const { id } = await b.submitWorkflow({
      pool: 'standard',
      steps: {
        a: { service: 'simulation' },
        b: { service: 'simulation', needs: ['a'], payload: { k: { $from: 'a.k' }, odd: { $from: 'a.odd' } } },
      },
    });
    const first = await claim(b);
    await b.complete(first.lease, { '\ud800': 1, odd: { '\udc00x': 'y' }, k: 'found' });
    const next = await claim(b);
    expect(next.payload).toEqual({ k: 'found', odd: { '\udc00x': 'y' } });
    expect((await b.getWorkflow(id))!.steps[0]!.state).toBe('succeeded');
  });

  it('names how many items a list has when an index is past its end', async () => {
    const b = await broker();
    const { id } = await b.submitWorkflow({
      pool: 'standard',
      steps: { a: { service: 'simulation' }, b: { service: 'simulation', needs: ['a'], payload: { x: { $from: 'a.images[3]' } } } },
    });
    const a = await claim(b);
    await b.complete(a.lease, { images: ['one', ['t', 'w', 'o', ']']] });
    expect((await b.getWorkflow(id))!.error).toBe(
      'step b failed: reference {"$from":"a.images[3]"} does not resolve: the result of step a at images has 2 items, no [3]',
    );
  });

  it('refuses a fan-out over more than 100 items', async () => {
    const b = await broker();
    const { id } = await b.submitWorkflow({
      pool: 'standard',
      steps: { a: { service: 'simulation' }, b: { service: 'simulation', needs: ['a'], for_each: { $from: 'a' } } },
    });
    const a = await claim(b);
    // (the list is read up to its 101st item, however long it is)
    await b.complete(a.lease, Array.from({ length: 5_000 }, (_, i) => i));
    expect((await b.getWorkflow(id))!.error).toBe('step b failed: for_each {"$from":"a"} has more than 100 items, the limit');
  });

  it('cancels: queued and running steps end canceled, the worker is told, nothing more is queued', async () => {
    const b = await broker();
    const { id } = await b.submitWorkflow({ pool: 'standard', steps: { a: { service: 'simulation' }, b: { service: 'simulation' }, c: { service: 'simulation', needs: ['a'] } } });
    const a = await claim(b);
    expect(await b.cancelWorkflow(id, 'user asked')).toEqual({ state: 'canceled', changed: true });
    expect(await b.cancelWorkflow(id)).toEqual({ state: 'canceled', changed: false });
    await nothingQueued(b);
    expect((await b.getJob(a.id))!.state).toBe('canceled');
    const workflow = await b.getWorkflow(id);
    expect(workflow!.steps.map((s) => s.state)).toEqual(['canceled', 'canceled', 'canceled']);
    expect(workflow!.cancel_reason).toBe('user asked');
  });
});

describe('workflow listing', () => {
  it("lists a tenant's workflows however many other tenants submitted after them", async () => {
    const b = await broker();
    const one = { pool: 'standard', steps: { a: { service: 'simulation' } } };
    const { id } = await b.submitWorkflow({ ...one, tenant: 'acme' });
    const others: string[] = [];
    for (let i = 0; i < 6; i++) {
      now += 1;
      others.push((await b.submitWorkflow({ ...one, tenant: 'globex' })).id);
    }
    expect((await b.listWorkflows({ tenant: 'acme', limit: 1 })).map((w) => [w.id, w.tenant])).toEqual([[id, 'acme']]);
    expect((await b.listWorkflows({ tenant: 'globex', limit: 2 })).map((w) => w.id)).toEqual(others.slice(-2).reverse());
    expect((await b.listWorkflows({ limit: 7 })).map((w) => w.id)).toEqual([...others].reverse().concat(id));
  });
});

describe('workflow ordering', () => {
  it("claims a workflow's third step before single jobs submitted after the workflow began, at equal priority", async () => {
    const b = await broker();
    const { id } = await b.submitWorkflow({
      pool: 'standard',
      steps: { one: { service: 'simulation' }, two: { service: 'simulation', needs: ['one'] }, three: { service: 'simulation', needs: ['two'] } },
    });
    for (let step = 0; step < 2; step++) {
      const job = await claim(b);
      expect(job.workflowId).toBe(id);
      // single jobs keep arriving while the workflow runs
      for (let i = 0; i < 3; i++) await b.submit({ service: 'simulation', requirements: { pool: 'standard' }, payload: { single: i } });
      await b.complete(job.lease, {});
    }
    const third = await claim(b);
    expect(third.workflowId).toBe(id);
    expect(third.step).toBe(2);
    // and behind it, the single jobs in their own order
    await b.complete(third.lease, {});
    expect((await claim(b)).payload).toEqual({ single: 0 });
    expect((await b.getWorkflow(id))!.state).toBe('succeeded');
  });

  it('keeps priority first: a higher-priority single job still goes before a workflow step', async () => {
    const b = await broker();
    await b.submitWorkflow({ pool: 'standard', steps: { one: { service: 'simulation' }, two: { service: 'simulation', needs: ['one'] } } });
    const one = await claim(b);
    await b.submit({ service: 'simulation', requirements: { pool: 'standard' }, priority: 5, payload: 'urgent' });
    await b.complete(one.lease, {});
    expect((await claim(b)).payload).toBe('urgent');
  });
});
