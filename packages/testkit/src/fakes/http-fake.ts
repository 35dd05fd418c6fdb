/**
 * What the fake services share: a real HTTP(S) server on 127.0.0.1 (port 0)
 * that records every request, can require headers (auth) and can be told to
 * answer the next request to a path with an error.
 */
import { once } from 'node:events';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

export interface FakeServerOptions {
  /** serve HTTPS with this key and certificate (PEM) */
  tls?: { key: string; cert: string };
  /** every request (and WebSocket upgrade) must carry these headers, or gets 401 */
  requiredHeaders?: Record<string, string>;
}

export type Handler = (request: RecordedRequest, response: ServerResponse, raw: IncomingMessage) => Promise<void> | void;

export class FakeHttpServer {
  readonly requests: RecordedRequest[] = [];
  private readonly canned = new Map<string, Array<{ status: number; body: string; contentType: string }>>();
  private readonly sockets = new Set<Socket>();
  readonly server: Server;
  /** delay before every answer (a slow service) */
  responseDelayMs = 0;

  constructor(
    private readonly options: FakeServerOptions,
    private readonly handle: Handler,
  ) {
    const listener = (req: IncomingMessage, res: ServerResponse) => void this.onRequest(req, res);
    this.server = options.tls ? createHttpsServer({ key: options.tls.key, cert: options.tls.cert }, listener) : createServer(listener);
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  async listen(): Promise<void> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    const { port } = this.server.address() as AddressInfo;
    this.address = `${this.options.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  }

  private address: string | undefined;
  private closing: Promise<void> | undefined;

  /** The base URL; it stays known after close, so a test can show what a client sees when the service is gone. */
  get url(): string {
    if (this.address === undefined) throw new Error('the fake server is not listening yet');
    return this.address;
  }

  /** Answers the next `count` requests to `path` with `status` and `body` instead of the real thing. */
  failNext(path: string, status: number, body: unknown = { error: 'injected failure' }, count = 1): void {
    const list = this.canned.get(path) ?? [];
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    for (let i = 0; i < count; i++) list.push({ status, body: text, contentType: typeof body === 'string' ? 'text/plain' : 'application/json' });
    this.canned.set(path, list);
  }

  requestsTo(path: string): RecordedRequest[] {
    return this.requests.filter((r) => r.path === path);
  }

  /** True when the request carries the required headers (checked for HTTP and WebSocket upgrades alike). */
  authorised(req: IncomingMessage): boolean {
    return Object.entries(this.options.requiredHeaders ?? {}).every(([name, value]) => req.headers[name.toLowerCase()] === value);
  }

  async close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const socket of this.sockets) socket.destroy();
    });
    return this.closing;
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    let body: unknown = text;
    if (text && (req.headers['content-type'] ?? '').includes('json')) {
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    }
    const recorded: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: req.headers,
      body,
    };
    this.requests.push(recorded);
    if (this.responseDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.responseDelayMs));
    if (!this.authorised(req)) return sendJson(res, 401, { error: 'unauthorised' });
    const canned = this.canned.get(url.pathname)?.shift();
    if (canned) {
      res.writeHead(canned.status, { 'content-type': canned.contentType });
      res.end(canned.body);
      return;
    }
    try {
      await this.handle(recorded, res, req);
    } catch (error) {
      if (!res.headersSent) sendJson(res, 500, { error: String(error) });
      else res.destroy();
    }
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** A fake service: its routes served by a FakeHttpServer, the URL it listens on, and close. */
export abstract class FakeService {
  readonly http: FakeHttpServer;

  constructor(options: FakeServerOptions) {
    this.http = new FakeHttpServer(options, (request, response, raw) => this.route(request, response, raw));
  }

  get url(): string {
    return this.http.url;
  }

  async close(): Promise<void> {
    await this.http.close();
  }

  protected abstract route(request: RecordedRequest, response: ServerResponse, raw: IncomingMessage): Promise<void> | void;
}
