import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiagLogLevel, diag } from '@opentelemetry/api';
import { type RedisProcess, startOtlpReceiver, startRedis, waitFor } from '@emp/testkit';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LocalStack, startLocalStack } from './stack';

/**
 * `emp start` with OTEL_EXPORTER_OTLP_ENDPOINT set: the API, the webhook
 * service and the machine agent in this process each export with their own
 * service name on one shared SDK setup (one context manager, one propagator,
 * no global provider registered twice), the worker processes with theirs; one
 * job makes one trace across them.
 */
describe('the local stack with tracing on', { timeout: 120_000 }, () => {
  let redis: RedisProcess;
  let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
  let stateDir: string;
  let stack: LocalStack | undefined;
  const diagnostics: string[] = [];
  const saved = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;

  beforeAll(async () => {
    // the OpenTelemetry API's own complaints (a duplicate registration of a global) go here
    const record = (...args: unknown[]) => diagnostics.push(args.map(String).join(' '));
    diag.setLogger({ error: record, warn: record, info: () => {}, debug: () => {}, verbose: () => {} }, DiagLogLevel.WARN);
    [redis, receiver, stateDir] = await Promise.all([startRedis(), startOtlpReceiver(), mkdtemp(join(tmpdir(), 'emp-stack-tracing-'))]);
    // the parts of the stack, and the worker processes the agent starts (they inherit the environment), read it
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url.replace(/\/v1\/traces$/, '');
    stack = await startLocalStack({
      redis: { url: redis.url, source: 'env' },
      stateDir,
      redisPort: 0,
      workers: 1,
      jobDurationMs: 50,
      api: { host: '127.0.0.1', port: 0, auth: false },
      monitor: false,
      webhooks: { port: 0 },
      planner: false,
      logger: pino({ level: 'silent' }),
    });
  });

  afterAll(async () => {
    await stack?.stop();
    if (saved === undefined) delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    else process.env.OTEL_EXPORTER_OTLP_ENDPOINT = saved;
    diag.disable();
    await receiver?.close();
    await redis?.stop();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  it('makes one connected trace for a job: API request -> queue.wait and job.run -> the connector; each part with its own service name', async () => {
    const traceId = '7bf92f3577b34da6a3ce929d0e0e4731';
    const clientSpan = '20f067aa0ba902b9';
    const response = await fetch(`${stack!.api.url}/v1/jobs?wait=30`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${clientSpan}-01` },
      body: JSON.stringify({ service: 'simulation' }),
    });
    expect(response.status).toBe(201);
    const job = (await response.json()) as { id: string; state: string };
    expect(job.state).toBe('succeeded');
    // stopping flushes every part's spans (the worker processes' too)
    await stack!.stop();

    const spans = await waitFor('the job\'s spans from the API, the worker and the webhook intake', () => {
      const inTrace = receiver.spans.filter((s) => s.traceId === traceId);
      const names = new Set(inTrace.map((s) => s.name));
      const intake = receiver.spans.some((s) => s.name === 'webhook.intake' && s.links.some((l) => l.traceId === traceId));
      return ['POST /v1/jobs', 'queue.wait', 'job.run', 'simulation.run'].every((n) => names.has(n)) && intake ? receiver.spans : undefined;
    }, 30_000);

    const inTrace = spans.filter((s) => s.traceId === traceId);
    const byName = (name: string) => inTrace.find((s) => s.name === name)!;
    const request = byName('POST /v1/jobs');
    expect(request).toMatchObject({ service: 'emp-api', parentSpanId: clientSpan });
    expect(byName('queue.wait')).toMatchObject({ service: 'emp-worker', parentSpanId: request.spanId, attributes: { 'emp.job.id': job.id } });
    const run = byName('job.run');
    expect(run).toMatchObject({ service: 'emp-worker', parentSpanId: request.spanId, attributes: { 'emp.job.id': job.id, 'emp.outcome': 'succeeded', 'emp.machine.id': stack!.machine.machineId } });
    expect(byName('simulation.run')).toMatchObject({ service: 'emp-worker', parentSpanId: run.spanId, attributes: { 'emp.outcome': 'succeeded' } });
    // the webhook service's intake batches are traces of their own, linked to the job's
    const intake = spans.find((s) => s.name === 'webhook.intake' && s.links.some((l) => l.traceId === traceId))!;
    expect(intake.service).toBe('emp-webhooks');
    expect(intake.traceId).not.toBe(traceId);

    expect(diagnostics.filter((line) => /duplicate registration|already registered/i.test(line))).toEqual([]);
  });
});
