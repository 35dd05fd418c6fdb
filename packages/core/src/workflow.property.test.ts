import { usePrivateRedis } from '@emp/testkit/private-redis';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Broker, type ClaimedJob } from './broker';
import { LeaseLostError } from './errors';
import { type StreamEvent, isJobEvent, isWorkflowEvent } from './events';
import { undeclaredStreamEntries } from './testing/stream-contract';
import type { SubmitWorkflowInput, Workflow } from './workflow';

// Random workflows (random DAGs, optional steps, fan-outs, references that may
// not resolve) driven by random interleavings of successes, retried and fatal
// failures, canceled workflows and jobs, and workers lost (leases that run out),
// on a virtual clock against the real functions. Then everything left is run to
// its end, and:
//
// - every workflow ends in exactly one terminal state (one end event, and a
//   record that agrees with its steps);
// - no step job is claimed, queued or run once its workflow has ended;
// - no step is queued twice (one submit per job, one job per step but a fan-out's items).

const { redis } = usePrivateRedis();
const POOL = 'standard';
const LEASE_MS = 1_000;
const START = 1_000_000;
const WORKERS = ['w1', 'w2'];
let now = START;

interface StepShape {
  needs: readonly number[];
  optional: boolean;
  fanOut: boolean;
  /** the reference in its payload: none, to a field its first need has, or to one it has not */
  ref: 'none' | 'good' | 'missing';
}

const stepArb = (index: number) =>
  fc.record({
    needs: index === 0 ? fc.constant<number[]>([]) : fc.uniqueArray(fc.integer({ min: 0, max: index - 1 }), { maxLength: Math.min(3, index) }),
    optional: fc.boolean(),
    fanOut: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
    ref: fc.constantFrom<StepShape['ref']>('none', 'good', 'good', 'missing'),
  });

const workflowArb = fc.integer({ min: 1, max: 6 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => stepArb(i))));

type Op =
  | { op: 'work'; worker: number; outcome: 'ok' | 'retryable' | 'fatal'; items: number }
  | { op: 'hold'; worker: number }
  | { op: 'finishHeld'; index: number; outcome: 'ok' | 'retryable' | 'fatal' }
  | { op: 'heartbeat'; worker: number }
  | { op: 'advance'; ms: number }
  | { op: 'cancelWorkflow'; index: number }
  | { op: 'cancelJob'; index: number };

const outcomeArb = fc.constantFrom<'ok' | 'retryable' | 'fatal'>('ok', 'ok', 'ok', 'retryable', 'fatal');
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('work' as const), worker: fc.nat(WORKERS.length - 1), outcome: outcomeArb, items: fc.nat(3) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('hold' as const), worker: fc.nat(WORKERS.length - 1) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('finishHeld' as const), index: fc.nat(5), outcome: outcomeArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('heartbeat' as const), worker: fc.nat(WORKERS.length - 1) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 50, max: 1_500 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('cancelWorkflow' as const), index: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('cancelJob' as const), index: fc.nat(5) }) },
);

/** How the jobs left after the random operations end, in turn (all succeed after 200 rounds, so every workflow ends). */
const tailArb = fc.array(fc.record({ outcome: outcomeArb, items: fc.integer({ min: 0, max: 3 }) }), { minLength: 1, maxLength: 8 });

function definition(shape: StepShape[]): SubmitWorkflowInput {
  const name = (i: number) => `s${i}`;
  const steps: SubmitWorkflowInput['steps'] = {};
  shape.forEach((step, i) => {
    const first = step.needs[0];
    const payload: Record<string, unknown> = { step: i };
    if (first !== undefined && step.ref !== 'none') payload.from = { $from: `${name(first)}.${step.ref === 'good' ? 'items' : 'missing'}` };
    const fanOut = step.fanOut && first !== undefined;
    if (fanOut) payload.item = { $item: '' };
    steps[name(i)] = {
      service: 'simulation',
      needs: step.needs.map(name),
      optional: step.optional,
      max_attempts: 2,
      backoff: { type: 'fixed', delay_ms: 200, jitter: 0 },
      payload,
      ...(fanOut ? { for_each: { $from: `${name(first)}.items` } } : {}),
    };
  });
  return { pool: POOL, steps };
}

const TERMINAL_WORKFLOW = new Set(['workflow.succeeded', 'workflow.failed', 'workflow.canceled']);

describe('workflows under random failures, cancels and lost workers', () => {
  it('end exactly once, run no step after their end, and queue no step twice', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(workflowArb, { minLength: 1, maxLength: 3 }), fc.array(opArb, { minLength: 1, maxLength: 40 }), tailArb, async (shapes, ops, tail) => {
        await redis.flushall();
        now = START;
        const broker = await Broker.connect({ redis, clock: () => now, config: { leaseMs: LEASE_MS, avoidMs: 0 } });
        for (const id of WORKERS) await broker.registerWorker({ id, pool: POOL, capabilities: { services: ['simulation'] } });
        const ids: string[] = [];
        for (const shape of shapes) ids.push((await broker.submitWorkflow(definition(shape))).id);
        const held: ClaimedJob[] = [];
        const workflowOf = (job: ClaimedJob) => ids.find((id) => job.id.startsWith(id));

        const claim = async (worker: string): Promise<ClaimedJob | undefined> => {
          now += 1;
          const job = (await broker.claim(POOL, worker)).job ?? undefined;
          if (job) {
            const wf = workflowOf(job);
            expect(wf, `claimed ${job.id}, which is no step`).toBeDefined();
            expect((await broker.getWorkflow(wf!))!.state, `claimed ${job.id} of an ended workflow`).toBe('running');
          }
          return job;
        };
        const finish = async (job: ClaimedJob, outcome: 'ok' | 'retryable' | 'fatal', items = 1) => {
          try {
            if (outcome === 'ok') await broker.complete(job.lease, { items: Array.from({ length: items }, (_, i) => `${job.id}/${i}`) });
            else await broker.fail(job.lease, { kind: outcome === 'fatal' ? 'non_retryable' : 'retryable', message: 'boom' });
          } catch (error) {
            // the attempt was taken away meanwhile (canceled with its workflow, or its worker counted lost)
            if (!(error instanceof LeaseLostError)) throw error;
          }
        };

        for (const op of ops) {
          switch (op.op) {
            case 'work': {
              const job = await claim(WORKERS[op.worker]!);
              if (job) await finish(job, op.outcome, op.items);
              break;
            }
            case 'hold': {
              const job = await claim(WORKERS[op.worker]!);
              if (job) held.push(job);
              break;
            }
            case 'finishHeld': {
              const job = held.splice(op.index % Math.max(held.length, 1), 1)[0];
              if (job) await finish(job, op.outcome);
              break;
            }
            case 'heartbeat': {
              const worker = WORKERS[op.worker]!;
              await broker.heartbeat(POOL, worker, held.filter((j) => j.lease.workerId === worker).map((j) => j.lease));
              break;
            }
            case 'advance':
              now += op.ms;
              await broker.tick(POOL);
              break;
            case 'cancelWorkflow':
              await broker.cancelWorkflow(ids[op.index % ids.length]!, 'random cancel');
              break;
            case 'cancelJob': {
              const job = held[op.index % Math.max(held.length, 1)];
              if (job) await broker.cancel(job.id, 'random job cancel');
              break;
            }
          }
        }

        // run everything left to its end: held attempts are lost with their leases, retries come due;
        // the outcomes go on cycling through `tail`, so that late steps (the last fan-out) fail too
        for (let round = 0; round < 400; round++) {
          const states = await Promise.all(ids.map(async (id) => (await broker.getWorkflow(id))!.state));
          if (states.every((s) => s !== 'running')) break;
          const job = await claim(WORKERS[0]!);
          const next = tail[round % tail.length]!;
          if (job) await finish(job, round >= 200 ? 'ok' : next.outcome, next.items);
          else {
            now += 1_500;
            await broker.tick(POOL);
          }
        }

        const events: StreamEvent[] = await broker.readEvents(POOL, '0', { count: 100_000 });
        for (const id of ids) {
          const workflow = (await broker.getWorkflow(id)) as Workflow;
          expect(workflow.state, `workflow ${id} never ended`).not.toBe('running');
          const mine = events.filter((e) => (isWorkflowEvent(e) && e.workflow === id) || (isJobEvent(e) && e.job.startsWith(id)));
          const ends = mine.filter((e) => TERMINAL_WORKFLOW.has(e.type));
          expect(ends.map((e) => e.type), `end events of ${id}`).toEqual([`workflow.${workflow.state}`]);
          const after = mine.slice(mine.indexOf(ends[0]!) + 1);
          expect(after.map((e) => `${e.type} ${'job' in e ? e.job : ''}`), `events of ${id} after its end`).toEqual([]);
          // one submit per job; one job per step, but for a fan-out's items
          const submits = mine.filter((e) => e.type === 'job.queued' && e.reason === undefined).map((e) => (e as { job: string }).job);
          expect(new Set(submits).size, `a step job of ${id} queued twice`).toBe(submits.length);
          for (const [index, step] of workflow.steps.entries()) {
            const jobs = submits.filter((job) => job.slice(id.length + 1, id.length + 3) === index.toString(36).padStart(2, '0'));
            if (!step.for_each) expect(jobs.length, `step ${step.name} of ${id}: jobs`).toBeLessThanOrEqual(1);
            for (const job of step.jobs) expect(['succeeded', 'failed', 'canceled', 'expired'], `job ${job.id} of ended ${id}`).toContain(job.state);
          }
          // the record agrees with its steps
          const stepEnds = mine.filter((e) => e.type === 'workflow.step_succeeded').map((e) => (e as { step: string }).step);
          expect(stepEnds.sort()).toEqual(workflow.steps.filter((s) => s.state === 'succeeded').map((s) => s.name).sort());
          // and one workflow.step_failed per failed step, saying whether the workflow goes on without it
          const stepFailures = mine.filter((e) => e.type === 'workflow.step_failed').map((e) => `${(e as { step: string }).step} ${(e as { optional: boolean }).optional}`);
          expect(stepFailures.sort()).toEqual(workflow.steps.filter((s) => s.state === 'failed').map((s) => `${s.name} ${s.optional}`).sort());
          if (workflow.state === 'succeeded') {
            for (const step of workflow.steps) expect(step.optional || step.state === 'succeeded', `step ${step.name} of succeeded ${id}`).toBe(true);
          } else if (workflow.state === 'failed') {
            const failed = workflow.steps.find((s) => s.name === workflow.failed_step)!;
            expect([failed.optional, failed.state]).toEqual([false, 'failed']);
          }
          for (const step of workflow.steps) expect(step.state, `step ${step.name} of ended ${id}`).toMatch(/^(succeeded|failed|canceled)$/);
        }
        expect(await undeclaredStreamEntries(redis), 'stream entries outside the event union').toEqual([]);
      }),
      { numRuns: 200, interruptAfterTimeLimit: 40_000, markInterruptAsFailure: false },
    );
  }, 90_000);
});
