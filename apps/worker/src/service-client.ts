import { Agent, type Dispatcher, fetch, type Response } from 'undici';
import { activeTracing, endSpan, ServiceTls, SpanKind, traceHeaders } from '@emp/core';
import { z } from 'zod';
import { JobFailure } from './connector';

/** Where a service is and how to talk to it. */
export const ServiceEndpoint = z.object({
  baseUrl: z.string().url().refine((url) => /^https?:/.test(url), { message: 'expected an http or https URL' }),
  /** sent with every request, e.g. `{ authorization: 'Bearer ...' }` */
  headers: z.record(z.string(), z.string()).default({}),
  tls: ServiceTls.optional(),
  /** longest wait for a response to start (a stream may then run longer) */
  requestTimeoutMs: z.number().int().positive().max(3_600_000).default(30_000),
});
export type ServiceEndpoint = z.output<typeof ServiceEndpoint>;

export interface RequestOptions {
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE';
  query?: Record<string, string | undefined>;
  /** sent as JSON */
  json?: unknown;
  /** the job's signal: aborting it aborts the request and rethrows its reason */
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** TLS failures are a worker's configuration problem (wrong CA), never the job's. */
const TLS_CODES = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL|DEPTH_ZERO/;

/**
 * HTTP to one service, with its base URL, headers and TLS trust, turning
 * transport failures into classified JobFailures: unreachable, reset or slow
 * -> retryable; a TLS failure -> infrastructure (this worker cannot reach the
 * service, another may).
 */
export class ServiceClient {
  readonly baseUrl: URL;
  readonly headers: Record<string, string>;
  private readonly dispatcher: Dispatcher | undefined;

  constructor(
    readonly service: string,
    private readonly endpoint: ServiceEndpoint,
  ) {
    this.baseUrl = new URL(endpoint.baseUrl.endsWith('/') ? endpoint.baseUrl : `${endpoint.baseUrl}/`);
    this.headers = endpoint.headers;
    const tls = endpoint.tls;
    this.dispatcher = tls ? new Agent({ connect: { ca: tls.ca, cert: tls.cert, key: tls.key } }) : undefined;
  }

  /** The URL of `path` (relative to the base URL, which may itself have a path). */
  url(path: string, query: Record<string, string | undefined> = {}): URL {
    const url = new URL(path.replace(/^\//, ''), this.baseUrl);
    for (const [name, value] of Object.entries(query)) if (value !== undefined) url.searchParams.set(name, value);
    return url;
  }

  /** Options for a `ws` WebSocket to the same service: its headers and TLS trust. */
  webSocketOptions(): { headers: Record<string, string>; ca?: string; cert?: string; key?: string } {
    const tls = this.endpoint.tls;
    return { headers: this.headers, ...(tls?.ca && { ca: tls.ca }), ...(tls?.cert && { cert: tls.cert, key: tls.key }) };
  }

  /**
   * Sends a request; resolves with any HTTP status once the response headers
   * arrive (`timeoutMs` bounds that wait only: a stream may then run longer),
   * throws a classified JobFailure on transport failure.
   */
  async request(path: string, options: RequestOptions = {}): Promise<Response> {
    const timeoutMs = options.timeoutMs ?? this.endpoint.requestTimeoutMs;
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(new DOMException(`no response within ${timeoutMs} ms`, 'TimeoutError')), timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout.signal]) : timeout.signal;
    const headers: Record<string, string> = { accept: 'application/json', ...this.headers };
    if (options.json !== undefined) headers['content-type'] = 'application/json';
    const method = options.method ?? (options.json === undefined ? 'GET' : 'POST');
    // a child of the job's span (non-recording with tracing off); the service gets its traceparent
    const tracing = activeTracing();
    const span = tracing.startSpan(`${method} ${path}`, {
      kind: SpanKind.CLIENT,
      attributes: { 'emp.service': this.service, 'http.request.method': method, 'url.path': path },
    });
    Object.assign(headers, tracing.withSpan(span, () => traceHeaders()));
    try {
      const response = await fetch(this.url(path, options.query), {
        method,
        headers,
        body: options.json === undefined ? undefined : JSON.stringify(options.json),
        signal,
        dispatcher: this.dispatcher,
      });
      span.setAttribute('http.response.status_code', response.status);
      endSpan(span, response.ok ? 'ok' : 'status', response.ok ? undefined : `HTTP ${response.status}`);
      return response;
    } catch (error) {
      endSpan(span, 'transport', error);
      throw this.transportFailure(error, options.signal, `${method} ${path}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends a request and parses a 2xx JSON reply with `schema`; any other status is classified. */
  async json<S extends z.ZodType>(path: string, schema: S, options: RequestOptions = {}): Promise<z.output<S>> {
    const response = await this.request(path, options);
    const text = await this.readText(response, options.signal, path, options.timeoutMs);
    if (!response.ok) throw statusFailure(this.service, path, response.status, text);
    return parseReply(this.service, path, schema, text);
  }

  /** Reads a 2xx body as bytes; any other status is classified. */
  async bytes(path: string, options: RequestOptions = {}): Promise<{ data: Uint8Array; contentType: string }> {
    const response = await this.request(path, options);
    if (!response.ok) throw statusFailure(this.service, path, response.status, await this.readText(response, options.signal, path, options.timeoutMs));
    const data = await this.withinDeadline(response, options, path, async () => new Uint8Array(await response.arrayBuffer()));
    return { data, contentType: response.headers.get('content-type') ?? 'application/octet-stream' };
  }

  /** Reads a whole (small) body as text, within the request timeout. */
  async readText(response: Response, signal: AbortSignal | undefined, what: string, timeoutMs?: number): Promise<string> {
    return this.withinDeadline(response, { signal, timeoutMs }, what, () => response.text());
  }

  /** Reads a body; a stall longer than the request timeout cancels it (a slow service is retryable). */
  private async withinDeadline<T>(response: Response, options: RequestOptions, what: string, read: () => Promise<T>): Promise<T> {
    const timeoutMs = options.timeoutMs ?? this.endpoint.requestTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const stalled = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        void response.body?.cancel().catch(() => undefined);
        reject(new JobFailure('retryable', `${this.service}: reading the reply to ${what} took over ${timeoutMs} ms`, { type: 'ServiceTimeout' }));
      }, timeoutMs);
    });
    try {
      return await Promise.race([read(), stalled]);
    } catch (error) {
      throw this.transportFailure(error, options.signal, what);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * What a failed transfer means: the job's own abort (rethrown as its
   * reason), a TLS problem (infrastructure), or an unreachable, reset or slow
   * service (retryable).
   */
  transportFailure(error: unknown, jobSignal: AbortSignal | undefined, what: string): Error {
    if (jobSignal?.aborted) return jobSignal.reason as Error;
    if (error instanceof JobFailure) return error;
    const code = errorCode(error);
    const name = error instanceof Error ? error.name : '';
    if (name === 'TimeoutError' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT') {
      return new JobFailure('retryable', `${this.service}: ${what} timed out`, { type: 'ServiceTimeout', cause: error });
    }
    if (code && TLS_CODES.test(code)) {
      return new JobFailure('infrastructure', `${this.service}: TLS failure talking to ${this.baseUrl.origin}: ${code}`, { type: 'TlsError', cause: error });
    }
    const detail = code ?? (error instanceof Error ? error.message : String(error));
    return new JobFailure('retryable', `${this.service}: ${what} failed: ${detail}`, { type: 'ServiceUnreachable', cause: error });
  }

  async close(): Promise<void> {
    await this.dispatcher?.close();
  }
}

/** The innermost error code of a fetch failure (undici nests it in `cause`). */
export function errorCode(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/**
 * An HTTP error status of a service: 5xx, 408 and 429 are retryable; 401 and
 * 403 mean this worker's credentials are wrong, which is no fault of the job
 * (infrastructure: another worker may hold good ones); other 4xx are the
 * request's fault (non_retryable).
 */
export function statusFailure(service: string, what: string, status: number, body: string): JobFailure {
  const message = `${service}: ${what} answered ${status}${body ? `: ${body.slice(0, 500)}` : ''}`;
  const details = { status, body: body.slice(0, 2_000) };
  if (status >= 500 || status === 408 || status === 429) return new JobFailure('retryable', message, { type: 'ServiceError', details });
  if (status === 401 || status === 403) return new JobFailure('infrastructure', message, { type: 'ServiceAuthFailed', details });
  return new JobFailure('non_retryable', message, { type: 'ServiceRejected', details });
}

/** Parses a service's reply; a reply of the wrong shape is a retryable ProtocolError, never a crash. */
export function parseReply<S extends z.ZodType>(service: string, what: string, schema: S, text: string): z.output<S> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw protocolError(service, `${what}: the reply is not JSON: ${text.slice(0, 200)}`);
  }
  return parseMessage(service, what, schema, value);
}

export function parseMessage<S extends z.ZodType>(service: string, what: string, schema: S, value: unknown): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issues = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
  throw protocolError(service, `${what}: unexpected shape: ${issues}`);
}

/** A message from the service that does not follow its protocol: retryable, it may be a transient fault (a proxy, a restart). */
export function protocolError(service: string, message: string): JobFailure {
  return new JobFailure('retryable', `${service}: ${message}`, { type: 'ProtocolError' });
}
