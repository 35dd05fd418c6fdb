import { fromRedisError } from './errors';

export interface Completion {
  jobId: string;
  token: string;
  /** the result as JSON text */
  result: string;
}

/** Sends one worker's completions in one call; returns one reply per completion, in order. */
export type SendCompletions = (pool: string, claimFor: string, completions: Completion[]) => Promise<unknown[]>;

interface Pending extends Completion {
  resolve(reply: unknown[]): void;
  reject(error: unknown): void;
}

/** Most completions in one call, so that no single call holds Redis for long. */
const MAX_BATCH = 64;
/**
 * A worker's completions go out in about this many calls rather than one, so
 * that Redis works on one while this process handles the replies of another.
 */
const CALLS_IN_FLIGHT = 3;

/**
 * Gathers the completions a process makes in one turn of the event loop and
 * sends those of the same worker together: a worker running many jobs at once
 * finishes several in the same turn (their claims' replies arrived in one read),
 * and one round trip then completes them all and claims their successors. A
 * lone completion waits only for the promise continuations of the current turn.
 */
export class CompletionBatcher {
  private pending = new Map<string, { pool: string; claimFor: string; items: Pending[] }>();
  private scheduled = false;

  constructor(private readonly send: SendCompletions) {}

  /** Resolves with this completion's reply ({ 'succeeded', <claim...> }), rejects with its own error. */
  add(pool: string, claimFor: string, completion: Completion): Promise<unknown[]> {
    return new Promise((resolve, reject) => {
      const key = `${pool}\n${claimFor}`;
      let batch = this.pending.get(key);
      if (!batch) this.pending.set(key, (batch = { pool, claimFor, items: [] }));
      batch.items.push({ ...completion, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // after every promise continuation of this turn has run, before any further I/O
        process.nextTick(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batches = [...this.pending.values()];
    this.pending.clear();
    for (const { pool, claimFor, items } of batches) {
      const size = Math.min(MAX_BATCH, Math.ceil(items.length / CALLS_IN_FLIGHT));
      for (let start = 0; start < items.length; start += size) {
        void this.sendBatch(pool, claimFor, items.slice(start, start + size));
      }
    }
  }

  private async sendBatch(pool: string, claimFor: string, items: Pending[]): Promise<void> {
    let replies: unknown[];
    try {
      replies = await this.send(pool, claimFor, items);
    } catch (error) {
      for (const item of items) item.reject(error);
      return;
    }
    items.forEach((item, index) => {
      const reply = replies[index] as unknown[] | undefined;
      if (!Array.isArray(reply)) item.reject(new Error(`no reply for the completion of job ${item.jobId}`));
      else if (reply[0] === 'error') item.reject(fromRedisError(new Error(String(reply[1]))));
      else item.resolve(reply);
    });
  }
}
