import { Writable } from 'node:stream';
import { Broker, startTracing, SubmitJobInput, traceLogFormatter, type Tracing } from '@emp/core';
import { startOtlpReceiver } from '@emp/testkit';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWebhookService } from './service';
import { TestReceiver, until } from './testing/receiver';

const { redis } = usePrivateRedis();

/** A pino logger whose lines land in `lines`, parsed. */
function capturedLogger(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

describe('tracing of webhook deliveries and log lines', () => {
  let otlp: Awaited<ReturnType<typeof startOtlpReceiver>>;
  let tracing: Tracing;

  beforeAll(async () => {
    otlp = await startOtlpReceiver();
    tracing = await startTracing({ serviceName: 'emp-webhooks', endpoint: otlp.url, exportDelayMs: 50 });
  });
  afterAll(async () => {
    await tracing?.shutdown();
    await otlp?.close();
  });

  it("puts each delivery attempt in the job's trace as webhook.deliver, sends its traceparent, and logs with its span id", async () => {
    const broker = await Broker.connect({ redis });
    const { logger, lines } = capturedLogger();
    const receiver = await new TestReceiver().start();
    // the first attempt fails (retried), the next one is delivered
    receiver.answer = (_request, index) => ({ status: index === 0 ? 500 : 200 });
    const hooks = await startWebhookService({
      broker, logger, tracing,
      config: { port: 0, allowPrivate: true, retryScheduleMs: [0, 20, 20], retryJitter: 0, pollMs: 20, poolScanMs: 50, timeoutMs: 2_000 },
    });
    try {
      const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
      const submitSpan = '00f067aa0ba902b7';
      await broker.registerWorker({ id: 'trace-hook-worker', pool: 'standard', capabilities: { services: ['simulation'] } });
      const { submitted } = await broker.submitAndRead(SubmitJobInput.parse({ service: 'simulation', tenant: 'acme', webhook: { url: receiver.url, events: ['job.succeeded'] } }), { traceparent: `00-${traceId}-${submitSpan}-01` });
      const claimed = await broker.claim('standard', 'trace-hook-worker');
      await broker.start(claimed.job!.lease);
      await broker.complete(claimed.job!.lease, { ok: true });
      const id = submitted.id;
      await until(() => receiver.received.some((r) => r.event.type === 'job.succeeded'), 'job.succeeded delivered');
      await until(async () => (await hooks.outbox.deliveryLog(id)).length === 2, 'both attempts logged');
      // the second attempt's span ends just after its log entry is written
      const deliverSpans = () => otlp.spans.filter((s) => s.name === 'webhook.deliver' && s.attributes['emp.job.id'] === id);
      await until(async () => {
        await tracing.flush();
        return deliverSpans().length >= 2;
      }, 'both webhook.deliver spans exported');

      const delivers = deliverSpans();
      expect(delivers).toHaveLength(2);
      for (const span of delivers) expect(span).toMatchObject({ service: 'emp-webhooks', traceId, parentSpanId: submitSpan });
      const [first, second] = [...delivers].sort((a, b) => Number(a.attributes['emp.attempt']) - Number(b.attributes['emp.attempt']));
      expect(first!.attributes).toMatchObject({ 'emp.webhook.endpoint': 'job webhook', 'emp.webhook.event': 'job.succeeded', 'emp.attempt': 1, 'http.response.status_code': 500, 'emp.outcome': 'retry' });
      expect(second!.attributes).toMatchObject({ 'emp.attempt': 2, 'http.response.status_code': 200, 'emp.outcome': 'delivered' });
      // the receiver saw each attempt's own span as the parent
      expect(receiver.arrived.map((r) => r.headers.traceparent)).toEqual([`00-${traceId}-${first!.spanId}-01`, `00-${traceId}-${second!.spanId}-01`]);
      // the customer-facing body has no trace context
      expect(receiver.received[0]!.body).not.toContain(traceId);
      // the failed attempt's log line carries its span
      const notDelivered = lines.find((l) => l.msg === 'webhook attempt not delivered');
      expect(notDelivered).toMatchObject({ job_id: id, trace_id: traceId, span_id: first!.spanId });
      // a line logged outside any span carries none
      expect(lines.find((l) => l.msg === 'webhook service started')).not.toHaveProperty('span_id');
      // the intake batch that queued the message: a trace of its own, linked to the job's
      const intake = otlp.spans.filter((s) => s.name === 'webhook.intake' && s.links.some((l) => l.traceId === traceId && l.spanId === submitSpan));
      // (the job's events may come in one batch or several; one message was queued in all)
      expect(intake.length).toBeGreaterThanOrEqual(1);
      expect(intake.reduce((sum, s) => sum + Number(s.attributes['emp.webhook.messages_queued']), 0)).toBe(1);
      for (const span of intake) {
        expect(span).toMatchObject({ service: 'emp-webhooks', parentSpanId: undefined, attributes: { 'emp.pool': 'standard', 'emp.outcome': 'queued' } });
        expect(span.traceId).not.toBe(traceId);
        expect(span.attributes['emp.webhook.events']).toBeGreaterThanOrEqual(1);
      }
    } finally {
      await hooks.close();
      await receiver.stop();
    }
  });

  it("joins a job logger's lines to the active span: a child span's id inside it, job.run's outside", async () => {
    const { logger, lines } = capturedLogger();
    const run = tracing.startSpan('job.run', { parent: '' });
    // what the worker's job logger is (worker.ts launch)
    const jobLogger = logger.child({ job_id: 'j1' }, { formatters: { log: traceLogFormatter(run) } });
    let child: string | undefined;
    await tracing.withSpan(run, () =>
      tracing.inSpan('POST prompt', {}, async (span) => {
        child = span.spanContext().spanId;
        jobLogger.info('inside the call');
      }),
    );
    // another trace active (a claim runs inside the previous job's context): job.run's ids, not the other's
    const other = tracing.startSpan('job.run', { parent: '' });
    tracing.withSpan(other, () => jobLogger.info('outside, another trace active'));
    jobLogger.info({ span_id: 'mine' }, 'a field set by the line wins');
    run.end();
    other.end();
    const traceId = run.spanContext().traceId;
    expect(child).toBeDefined();
    expect(lines[0]).toMatchObject({ msg: 'inside the call', job_id: 'j1', trace_id: traceId, span_id: child });
    expect(lines[1]).toMatchObject({ trace_id: traceId, span_id: run.spanContext().spanId });
    expect(lines[2]).toMatchObject({ trace_id: traceId, span_id: 'mine' });
  });
});
