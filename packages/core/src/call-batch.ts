import { fromRedisError } from './errors';

/** One job's part of a batched call; the job id names it when its reply is missing. */
export interface BatchItem {
  jobId: string;
}

export interface Completion extends BatchItem {
  token: string;
  /** the result as JSON text */
  result: string;
}

export interface ProgressReport extends BatchItem {
  token: string;
  /** the progress as JSON text */
  progress: string;
}

/**
 * Sends the items of one pool and group (emp_complete: the worker to claim
 * for) in one call; returns one reply per item, in order, each an array whose
 * first element is 'error' when that item failed alone.
 */
export type SendBatch<T extends BatchItem> = (pool: string, group: string, items: T[]) => Promise<unknown[]>;

interface BatchOptions {
  /**
   * When gathered items go out: 'turn' after every promise continuation of the
   * current turn (a completion must not wait: the worker's next job comes with
   * its reply); 'loop' at the end of this turn of the event loop, after every
   * timer that fired in it (progress reports are sent by timers).
   */
  gather: 'turn' | 'loop';
  /** a large batch goes out in about this many calls, so that Redis works on one while this process handles another's replies */
  callsInFlight: number;
}

interface Pending<T> {
  item: T;
  resolve(reply: unknown[]): void;
  reject(error: unknown): void;
}

/** Most items in one call, so that no single call holds Redis for long. */
const MAX_BATCH = 64;

/**
 * Gathers the calls a process makes for its jobs and sends those of the same
 * pool and group together, one round trip for all of them. Each item's reply
 * or error is its own: one whose lease was lost fails alone.
 */
export class CallBatcher<T extends BatchItem> {
  private pending = new Map<string, { pool: string; group: string; items: Array<Pending<T>> }>();
  private scheduled = false;

  constructor(
    private readonly send: SendBatch<T>,
    private readonly options: BatchOptions,
  ) {}

  /** Resolves with this item's reply, rejects with its own error (or the call's). */
  add(pool: string, group: string, item: T): Promise<unknown[]> {
    return new Promise((resolve, reject) => {
      const key = `${pool}\n${group}`;
      let batch = this.pending.get(key);
      if (!batch) this.pending.set(key, (batch = { pool, group, items: [] }));
      batch.items.push({ item, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        if (this.options.gather === 'turn') process.nextTick(() => this.flush());
        else setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batches = [...this.pending.values()];
    this.pending.clear();
    for (const { pool, group, items } of batches) {
      const size = Math.min(MAX_BATCH, Math.ceil(items.length / this.options.callsInFlight));
      for (let start = 0; start < items.length; start += size) {
        void this.sendBatch(pool, group, items.slice(start, start + size));
      }
    }
  }

  private async sendBatch(pool: string, group: string, items: Array<Pending<T>>): Promise<void> {
    let replies: unknown[];
    try {
      replies = await this.send(
        pool,
        group,
        items.map((p) => p.item),
      );
    } catch (error) {
      for (const pending of items) pending.reject(error);
      return;
    }
    items.forEach((pending, index) => {
      const reply = replies[index] as unknown[] | undefined;
      if (!Array.isArray(reply)) pending.reject(new Error(`no reply for job ${pending.item.jobId} in a batched call`));
      else if (reply[0] === 'error') pending.reject(fromRedisError(new Error(String(reply[1]))));
      else pending.resolve(reply);
    });
  }
}

/**
 * A worker's completions made in one turn of the event loop go out together: a
 * worker running many jobs at once finishes several in the same turn (their
 * claims' replies arrived in one read), and one call then completes them all and
 * claims their successors. A lone completion waits only for the promise
 * continuations of the current turn. Grouped by the worker to claim for.
 */
export function completionBatcher(send: SendBatch<Completion>): CallBatcher<Completion> {
  return new CallBatcher(send, { gather: 'turn', callsInFlight: 3 });
}

/**
 * Progress reports due in one turn of the event loop go out in one call per
 * pool: a worker's reporters throttle to a shared grid (ProgressReporter), so
 * the reports of all its running jobs fall due together, one call per tick
 * rather than one per job. One call at a time is enough: reports are not on a
 * job's critical path.
 */
export function progressBatcher(send: SendBatch<ProgressReport>): CallBatcher<ProgressReport> {
  return new CallBatcher(send, { gather: 'loop', callsInFlight: 1 });
}
