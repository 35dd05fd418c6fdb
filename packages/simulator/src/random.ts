/**
 * The simulator's one source of randomness: mulberry32 (a 32-bit generator,
 * small and well known), seeded, so a seed gives the same run every time.
 * Nothing in the simulator calls Math.random.
 */
export class Random {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** uniform in [0, 1) */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  }

  /** A generator of its own for one concern (arrivals, machines...), so that adding draws to one leaves the others unchanged. */
  fork(label: string): Random {
    let hash = this.#state ^ 0x9e3779b9;
    for (let i = 0; i < label.length; i++) hash = Math.imul(hash ^ label.charCodeAt(i), 0x01000193);
    return new Random(hash >>> 0);
  }

  uniform(min: number, max: number): number {
    return min + (max - min) * this.next();
  }

  /** exponential with the given mean */
  exponential(mean: number): number {
    return -mean * Math.log(1 - this.next());
  }

  /** standard normal (Box-Muller) */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** one index drawn by weight (`cumulative`: running sums of the weights) */
  pick(cumulative: readonly number[]): number {
    const x = this.next() * cumulative[cumulative.length - 1]!;
    let lo = 0;
    let hi = cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cumulative[mid]! > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/** A log-normal distribution fitted to two published quantiles: its median and one upper quantile. */
export interface LogNormal {
  median: number;
  sigma: number;
}

/** z-scores of the quantiles the published figures give */
export const Z = { p90: 1.2815515655446004, p95: 1.6448536269514722, p99: 2.3263478740408408 } as const;

export function logNormalFrom(median: number, upper: number, z: number): LogNormal {
  return { median, sigma: Math.log(upper / median) / z };
}

export function drawLogNormal(random: Random, dist: LogNormal, max = Infinity): number {
  return Math.min(max, dist.median * Math.exp(dist.sigma * random.normal()));
}
