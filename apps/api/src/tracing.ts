import { contextOfTraceparent, type Span, SpanKind, type Tracing, traceparentOf } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';

declare module 'fastify' {
  interface FastifyRequest {
    /** the request's span (non-recording with tracing off); a submit stores its traceparent on the job */
    traceSpan: Span | undefined;
  }
}

/**
 * A span per HTTP request, named by method and route pattern. An incoming W3C
 * `traceparent` makes it a child of the caller's span, so a client's trace
 * goes on through the job. With tracing off no hook is added.
 */
export const requestTracing = fp(async (app: FastifyInstance, options: { tracing: Tracing }) => {
  app.decorateRequest('traceSpan', undefined);
  const { tracing } = options;
  if (!tracing.enabled) return;
  app.addHook('onRequest', async (request) => {
    const incoming = request.headers.traceparent;
    const route = request.routeOptions.url ?? 'unknown';
    request.traceSpan = tracing.startSpan(`${request.method} ${route}`, {
      kind: SpanKind.SERVER,
      parent: (typeof incoming === 'string' && contextOfTraceparent(incoming)) || undefined,
      attributes: { 'http.request.method': request.method, 'http.route': route },
    });
  });
  app.addHook('onResponse', async (request, reply) => {
    const span = request.traceSpan;
    if (!span) return;
    span.setAttribute('http.response.status_code', reply.statusCode);
    if (reply.statusCode >= 500) span.setStatus({ code: 2 });
    span.end();
  });
});

/** The traceparent a submit stores on its job: the request span's (a child of the caller's, when it sent one). */
export function requestTraceparent(span: Span | undefined): string | undefined {
  return span ? traceparentOf(span) : undefined;
}
