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
  /** calls of one pool and group out at once: two let Redis work on one while this process handles the other's replies */
  callsInFlight: number;
}

/** The items of one pool and group: those waiting to go out, and how many calls of theirs are out. */
interface Group<T> {
  key: string;
  pool: string;
  group: string;
  items: Array<Pending<T>>;
  inFlight: number;
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
  private groups = new Map<string, Group<T>>();
  private scheduled = false;

  constructor(
    private readonly send: SendBatch<T>,
    private readonly options: BatchOptions,
  ) {}

  /** Resolves with this item's reply, rejects with its own error (or the call's). */
  add(pool: string, group: string, item: T): Promise<unknown[]> {
    return new Promise((resolve, reject) => {
      const key = `${pool}\n${group}`;
      let gathered = this.groups.get(key);
      if (!gathered) this.groups.set(key, (gathered = { key, pool, group, items: [], inFlight: 0 }));
      gathered.items.push({ item, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    if (this.options.gather === 'turn') process.nextTick(() => this.flush());
    else setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    for (const gathered of [...this.groups.values()]) this.sendGathered(gathered);
  }

  /**
   * Sends what `gathered` holds over the calls its group may still have out, in even parts of
   * up to MAX_BATCH; what is gathered while they are all out waits for the first reply and goes
   * with what that reply's continuations add. With Redis busy a call then carries more items,
   * and Redis's work per item falls (a call's own cost, the function's context and the worker's
   * record, is shared by more of them); with Redis idle an item goes out in its own turn.
   */
  private sendGathered(gathered: Group<T>): void {
    const free = this.options.callsInFlight - gathered.inFlight;
    if (free > 0 && gathered.items.length > 0) {
      const size = Math.min(MAX_BATCH, Math.ceil(gathered.items.length / free));
      while (gathered.items.length > 0 && gathered.inFlight < this.options.callsInFlight) {
        gathered.inFlight++;
        void this.sendBatch(gathered, gathered.items.splice(0, size));
      }
    }
    // (a group is forgotten as its last call's reply comes with nothing left to send: sendBatch)
  }

  private async sendBatch(gathered: Group<T>, items: Array<Pending<T>>): Promise<void> {
    let replies: unknown[];
    try {
      replies = await this.send(
        gathered.pool,
        gathered.group,
        items.map((p) => p.item),
      );
    } catch (error) {
      for (const pending of items) pending.reject(error);
      return;
    } finally {
      // what waited for this call goes with what its replies' continuations gather in this turn
      gathered.inFlight--;
      if (gathered.items.length > 0) this.schedule();
      // (a group with a call out is never forgotten: this one is still the key's)
      else if (gathered.inFlight === 0) this.groups.delete(gathered.key);
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
 * claims their successors. Two calls may be out at once, so that Redis works on
 * one while the worker handles the other's replies; what is made while both are
 * out goes with the next.
 * A lone completion waits only for the promise continuations of the current
 * turn. Grouped by the worker to claim for.
 */
export function completionBatcher(send: SendBatch<Completion>): CallBatcher<Completion> {
  return new CallBatcher(send, { gather: 'turn', callsInFlight: 2 });
}

/**
 * Progress reports due in one turn of the event loop go out in one call per
 * pool: a worker's reporters throttle to a shared grid (ProgressReporter), so
 * the reports of all its running jobs fall due together, one call per tick
 * rather than one per job. One call out at a time is enough: reports are not on
 * a job's critical path.
 */
export function progressBatcher(send: SendBatch<ProgressReport>): CallBatcher<ProgressReport> {
  return new CallBatcher(send, { gather: 'loop', callsInFlight: 1 });
}
