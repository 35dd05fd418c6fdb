import type { JobProgressInput } from './connector';

/**
 * Throttles one job's progress reports: at most one send per `intervalMs`,
 * newer values replace older unsent ones, and `flush()` sends the latest before
 * the job completes. A send never overlaps the previous one, so reports reach
 * the broker in order.
 */
export class ProgressReporter {
  private latest: JobProgressInput | undefined;
  private inflight: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastSentAt = 0;
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
    this.lastSentAt = Date.now();
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
    const wait = this.lastSentAt + this.intervalMs - Date.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.pump();
      }, wait);
      return;
    }
    const progress = this.latest;
    this.latest = undefined;
    this.lastSentAt = Date.now();
    this.inflight = this.send(progress)
      .catch(this.onError)
      .finally(() => {
        this.inflight = undefined;
        this.pump();
      });
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
