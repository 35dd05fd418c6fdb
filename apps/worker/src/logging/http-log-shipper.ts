import { parseWith } from '@emp/core';
import { Agent, fetch } from 'undici';
import { z } from 'zod';

export const HttpLogShipperOptions = z
  .object({
    /** Fluent Bit's HTTP input, with the tag as the path: e.g. `http://127.0.0.1:9880/emp.worker` */
    url: z.string().url(),
    headers: z.record(z.string(), z.string()).default({}),
    /** records per request */
    batchSize: z.number().int().positive().max(10_000).default(500),
    /** a partial batch is sent after this long */
    flushIntervalMs: z.number().int().positive().max(600_000).default(1_000),
    /** records kept while the receiver is down; beyond it the oldest are dropped (and counted) */
    maxBufferedRecords: z.number().int().positive().max(1_000_000).default(10_000),
    requestTimeoutMs: z.number().int().positive().max(600_000).default(5_000),
    /** longest wait between retries while the receiver fails */
    maxBackoffMs: z.number().int().positive().max(600_000).default(30_000),
  })
  .strict();
export type HttpLogShipperOptions = z.input<typeof HttpLogShipperOptions>;

/**
 * A pino destination that ships log records over HTTP in batches, as JSON
 * arrays of records (the format Fluent Bit's `http` input takes; the URL path
 * is the tag). Logging never waits for the network and never fails: records
 * wait in a bounded buffer, a failed batch is retried with backoff, and when
 * the buffer is full the oldest records are dropped and counted in `dropped`.
 *
 * `pino({...}, pino.multistream([{ stream: process.stdout }, { stream: shipper }]))`
 */
export class HttpLogShipper {
  private readonly config: z.output<typeof HttpLogShipperOptions>;
  private readonly agent = new Agent({ keepAliveTimeout: 10_000 });
  private buffer: unknown[] = [];
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> | undefined;
  private failures = 0;
  private closed = false;
  /** records dropped because the buffer was full */
  dropped = 0;
  /** records the receiver accepted */
  shipped = 0;
  /** the last error talking to the receiver, for health checks */
  lastError: unknown;

  constructor(options: HttpLogShipperOptions) {
    this.config = parseWith(HttpLogShipperOptions, options, 'http log shipper options');
  }

  /** pino calls this with one serialised record (a line of JSON) per log call. */
  write(line: string): void {
    if (this.closed) return;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      record = { msg: line.trimEnd() };
    }
    this.buffer.push(record);
    if (this.buffer.length > this.config.maxBufferedRecords) {
      const excess = this.buffer.length - this.config.maxBufferedRecords;
      this.buffer.splice(0, excess);
      this.dropped += excess;
    }
    if (this.buffer.length >= this.config.batchSize && this.failures === 0) this.kick(0);
    else this.kick(this.config.flushIntervalMs);
  }

  /** Sends everything buffered now (one attempt per batch); resolves when done or when a batch fails. */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.sending) await this.sending;
    while (this.buffer.length > 0) {
      const sent = this.buffer.length;
      await this.sendBatch();
      if (this.buffer.length >= sent) return; // the receiver is failing; records stay buffered
    }
  }

  /** Flushes what it can and stops. */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.agent.close();
  }

  private kick(delayMs: number): void {
    if (this.sending || this.closed) return;
    if (this.timer && delayMs > 0) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.sending = this.sendBatch().finally(() => {
        this.sending = undefined;
        if (this.buffer.length > 0) this.kick(this.failures > 0 ? this.backoff() : this.buffer.length >= this.config.batchSize ? 0 : this.config.flushIntervalMs);
      });
    }, delayMs);
    // a pending flush must not keep the process alive
    this.timer.unref();
  }

  private backoff(): number {
    return Math.min(this.config.flushIntervalMs * 2 ** Math.min(this.failures, 16), this.config.maxBackoffMs);
  }

  private async sendBatch(): Promise<void> {
    const batch = this.buffer.slice(0, this.config.batchSize);
    if (batch.length === 0) return;
    try {
      const response = await fetch(this.config.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...this.config.headers },
        body: JSON.stringify(batch),
        signal: AbortSignal.timeout(this.config.requestTimeoutMs),
        dispatcher: this.agent,
      });
      await response.body?.cancel();
      if (!response.ok) throw new Error(`log receiver answered ${response.status}`);
      // the batch was a prefix of the buffer, which may have dropped its oldest records meanwhile
      const sent = new Set(batch);
      let still = 0;
      while (still < this.buffer.length && sent.has(this.buffer[still])) still++;
      this.buffer.splice(0, still);
      this.shipped += batch.length;
      this.failures = 0;
    } catch (error) {
      this.failures++;
      this.lastError = error;
    }
  }
}
