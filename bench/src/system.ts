/**
 * One queueing system under measurement. The harness runs every scenario for
 * every registered system against the same private Redis, flushed before each
 * run; an implementation opens its own connections and must close all of them
 * (the harness checks that no client is left connected) before it returns.
 */
export interface BenchSystem {
  /** 'bullmq' | 'emp' */
  readonly name: string;
  /**
   * Submit `jobs` no-op jobs in bulk, then drain them with ONE worker
   * process-object of the given concurrency. Drain time runs from starting the
   * ready worker to the last completion; total = jobs / (submit + drain time).
   */
  throughput(opts: {
    redisUrl: string;
    jobs: number;
    concurrency: number;
    /** called between the submit and the drain, outside both timings (instructions.ts counts each phase) */
    onSubmitted?: () => Promise<void>;
  }): Promise<{ drainJobsPerSec: number; totalJobsPerSec: number }>;
  /**
   * `workers` idle workers (concurrency 1 each) wait; submit one job every
   * `intervalMs` for `jobs` jobs; latency = time from just before the submit
   * call to when the worker's processor starts running the job, both read with
   * performance.now() in this process. `warmupJobs` go first at the same pace
   * and are not measured. Returns sorted latencies in ms.
   */
  submitToStart(opts: { redisUrl: string; jobs: number; intervalMs: number; workers: number; warmupJobs: number }): Promise<number[]>;
  /**
   * Submit `jobs` jobs carrying `benchPayload(payloadBytes)`, measure INFO
   * memory used_memory before/after (after a short settle), return bytes per
   * queued job. Read "before" after the first job is queued, so
   * connection buffers and loaded scripts are not charged to the jobs. Then
   * say where the bytes are (`memoryByKeyKind`).
   */
  memoryPerJob(opts: { redisUrl: string; jobs: number; payloadBytes: number }): Promise<MemoryPerJob>;
}

/** What the memory scenario measured. */
export interface MemoryPerJob {
  /** used_memory after the jobs less before, per job */
  bytesPerJob: number;
  /** MEMORY USAGE summed per kind of key, per job, largest first (a job's own keys are one kind, e.g. `job:<id>`) */
  byKey: KeyKindMemory[];
}

export interface KeyKindMemory {
  /** the key, with the parts that differ between keys of its kind (a job id, a class) named instead */
  kind: string;
  /** OBJECT ENCODING of its keys (listpack, hashtable, skiplist, stream, ...) */
  encoding: string;
  keys: number;
  bytesPerJob: number;
}

/** The payload every system submits in the memory scenario, so both store the same bytes. */
export function benchPayload(bytes: number): { blob: string } {
  return { blob: 'x'.repeat(bytes) };
}

/** How long a drain of `jobs` may take before the scenario fails: a floor of 200 jobs/s. */
export function drainDeadlineMs(jobs: number): number {
  return 30_000 + jobs * 5;
}

/** Rejects loudly when `work` has not settled within `ms`; `what` is read at expiry, so it can report progress. */
export async function withDeadline<T>(work: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what()} did not finish within ${(ms / 1000).toFixed(1)} s`)), ms);
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}
