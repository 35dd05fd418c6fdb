import type { JobProgressInput } from './connector';

/**
 * Throttles one job's progress reports: at most one send in each slot of
 * `intervalMs` on a clock-aligned grid (slot k is [k * intervalMs, (k + 1) *
 * intervalMs)), newer values replace older unsent ones, and `flush()` sends the
 * latest before the job completes. A report comes out at once when its job has
 * sent none in the current slot, else at the start of the next slot: the same
 * instant for every job of the process, so the broker sends the reports of all
 * of a worker's running jobs in one call per tick (core's progress batcher),
 * not one call per job. A send never overlaps the previous one, so reports
 * reach the broker in order.
 */
export class ProgressReporter {
  private latest: JobProgressInput | undefined;
  private inflight: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** the grid slot of the last send (-1: none yet) */
  private lastSlot = -1;
  private closed = false;

  constructor(
    private readonly send: (progress: JobProgressInput) => Promise<void>,
    private readonly onError: (error: unknown) => void,
    private readonly intervalMs = 250,
  ) {}

  report(progress: JobProgressInput): void {
    if (this.closed) return;
    this.latest = progress;
    this.pump();
  }

  /** Sends the latest unsent value (if any) now, and goes on accepting more (a stage ends: its last value goes before the next stage). */
  async sendNow(): Promise<void> {
    this.clearTimer();
    while (this.inflight) await this.inflight;
    const last = this.latest;
    this.latest = undefined;
    if (!last) return;
    this.lastSlot = this.slotAt(Date.now());
    await this.send(last).catch(this.onError);
  }

  /** Sends the latest unsent value (if any) and stops accepting more. */
  async flush(): Promise<void> {
    this.closed = true;
    this.clearTimer();
    while (this.inflight) await this.inflight;
    const last = this.latest;
    this.latest = undefined;
    if (last) await this.send(last).catch(this.onError);
  }

  /** Drops whatever is unsent and stops accepting more. */
  close(): void {
    this.closed = true;
    this.latest = undefined;
    this.clearTimer();
  }

  private pump(): void {
    if (this.closed || this.inflight || this.timer || !this.latest) return;
    const now = Date.now();
    const slot = this.slotAt(now);
    if (slot <= this.lastSlot) {
      // sent in this slot already: at the next slot's start (a timer may fire a little early: it then waits again)
      this.timer = setTimeout(
        () => {
          this.timer = undefined;
          this.pump();
        },
        Math.max(1, (this.lastSlot + 1) * this.intervalMs - now),
      );
      return;
    }
    const progress = this.latest;
    this.latest = undefined;
    this.lastSlot = slot;
    this.inflight = this.send(progress)
      .catch(this.onError)
      .finally(() => {
        this.inflight = undefined;
        this.pump();
      });
  }

  private slotAt(ms: number): number {
    return Math.floor(ms / this.intervalMs);
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
