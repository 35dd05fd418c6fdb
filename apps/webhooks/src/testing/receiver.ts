import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedWebhook {
  at: number;
  headers: Record<string, string>;
  body: string;
  /** the parsed body */
  event: { type: string; timestamp: string; data: { id: string; state: string; progress?: { value?: number }; workflow?: string; step?: string } };
}

/** What the receiver answers a request: a status (and headers, after `delayMs`), or 'hang' (never answer). */
export type Answer = { status: number; headers?: Record<string, string>; delayMs?: number } | 'hang';

/**
 * A webhook receiver on loopback for tests: records every request, answers as
 * `answer` says (200 by default), and can go down and come back on the same port.
 */
export class TestReceiver {
  readonly received: ReceivedWebhook[] = [];
  /** requests seen before an answer was sent (hung or aborted included) */
  readonly arrived: ReceivedWebhook[] = [];
  answer: (request: ReceivedWebhook, index: number) => Answer = () => ({ status: 200 });
  private server: http.Server | undefined;
  private readonly open = new Set<http.ServerResponse>();
  port = 0;
  /** requests being answered now, and the most there were at once */
  concurrent = 0;
  maxConcurrent = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  async start(port = this.port): Promise<this> {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)]));
        const request: ReceivedWebhook = { at: Date.now(), headers, body, event: JSON.parse(body) as ReceivedWebhook['event'] };
        const answer = this.answer(request, this.arrived.length);
        this.arrived.push(request);
        if (answer === 'hang') {
          this.open.add(res);
          return;
        }
        this.concurrent += 1;
        this.maxConcurrent = Math.max(this.maxConcurrent, this.concurrent);
        setTimeout(() => {
          this.concurrent -= 1;
          if (answer.status >= 200 && answer.status < 300) this.received.push(request);
          res.writeHead(answer.status, answer.headers ?? {}).end('ok');
        }, answer.delayMs ?? 0);
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    return this;
  }

  /** Goes down: connections are refused until `start()` again. */
  async stop(): Promise<void> {
    for (const res of this.open) res.destroy();
    this.open.clear();
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The delivered events of one job, in arrival order. */
  typesOf(jobId: string): string[] {
    return this.received.filter((r) => r.event.data.id === jobId).map((r) => r.event.type);
  }
}

/** Waits until `check` holds, polling every 20 ms; fails with `what` after `timeoutMs`. */
export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
