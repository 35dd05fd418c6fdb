import { appendFile, mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Broker } from '@emp/core';
import type { Logger } from 'pino';

export interface ProcessLogsOptions {
  broker: Broker;
  /** the machine whose log stream (`machine-logs:<machine>` in its pool) takes the lines */
  pool: string;
  machineId: string;
  /** approximate length the stream is trimmed to */
  maxLen?: number;
  /** lines are written in batches at most this often (one pipeline per batch) */
  flushMs?: number;
  /** folder of the rotated files; none: Redis only */
  dir?: string;
  maxFileBytes?: number;
  /** rotated files kept besides the current one (`<process>.log.1` is the newest) */
  filesKept?: number;
  /** lines held while Redis is slow; past it the oldest are dropped (and counted) */
  maxPending?: number;
  logger: Logger;
}

interface Line {
  process: string;
  stream: 'stdout' | 'stderr';
  line: string;
  ts: number;
}

const WARN_EVERY_MS = 30_000;

/**
 * Where supervised processes' output lines go: appended to a rotated file per
 * process, and to the machine's capped Redis stream (fields process, stream,
 * line, ts) for operators to tail. Lines are batched, so a chatty process
 * costs one pipeline per flush, not a round trip per line.
 */
export class ProcessLogs {
  private pending: Line[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private readonly fileSizes = new Map<string, number>();
  private lastWarning = 0;
  private dirReady: Promise<unknown> | undefined;
  /** lines dropped because Redis could not keep up (or was unreachable) */
  dropped = 0;
  written = 0;

  constructor(private readonly options: ProcessLogsOptions) {}

  write(process: string, stream: 'stdout' | 'stderr', line: string): void {
    this.pending.push({ process, stream, line, ts: Date.now() });
    const max = this.options.maxPending ?? 10_000;
    if (this.pending.length > max) {
      const excess = this.pending.length - max;
      this.pending.splice(0, excess);
      this.dropped += excess;
    }
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.options.flushMs ?? 100);
  }

  /** Writes what is pending; resolves once it (and any earlier flush) is written. */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    this.flushing = this.flushing.then(() => this.writeBatch(batch));
    return this.flushing;
  }

  private async writeBatch(batch: Line[]): Promise<void> {
    if (batch.length === 0) return;
    await Promise.all([this.toRedis(batch), this.toFiles(batch)]);
  }

  private async toRedis(batch: Line[]): Promise<void> {
    const { broker, pool, machineId, maxLen = 5_000 } = this.options;
    try {
      const { written, failed, error } = await broker.appendMachineLogs(pool, machineId, batch, { maxLen });
      this.written += written;
      if (failed > 0) this.lost(failed, error);
    } catch (error) {
      this.lost(batch.length, error);
    }
  }

  private lost(count: number, error: unknown): void {
    this.dropped += count;
    if (Date.now() - this.lastWarning < WARN_EVERY_MS) return;
    this.lastWarning = Date.now();
    this.options.logger.warn({ err: error, dropped: this.dropped }, 'process output could not be written to Redis (kept in the log files)');
  }

  private async toFiles(batch: Line[]): Promise<void> {
    const dir = this.options.dir;
    if (!dir) return;
    this.dirReady ??= mkdir(dir, { recursive: true });
    await this.dirReady;
    const byProcess = new Map<string, string[]>();
    for (const { process, line } of batch) {
      const lines = byProcess.get(process);
      if (lines) lines.push(line);
      else byProcess.set(process, [line]);
    }
    await Promise.all(
      [...byProcess].map(async ([process, lines]) => {
        try {
          await this.append(join(dir, `${process}.log`), `${lines.join('\n')}\n`);
        } catch (error) {
          this.options.logger.warn({ err: error, process }, 'could not write the process log file');
        }
      }),
    );
  }

  private async append(file: string, text: string): Promise<void> {
    const bytes = Buffer.byteLength(text);
    let size = this.fileSizes.get(file);
    if (size === undefined) size = await stat(file).then((s) => s.size, () => 0);
    if (size > 0 && size + bytes > (this.options.maxFileBytes ?? 10 * 1024 * 1024)) {
      await this.rotate(file);
      size = 0;
    }
    await appendFile(file, text);
    this.fileSizes.set(file, size + bytes);
  }

  /** `<file>` becomes `<file>.1`, `.1` becomes `.2`, ...; the oldest beyond `filesKept` goes. */
  private async rotate(file: string): Promise<void> {
    const kept = this.options.filesKept ?? 3;
    await rm(`${file}.${kept}`, { force: true });
    for (let i = kept - 1; i >= 1; i--) await rename(`${file}.${i}`, `${file}.${i + 1}`).catch(() => undefined);
    if (kept > 0) await rename(file, `${file}.1`);
    else await rm(file, { force: true });
  }
}
