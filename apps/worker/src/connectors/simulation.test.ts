import type { ClaimedJob } from '@emp/core';
import { ValidationError } from '@emp/core';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { type JobContext, type JobProgressInput, JobFailure } from '../connector';
import { simulationConnector } from './simulation';

function job(payload: unknown = {}): ClaimedJob {
  return {
    lease: { pool: 'standard', jobId: 'standard.000000000000', token: '1', workerId: 'w' },
    id: 'standard.000000000000',
    attempt: 1,
    service: 'simulation',
    tenant: 'default',
    payload,
    requirements: {} as ClaimedJob['requirements'],
    priority: 0,
    submittedAt: 0,
  };
}

function context(controller = new AbortController()): JobContext & { reports: JobProgressInput[] } {
  const reports: JobProgressInput[] = [];
  return {
    signal: controller.signal,
    logger: pino({ level: 'silent' }),
    start: async () => undefined,
    progress: (p) => reports.push(p),
    reports,
  };
}

describe('simulation connector', () => {
  it('waits its duration, reports every step and returns the result', async () => {
    const ctx = context();
    const result = await simulationConnector({ durationMs: 40, steps: 4 }).run(job({ result: { text: 'hi' } }), ctx);
    expect(result).toEqual({ simulated: true, duration_ms: 40, steps: 4, text: 'hi' });
    expect(ctx.reports.map((r) => r.value)).toEqual([1, 2, 3, 4]);
    expect(ctx.reports[3]).toMatchObject({ stage: 'running', max: 4 });
  });

  it('lets the payload override duration and steps, and force a failure kind', async () => {
    const sim = simulationConnector({ durationMs: 60_000, steps: 100 });
    const ctx = context();
    expect(await sim.run(job({ duration_ms: 10, steps: 1 }), ctx)).toEqual({ simulated: true, duration_ms: 10, steps: 1 });
    const failing = sim.run(job({ duration_ms: 10, steps: 0, fail: 'non_retryable' }), context());
    await expect(failing).rejects.toBeInstanceOf(JobFailure);
    await expect(failing).rejects.toMatchObject({ kind: 'non_retryable', type: 'SimulatedFailure' });
  });

  it('fails jobs at the configured rate with the weighted kinds', async () => {
    const sim = simulationConnector({
      durationMs: 0,
      steps: 0,
      failureRate: 0.5,
      failureKinds: [{ kind: 'infrastructure', weight: 3 }, 'timeout'],
      seed: 42,
    });
    const kinds: string[] = [];
    for (let i = 0; i < 400; i++) {
      await sim.run(job(), context()).then(
        () => kinds.push('ok'),
        (error: JobFailure) => kinds.push(error.kind),
      );
    }
    const count = (k: string) => kinds.filter((x) => x === k).length;
    expect(count('ok')).toBeGreaterThan(140);
    expect(count('ok')).toBeLessThan(260);
    expect(count('infrastructure')).toBeGreaterThan(count('timeout'));
    expect(count('ok') + count('infrastructure') + count('timeout')).toBe(400);
  });

  it('draws durations from a range or a normal distribution', async () => {
    const ranged = simulationConnector({ durationMs: { min: 1, max: 5 }, steps: 0, seed: 1 });
    const normal = simulationConnector({ durationMs: { mean: 4, stddev: 1 }, steps: 0, seed: 1 });
    for (let i = 0; i < 20; i++) {
      const r = (await ranged.run(job(), context())) as { duration_ms: number };
      expect(r.duration_ms).toBeGreaterThanOrEqual(1);
      expect(r.duration_ms).toBeLessThanOrEqual(5);
      const n = (await normal.run(job(), context())) as { duration_ms: number };
      expect(n.duration_ms).toBeGreaterThanOrEqual(0);
    }
  });

  it('stops as soon as the job is aborted', async () => {
    const controller = new AbortController();
    const running = simulationConnector({ durationMs: 60_000, steps: 10 }).run(job(), context(controller));
    setTimeout(() => controller.abort(new Error('canceled')), 10);
    await expect(running).rejects.toThrow();
  });

  it('refuses bad options with a clear message, and a bad payload as non_retryable', async () => {
    expect(() => simulationConnector({ failureRate: 2 })).toThrow(ValidationError);
    expect(() => simulationConnector({ failureRate: 2 })).toThrow(/simulation connector options: failureRate/);
    expect(() => simulationConnector({ durationMs: { min: 5, max: 1 } })).toThrow(ValidationError);
    expect(() => simulationConnector({ failureKinds: ['sometimes' as never] })).toThrow(ValidationError);
    await expect(simulationConnector().run(job({ duration_ms: -1 }), context())).rejects.toMatchObject({
      kind: 'non_retryable',
      type: 'InvalidPayload',
    });
  });
});
