import { setTimeout as sleep } from 'node:timers/promises';
import { FailureKind, SimulationOptions, activeTracing, endSpan, parseWith } from '@emp/core';
import { z } from 'zod';
import { type Connector, JobFailure } from '../connector';

const Milliseconds = z.number().finite().min(0).max(86_400_000);

/** What a job's payload may set for itself; other payload fields are ignored. */
export const SimulationPayload = z
  .object({
    duration_ms: Milliseconds.optional(),
    steps: z.number().int().min(0).max(10_000).optional(),
    fail: FailureKind.optional(),
    result: z.record(z.string(), z.unknown()).optional(),
  })
  .loose();

/**
 * Pretends to run a job: waits its duration while reporting `steps` progress
 * updates, fails at random (or when the payload says `fail`), and returns
 * `{ simulated: true, duration_ms, steps, ...payload.result }`. Stops at once
 * when the job is aborted. Its simulated work is a `simulation.run` span under
 * job.run (where a real connector's calls to its service are), so the local
 * stack's traces show the whole path.
 */
export function simulationConnector(options: SimulationOptions = {}): Connector {
  const config = parseWith(SimulationOptions, options, 'simulation connector options');
  const random = config.seed === undefined ? Math.random : seededRandom(config.seed);
  const kinds = config.failureKinds.map((k) => (typeof k === 'string' ? { kind: k, weight: 1 } : k));
  const totalWeight = kinds.reduce((sum, k) => sum + k.weight, 0);

  const sampleDuration = (): number => {
    const d = config.durationMs;
    if (typeof d === 'number') return Math.round(d);
    if ('min' in d) return Math.round(d.min + random() * (d.max - d.min));
    const stddev = d.stddev ?? d.mean / 4;
    return Math.max(0, Math.round(d.mean + stddev * standardNormal(random)));
  };

  const sampleFailure = (): FailureKind | undefined => {
    if (config.failureRate === 0 || random() >= config.failureRate) return undefined;
    let pick = random() * totalWeight;
    for (const k of kinds) {
      pick -= k.weight;
      if (pick < 0) return k.kind;
    }
    return kinds[kinds.length - 1]!.kind;
  };

  const simulate: Connector['run'] = async (job, ctx) => {
    const overrides = readPayload(job.payload);
    const duration = overrides.duration_ms ?? sampleDuration();
    const steps = overrides.steps ?? config.steps;
    const failure = overrides.fail ?? sampleFailure();
    const runFor = failure ? duration / 2 : duration;
    const startedAt = Date.now();
    const until = async (elapsed: number) => {
      const wait = startedAt + elapsed - Date.now();
      if (wait > 0) await sleep(wait, undefined, { signal: ctx.signal });
      else ctx.signal.throwIfAborted();
    };

    for (let step = 1; step <= steps && (step * duration) / steps <= runFor; step++) {
      await until((step * duration) / steps);
      ctx.progress({ stage: 'running', value: step, max: steps, message: `step ${step}/${steps}` });
    }
    await until(runFor);
    if (failure) {
      throw new JobFailure(failure, `simulated ${failure} failure`, { type: 'SimulatedFailure' });
    }
    return { simulated: true, duration_ms: duration, steps, ...overrides.result };
  };

  return {
    service: config.service,
    /** pretends to load any model: waits its configured load time */
    async loadModel(model, signal) {
      await sleep(config.loadMs, undefined, { signal });
      return `${config.service}: ${model} loaded in ${(config.loadMs / 1_000).toFixed(1)} s (simulated)`;
    },
    async run(job, ctx) {
      const span = activeTracing().startSpan('simulation.run', { attributes: { 'emp.service': config.service } });
      try {
        const result = await simulate(job, ctx);
        endSpan(span, 'succeeded');
        return result;
      } catch (error) {
        endSpan(span, ctx.signal.aborted ? 'canceled' : 'failed', error);
        throw error;
      }
    },
  };
}

function readPayload(payload: unknown): z.output<typeof SimulationPayload> {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) return {};
  try {
    return parseWith(SimulationPayload, payload, 'simulation payload');
  } catch (error) {
    throw new JobFailure('non_retryable', (error as Error).message, { type: 'InvalidPayload' });
  }
}

/** mulberry32: small, fast, good enough to make a simulation reproducible. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Box-Muller. */
function standardNormal(random: () => number): number {
  const u = 1 - random();
  const v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}
