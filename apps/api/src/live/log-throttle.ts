import type { FastifyBaseLogger } from 'fastify';

/**
 * Bounds what one client can make the server log: the first `burst` lines go
 * through, later ones are counted, and the count is written as one summary
 * line at most every `intervalMs` (when a line comes after that long, and when
 * the client leaves), so a client sending bad input in a loop cannot flood the log.
 */
export class LogThrottle {
  private written = 0;
  private suppressed = 0;
  private suppressedSince = 0;
  private lastSummaryAt = 0;

  constructor(
    private readonly log: FastifyBaseLogger,
    private readonly burst: number,
    private readonly intervalMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  error(fields: Record<string, unknown>, message: string): void {
    if (this.written < this.burst) {
      this.written += 1;
      this.log.error(fields, message);
      // the first summary comes an interval after the last line written in full
      this.lastSummaryAt = this.now();
      return;
    }
    if (this.suppressed === 0) this.suppressedSince = this.now();
    this.suppressed += 1;
    if (this.now() - this.lastSummaryAt >= this.intervalMs) this.flush();
  }

  /** Writes the summary of what was suppressed, if anything was. */
  flush(): void {
    if (this.suppressed === 0) return;
    this.log.warn(
      { suppressed: this.suppressed, since: new Date(this.suppressedSince).toISOString() },
      `${this.suppressed} more error lines of this client suppressed (only the first ${this.burst} are written; a summary at most every ${this.intervalMs / 1_000} s)`,
    );
    this.suppressed = 0;
    this.lastSummaryAt = this.now();
  }
}
