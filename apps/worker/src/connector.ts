import type { ClaimedJob, FailureKind, JobProgress } from '@emp/core';
import type { Logger } from 'pino';
import type { z } from 'zod';

export type JobProgressInput = z.input<typeof JobProgress>;

/** Drives one service (ComfyUI, Ollama, simulation, ...) for the worker runtime. */
export interface Connector {
  /** the service this connector runs, e.g. 'simulation' */
  readonly service: string;
  /** names this connector instance in logs (`connector_id`), e.g. `comfyui@127.0.0.1:8188`; the service by default */
  readonly id?: string;
  /**
   * When true, the connector calls `ctx.start()` itself once it is ready to
   * execute (model downloaded and loaded), so the job stays `starting` until
   * then; otherwise the runtime calls it right before `run()`.
   */
  readonly startsItself?: boolean;
  /**
   * Runs one attempt. Resolve with the result (JSON-serialisable); throw a
   * JobFailure (or any Error, classified 'retryable') to fail. Must stop
   * promptly when `ctx.signal` aborts: the runtime stops waiting for it then.
   */
  run(job: ClaimedJob, ctx: JobContext): Promise<unknown>;
  /**
   * Loads `model` into the service's GPU memory without a job (the planner's
   * warm load), so the next job of it starts without a load; resolves with
   * what happened, in a line. Throw a ModelLoadError when the service does not
   * have the model (so another connector may), anything else to fail the load.
   * Absent where the service cannot load a model on its own: `cannotLoad` says why.
   */
  loadModel?(model: string, signal: AbortSignal): Promise<string>;
  /** why this connector cannot load a model without a job (shown when a load is refused) */
  readonly cannotLoad?: string;
}

/** A connector's service does not have the model a load asked for (not on its disk, not its kind of model). */
export class ModelLoadError extends Error {
  override readonly name = 'ModelLoadError';
}

export interface JobContext {
  /** aborted on cancel, expiry, lost lease, execution timeout and shutdown; `signal.reason` is a JobAbortError */
  readonly signal: AbortSignal;
  /**
   * Moves the job from `starting` to `running` (idempotent). Only connectors
   * with `startsItself` need to call it; for the others the runtime already has.
   */
  start(): Promise<void>;
  /**
   * Reports progress (renews the lease too). Throttled: at most one broker call
   * per 250 ms per job, and the latest value is always sent before the job
   * completes. Throws a ValidationError at once when `progress` is malformed.
   */
  progress(progress: JobProgressInput): void;
  /** pino child carrying job_id, worker_id, machine_id and service */
  readonly logger: Logger;
}

/**
 * A classified failure of one attempt: `retryable` and `timeout` use up the
 * user's attempts and back off, `non_retryable` fails the job at once,
 * `infrastructure` and `worker_lost` are retried at once at no cost to the user.
 */
export class JobFailure extends Error {
  override readonly name = 'JobFailure';
  readonly type: string | undefined;
  readonly details: unknown;

  constructor(
    readonly kind: FailureKind,
    message: string,
    options: { type?: string; details?: unknown; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.type = options.type;
    this.details = options.details;
  }
}

/** Why the runtime aborted an attempt. */
export type AbortCause =
  /** the job was canceled */
  | 'canceled'
  /** a queue or start deadline passed */
  | 'expired'
  /** this attempt no longer holds the job (lease reaped or taken over) */
  | 'lost'
  /** the job's execution timeout passed */
  | 'timeout'
  /** the worker is shutting down and hands the job back */
  | 'shutdown';

/** The reason of an aborted `ctx.signal`; its name is 'AbortError' like the platform's. */
export class JobAbortError extends Error {
  override readonly name = 'AbortError';
  constructor(readonly reason: AbortCause) {
    super(`job aborted: ${reason}`);
  }
}
