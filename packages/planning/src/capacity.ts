/**
 * Capacity hint per pool: how many machines would have met the pool's wait
 * target over the last hour, for an autoscaler to read.
 *
 * The model is M/M/c (Erlang C): arrivals Poisson at the hour's mean rate,
 * execution times exponential with the hour's mean, `c` identical servers
 * (a worker slot each: machines x workers per machine), first come first
 * served. Then the probability that a job waits longer than t is
 *   P(W > t) = C(c, a) * exp(-(c - a) * t / s)
 * with a = lambda * s the offered load (Erlangs) and C(c, a) Erlang's C formula.
 * The hint is the smallest c with P(W > target) <= 1 - percentile, in machines.
 *
 * Assumptions, stated because they matter: real arrivals are burstier than
 * Poisson (the hint is then low for the peaks inside the hour); the pool is one
 * queue (requirement classes and model downloads are ignored: a cold download
 * adds to the wait that no machine count removes); a machine's workers are
 * interchangeable. A lower bound to compare the fleet with, not a scaler.
 */

/** Erlang's B formula by its stable recursion: blocking probability with c servers and offered load a. */
export function erlangB(c: number, a: number): number {
  let b = 1;
  for (let k = 1; k <= c; k++) b = (a * b) / (k + a * b);
  return b;
}

/** Erlang's C formula: the probability that an arriving job waits at all (1 when c <= a: the queue grows without end). */
export function erlangC(c: number, a: number): number {
  if (a <= 0) return 0;
  if (c <= a) return 1;
  const b = erlangB(c, a);
  return (c * b) / (c - a * (1 - b));
}

/** P(wait > t) in an M/M/c queue with offered load a and mean service time s (t and s in the same unit). */
export function waitExceedsProbability(c: number, a: number, s: number, t: number): number {
  if (a <= 0) return 0;
  if (c <= a) return 1;
  return erlangC(c, a) * Math.exp((-(c - a) * t) / s);
}

export interface CapacityInput {
  /** jobs that arrived in the window */
  arrivals: number;
  /** the window (ms), an hour by default */
  windowMs: number;
  /** mean execution time of the window's jobs (ms) */
  meanExecutionMs: number;
  /** the pool's wait target (ms) */
  waitTargetMs: number;
  /** the share of jobs that must meet it (0.95: p95) */
  percentile: number;
  /** worker slots per machine */
  workersPerMachine: number;
}

export interface CapacityHint {
  /** machines that would have met the target (0: no demand) */
  machines: number;
  /** worker slots that would have */
  servers: number;
  /** offered load in Erlangs (busy worker slots on average) */
  offeredLoad: number;
  /** P(wait > target) with that many servers */
  waitExceedsTarget: number;
  /** the model and its inputs, in words */
  explanation: string;
}

/** The smallest fleet meeting the wait target under M/M/c (see the header). */
export function capacityHint(input: CapacityInput): CapacityHint {
  const lambda = input.arrivals / input.windowMs; // jobs per ms
  const a = lambda * input.meanExecutionMs;
  const perMachine = Math.max(1, Math.floor(input.workersPerMachine));
  const allowed = 1 - input.percentile;
  if (input.arrivals <= 0 || input.meanExecutionMs <= 0) {
    return { machines: 0, servers: 0, offeredLoad: 0, waitExceedsTarget: 0, explanation: 'no jobs in the window' };
  }
  let c = Math.max(1, Math.floor(a) + 1);
  let p = waitExceedsProbability(c, a, input.meanExecutionMs, input.waitTargetMs);
  // P falls as c grows; bounded well past any real pool
  while (p > allowed && c < 100_000) {
    c += 1;
    p = waitExceedsProbability(c, a, input.meanExecutionMs, input.waitTargetMs);
  }
  const machines = Math.ceil(c / perMachine);
  const r = (n: number, d = 3) => Number(n.toFixed(d));
  return {
    machines,
    servers: c,
    offeredLoad: r(a),
    waitExceedsTarget: r(p, 4),
    explanation:
      `M/M/c: ${input.arrivals} jobs in ${r(input.windowMs / 60_000, 1)} min, mean execution ${r(input.meanExecutionMs / 1_000, 1)} s -> ` +
      `load ${r(a, 2)} Erlangs; ${c} worker slots give P(wait > ${r(input.waitTargetMs / 1_000, 1)} s) = ${r(p, 4)} <= ${r(allowed, 3)}; ` +
      `${perMachine} per machine -> ${machines} machines`,
  };
}
