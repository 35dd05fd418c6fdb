import { createHash } from 'node:crypto';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ServedRequest {
  path: string;
  range: string | undefined;
}

/**
 * A model host on loopback for tests: serves files from memory with Range
 * support (206, 416), and can cut a response off after some bytes or answer a
 * path with a status, once per request queued.
 */
export class ModelServer {
  readonly requests: ServedRequest[] = [];
  private readonly files = new Map<string, Buffer>();
  private readonly cuts = new Map<string, number[]>();
  private readonly statuses = new Map<string, number>();

  private constructor(
    private readonly server: Server,
    readonly baseUrl: string,
  ) {}

  static async start(): Promise<ModelServer> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const models = new ModelServer(server, `http://127.0.0.1:${port}`);
    server.on('request', (request, response) => {
      const path = request.url ?? '/';
      models.requests.push({ path, range: request.headers.range });
      const status = models.statuses.get(path);
      const file = models.files.get(path);
      if (status !== undefined || !file) {
        response.writeHead(status ?? 404).end();
        return;
      }
      const start = Number(request.headers.range?.match(/^bytes=(\d+)-$/)?.[1] ?? 0);
      if (start >= file.length && start > 0) {
        response.writeHead(416, { 'content-range': `bytes */${file.length}` }).end();
        return;
      }
      const body = file.subarray(start);
      response.writeHead(start > 0 ? 206 : 200, {
        'content-length': body.length,
        'accept-ranges': 'bytes',
        ...(start > 0 && { 'content-range': `bytes ${start}-${file.length - 1}/${file.length}` }),
      });
      const cut = models.cuts.get(path)?.shift();
      if (cut === undefined) {
        response.end(body);
        return;
      }
      // the headers promised the whole body; the connection dies partway through it
      response.write(body.subarray(0, cut), () => response.socket?.destroy());
    });
    return models;
  }

  /** Serves `content` at `path`; returns its URL. */
  serve(path: string, content: Buffer): string {
    this.files.set(path, content);
    return this.url(path);
  }

  url(path: string): string {
    return `${this.baseUrl}${path}`;
  }

  /** The next response for `path` sends only `bytes` bytes of its body, then drops the connection. */
  cutNext(path: string, bytes: number): void {
    this.cuts.set(path, [...(this.cuts.get(path) ?? []), bytes]);
  }

  /** Answers every request for `path` with `status` and no body. */
  answer(path: string, status: number): void {
    this.statuses.set(path, status);
  }

  requestsFor(path: string): ServedRequest[] {
    return this.requests.filter((request) => request.path === path);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Deterministic bytes of a given size, and their sha256. */
export function modelBytes(size: number, seed = 1): { content: Buffer; sha256: string } {
  const content = Buffer.alloc(size);
  let state = seed;
  for (let i = 0; i < size; i++) {
    state = (state * 1_103_515_245 + 12_345) >>> 0;
    content[i] = state >>> 24;
  }
  return { content, sha256: createHash('sha256').update(content).digest('hex') };
}
