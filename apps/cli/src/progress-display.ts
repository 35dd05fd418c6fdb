import type { JobUpdate } from './follow-job';
import { bar, clockTime, duration, progressPercent, progressText } from './format';

/**
 * Shows a followed job: one live line redrawn in place on a terminal (with a
 * ticking clock, so a job waiting in the queue visibly waits), plain lines
 * (state changes and every tenth of progress) when piped to a file.
 */
export class ProgressDisplay {
  private readonly startedAt = Date.now();
  private last: JobUpdate | undefined;
  private lastPlain = '';
  private ticker: NodeJS.Timeout | undefined;

  constructor(
    private readonly stream: NodeJS.WriteStream,
    private readonly label: string,
  ) {}

  update(update: JobUpdate): void {
    this.last = update;
    if (!this.stream.isTTY) {
      this.appendLine(update);
      return;
    }
    this.redraw();
    this.ticker ??= setInterval(() => this.redraw(), 1_000).unref();
  }

  /** Ends the live line so that what follows starts on a fresh one. */
  finish(): void {
    if (!this.ticker) return;
    clearInterval(this.ticker);
    this.ticker = undefined;
    this.stream.write('\n');
  }

  private redraw(): void {
    const update = this.last;
    if (!update) return;
    const percent = progressPercent(update.progress) ?? (update.state === 'succeeded' ? 100 : 0);
    const p = update.state === 'running' ? update.progress : undefined;
    const detail = p ? [p.stage === update.state ? '' : p.stage, p.message ?? (p.max ? `${p.value ?? 0}/${p.max}` : '')] : [];
    const line = [
      this.label,
      update.state.padEnd(9),
      bar(percent),
      `${String(Math.round(percent)).padStart(3)}%`,
      duration(Date.now() - this.startedAt).padStart(6),
      ...detail.filter(Boolean),
    ].join('  ');
    const width = this.stream.columns ? this.stream.columns - 1 : line.length;
    this.stream.write(`\r\x1b[2K${line.slice(0, width)}`);
  }

  private appendLine(update: JobUpdate): void {
    const percent = progressPercent(update.progress);
    const key = `${update.state} ${percent === undefined ? '' : Math.floor(percent / 10)}`;
    if (key === this.lastPlain) return;
    this.lastPlain = key;
    const detail = update.progress && update.state === 'running' ? ` ${progressText(update.progress, update.state)}` : '';
    this.stream.write(`${clockTime(Date.now())} ${this.label} ${update.state}${detail}\n`);
  }
}
