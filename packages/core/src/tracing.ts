import {
  type Attributes,
  type Context,
  context,
  createContextKey,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapPropagator,
  trace,
  type Tracer,
} from '@opentelemetry/api';

/**
 * Traces with OpenTelemetry, exported over OTLP/HTTP (JSON). Off unless an
 * endpoint is configured: then nothing of the SDK is loaded, no exporter
 * exists, and every helper here runs its function with a non-recording span.
 * Each process part (the API, a worker, the webhook service) starts its own
 * `Tracing`, so several can share one process (the tests, `emp start`) with
 * their own service name; they share the process's context manager and the
 * W3C propagator. See docs/tracing.md.
 */
export interface TracingOptions {
  /** `service.name` of the spans: emp-api, emp-worker, emp-webhooks */
  serviceName: string;
  /**
   * Where spans go (the full URL, e.g. http://collector:4318/v1/traces).
   * Default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT
   * + /v1/traces; none: tracing is off.
   */
  endpoint?: string;
  /** resource attributes beside service.name (machine id, worker id...) */
  attributes?: Attributes;
  /** most time a batch waits before it is sent; default 5 s (the SDK's) */
  exportDelayMs?: number;
}

export interface SpanOptions {
  /** the parent: a W3C traceparent (a job's), a context, or none (the active context) */
  parent?: string | Context;
  attributes?: Attributes;
  kind?: SpanKind;
  /** ms since the epoch; default now */
  startTime?: number;
  /** spans this one is linked to, not parented by (W3C traceparents; invalid ones are left out): a batch's jobs */
  links?: readonly string[];
}

export interface Tracing {
  readonly enabled: boolean;
  /** Starts a span; the caller ends it. */
  startSpan(name: string, options?: SpanOptions): Span;
  /** Runs `fn` with a span active (the logs' mixin and outgoing calls see it); ends it when `fn` settles, marking a throw as an error. */
  inSpan<T>(name: string, options: SpanOptions, fn: (span: Span) => Promise<T>): Promise<T>;
  /** Runs `fn` with `span` active (it is not ended here). */
  withSpan<T>(span: Span, fn: () => T): T;
  /** Sends the spans ended so far (tests, shutdown). */
  flush(): Promise<void>;
  shutdown(): Promise<void>;
}

const NON_RECORDING = trace.wrapSpanContext({ traceId: '00000000000000000000000000000000', spanId: '0000000000000000', traceFlags: 0 });

/** Tracing off: no SDK, no exporter; spans are the API's non-recording one. */
export const TRACING_OFF: Tracing = Object.freeze({
  enabled: false,
  startSpan: () => NON_RECORDING,
  inSpan: <T>(_name: string, _options: SpanOptions, fn: (span: Span) => Promise<T>) => fn(NON_RECORDING),
  withSpan: <T>(_span: Span, fn: () => T) => fn(),
  flush: async () => {},
  shutdown: async () => {},
});

/** Set once the SDK is loaded (the first Tracing that is on): the W3C propagator, and the context manager is installed. */
let propagator: TextMapPropagator | undefined;

/** Whether any Tracing in this process loaded the SDK (with tracing off, none does). */
export function tracingSdkLoaded(): boolean {
  return propagator !== undefined;
}

/** The OTLP traces endpoint the options or the environment name, if any. */
export function tracesEndpoint(options: Pick<TracingOptions, 'endpoint'>, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (options.endpoint) return options.endpoint;
  if (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) return env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  if (env.OTEL_EXPORTER_OTLP_ENDPOINT) return `${env.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, '')}/v1/traces`;
  return undefined;
}

/**
 * Starts tracing for one part of the system, or returns TRACING_OFF when no
 * endpoint is configured (OTEL_SDK_DISABLED=true also turns it off). The SDK
 * is imported here, on demand, so a process without tracing never loads it.
 */
export async function startTracing(options: TracingOptions): Promise<Tracing> {
  const url = tracesEndpoint(options);
  if (!url || process.env.OTEL_SDK_DISABLED === 'true') return TRACING_OFF;
  const [{ BasicTracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { resourceFromAttributes }, { W3CTraceContextPropagator }, { AsyncLocalStorageContextManager }] =
    await Promise.all([
      import('@opentelemetry/sdk-trace-base'),
      import('@opentelemetry/exporter-trace-otlp-http'),
      import('@opentelemetry/resources'),
      import('@opentelemetry/core'),
      import('@opentelemetry/context-async-hooks'),
    ]);
  if (!propagator) {
    // the active span follows async work only with a context manager; one per process
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagator = new W3CTraceContextPropagator();
  }
  const exporter = new OTLPTraceExporter({ url });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': options.serviceName, ...options.attributes }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: options.exportDelayMs ?? 5_000 })],
  });
  const tracer = provider.getTracer('emp');
  const tracing: Tracing = {
    enabled: true,
    startSpan: (name, spanOptions = {}) => startOn(tracer, name, spanOptions),
    withSpan: (span, fn) => context.with(trace.setSpan(context.active(), span).setValue(TRACING_KEY, tracing), fn),
    inSpan: async (name, spanOptions, fn) => {
      const span = startOn(tracer, name, spanOptions);
      try {
        return await context.with(trace.setSpan(parentContext(spanOptions.parent), span).setValue(TRACING_KEY, tracing), () => fn(span));
      } catch (error) {
        span.recordException(error as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).message });
        throw error;
      } finally {
        span.end();
      }
    },
    // the processor's flush sends what is buffered but does not wait for an export already on its way (or being retried)
    flush: async () => {
      await provider.forceFlush();
      await exporter.forceFlush();
    },
    shutdown: () => provider.shutdown(),
  };
  return tracing;
}

/** The active context's Tracing rides in it, so code deep in a job's work (an outgoing call) makes child spans on the right provider. */
const TRACING_KEY = createContextKey('emp.tracing');

/** The Tracing whose span is active (TRACING_OFF: none). */
export function activeTracing(): Tracing {
  return (context.active().getValue(TRACING_KEY) as Tracing | undefined) ?? TRACING_OFF;
}

function startOn(tracer: Tracer, name: string, options: SpanOptions): Span {
  const links = options.links?.flatMap((traceparent) => {
    const linked = contextOfTraceparent(traceparent);
    const spanContext = linked && trace.getSpanContext(linked);
    return spanContext ? [{ context: spanContext }] : [];
  });
  return tracer.startSpan(name, { kind: options.kind, attributes: options.attributes, startTime: options.startTime, ...(links?.length && { links }) }, parentContext(options.parent));
}

function parentContext(parent: string | Context | undefined): Context {
  if (parent === undefined) return context.active();
  if (typeof parent !== 'string') return parent;
  return contextOfTraceparent(parent) ?? ROOT_CONTEXT;
}

/** The context a W3C traceparent names (undefined: tracing off, or not a valid traceparent). */
export function contextOfTraceparent(traceparent: string | undefined): Context | undefined {
  if (!propagator || !traceparent) return undefined;
  const extracted = propagator.extract(ROOT_CONTEXT, { traceparent }, { get: (carrier, key) => carrier[key as 'traceparent'], keys: () => ['traceparent'] });
  return trace.getSpanContext(extracted) ? extracted : undefined;
}

/** The W3C traceparent of a span (undefined: not recording, e.g. tracing off). */
export function traceparentOf(span: Span): string | undefined {
  if (!span.isRecording()) return undefined;
  return traceHeaders(trace.setSpan(ROOT_CONTEXT, span)).traceparent;
}

/** The headers that carry a context (default: the active one) to another service: traceparent (and tracestate); none when tracing is off. */
export function traceHeaders(ctx: Context = context.active()): Record<string, string> {
  const headers: Record<string, string> = {};
  if (propagator && trace.getSpanContext(ctx)) propagator.inject(ctx, headers, { set: (carrier, key, value) => (carrier[key] = value) });
  return headers;
}

/**
 * The trace_id and span_id a log line written now belongs to: the active
 * span's, so a line logged inside a connector's call carries that call's span.
 * With `within` (a job's job.run), a line logged outside that trace (no span
 * active, or another job's: a claim runs inside the previous job's context)
 * carries `within`'s instead.
 */
export function traceLogFields(within?: Span): { trace_id?: string; span_id?: string } {
  if (!propagator) return {};
  const active = trace.getActiveSpan()?.spanContext();
  const own = within?.isRecording() ? within.spanContext() : undefined;
  const chosen = active && trace.isSpanContextValid(active) && (!own || active.traceId === own.traceId) ? active : own;
  return chosen ? { trace_id: chosen.traceId, span_id: chosen.spanId } : {};
}

/**
 * A pino `formatters.log` (a child logger's; pino takes a `mixin` only at the
 * root, which callers own) adding `traceLogFields(within)` to every line:
 * `logger.child(bindings, { formatters: { log: traceLogFormatter(span) } })`.
 * A field the line sets itself wins.
 */
export function traceLogFormatter(within?: Span): (object: object) => object {
  return (object) => {
    const fields = traceLogFields(within);
    return fields.trace_id ? { ...fields, ...object } : object;
  };
}

/** Marks how a span's work ended: `outcome` attribute, and an error status for anything but success. */
export function endSpan(span: Span, outcome: string, error?: unknown): void {
  span.setAttribute('emp.outcome', outcome);
  if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
  span.end();
}

export { SpanKind, SpanStatusCode, type Context, type Span };
