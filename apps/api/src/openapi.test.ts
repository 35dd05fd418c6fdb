import {
  ApiErrorBody,
  BatchSubmitResponse,
  CancelResponse,
  CompleteResponse,
  FailResponse,
  JobEventsPage,
  JobPage,
  JobView,
  MachineCommandResponse,
  MachineList,
  PauseResponse,
  PoolReport,
  PoolShards,
  QueueReport,
  RetryResponse,
  ShardReport,
  SubmittedJob,
  WorkerList,
} from '@emp/core';
import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { jobAnswer } from './job-view';

let stack: ApiStack;
let operator: string;
const http = (method: string, path: string, options: Parameters<typeof call>[3] = {}) => call(stack.url, method, path, { key: operator, ...options });

beforeAll(async () => {
  stack = await startApiStack({ worker: { durationMs: 20, steps: 2 } });
  operator = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
  await stack.broker.registerWorker({ id: 'hand', pool: 'standard', capabilities: { services: ['http', 'ollama'] } });
});
afterAll(async () => {
  await stack?.stop();
});

/** Parses a real answer with its route's schema made strict at every level it declares, so that a field the schema lacks fails. */
function conforms<S extends z.ZodType>(schema: S, body: unknown): void {
  const result = schema.safeParse(body);
  expect(result.error?.issues ?? [], JSON.stringify(body).slice(0, 500)).toEqual([]);
}

/** Jobs in every state, between them carrying every optional field a job view has. */
async function jobsOfEveryKind(): Promise<string[]> {
  const { broker } = stack;
  const ids: string[] = [];
  const submit = async (body: Record<string, unknown>, headers: Record<string, string> = {}) => {
    const answer = await http('POST', '/v1/jobs', { body: { service: 'http', ...body }, headers });
    expect(answer.status).toBe(201);
    conforms(SubmittedJob, answer.body);
    ids.push(answer.body.id);
    return answer.body.id as string;
  };
  const claim = async () => (await broker.claim('standard', 'hand')).job!.lease;
  // held and running, with progress, every deadline and a lease
  await submit(
    { deadlines: { queue_ttl_ms: 600_000, start_timeout_ms: 600_000, execution_timeout_ms: 600_000 }, webhook: { url: 'https://example.com/hook', events: ['completed'] }, workflow_id: 'wf-1', step: 2, expected_duration_s: 60 },
    { 'idempotency-key': 'every-field' },
  );
  const running = await claim();
  await broker.start(running);
  await broker.progress(running, { stage: 'running', value: 1, max: 2, message: 'half way', node: '7', preview: 'https://example.com/p.png' });
  // retrying, failed, succeeded
  await submit({ max_attempts: 2, backoff: { type: 'fixed', delay_ms: 600_000 } });
  await broker.fail(await claim(), { kind: 'retryable', message: 'later', type: 'Busy', details: { code: 7 } });
  await submit({ max_attempts: 1 });
  await broker.fail(await claim(), { kind: 'non_retryable', message: 'bad input' });
  await submit({});
  const succeeding = await claim();
  await broker.start(succeeding);
  await broker.complete(succeeding, { images: ['https://example.com/a.png'] });
  // delayed, queued behind another, canceled with a reason, expired
  await submit({ delay_ms: 600_000 });
  await submit({ service: 'ollama', requirements: { models: ['nowhere'], hardware: { gpu_memory_gb: 8 }, constraints: { gpu: ['a100'] }, exclude: { zone: 'eu' } } });
  await submit({ service: 'ollama', requirements: { models: ['nowhere'], hardware: { gpu_memory_gb: 8 }, constraints: { gpu: ['a100'] }, exclude: { zone: 'eu' } } });
  const canceled = await submit({ service: 'ollama', requirements: { models: ['nowhere'] } });
  await http('POST', `/v1/jobs/${canceled}/cancel`, { body: { reason: 'not needed' } });
  const expiring = await submit({ service: 'ollama', requirements: { models: ['nowhere'] }, deadlines: { queue_ttl_ms: 1 } });
  await new Promise((resolve) => setTimeout(resolve, 10));
  await broker.tick('standard');
  expect((await broker.getJob(expiring))?.state).toBe('expired');
  // queued behind nothing but with run times of its service known: an estimate of its wait
  await submit({});
  return ids;
}

describe('response schemas', () => {
  it('are in the OpenAPI document for every main route, with the error body for 4xx and 5xx', async () => {
    const doc = (await call(stack.url, 'GET', '/docs/json')).body;
    const routes: Array<[string, string, string, string]> = [
      ['post', '/v1/jobs', '201', 'SubmittedJob'],
      ['post', '/v1/jobs', '200', 'SubmittedJob'],
      ['post', '/v1/jobs/batch', '200', ''],
      ['get', '/v1/jobs/{id}', '200', 'JobView'],
      ['get', '/v1/jobs', '200', ''],
      ['post', '/v1/jobs/{id}/cancel', '200', ''],
      ['post', '/v1/jobs/{id}/retry', '200', ''],
      ['get', '/v1/jobs/{id}/events', '200', ''],
      ['post', '/v1/jobs/{id}/complete', '200', ''],
      ['post', '/v1/jobs/{id}/fail', '200', ''],
      ['post', '/v1/workflows', '201', 'SubmittedWorkflow'],
      ['get', '/v1/workflows/{id}', '200', 'Workflow'],
      ['get', '/v1/workflows', '200', ''],
      ['post', '/v1/workflows/{id}/cancel', '200', ''],
      ['get', '/v1/queues', '200', 'QueueReport'],
      ['get', '/v1/pools', '200', 'PoolReport'],
      ['get', '/v1/shards', '200', 'ShardReport'],
      ['put', '/v1/pools/{pool}/shards', '200', 'PoolShards'],
      ['get', '/v1/workers', '200', ''],
      ['get', '/v1/machines', '200', ''],
      ['post', '/v1/services/{service}/pause', '200', ''],
      ['post', '/v1/machines/{id}/{action}', '202', ''],
      ['post', '/v1/webhooks', '201', 'CreatedWebhookEndpoint'],
      ['get', '/v1/webhooks', '200', 'WebhookEndpointList'],
      ['get', '/v1/webhooks/{id}', '200', 'WebhookEndpoint'],
      ['patch', '/v1/webhooks/{id}', '200', 'WebhookEndpoint'],
      ['post', '/v1/webhooks/{id}/test', '202', 'WebhookTestMessage'],
      ['post', '/v1/webhooks/{id}/rotate-secret', '200', 'RotatedWebhookSecret'],
      ['get', '/v1/webhooks/{id}/deliveries', '200', 'WebhookDeliveryList'],
      ['post', '/v1/webhooks/{id}/recover', '200', 'WebhookRecoverResult'],
      ['post', '/v1/webhooks/{id}/messages/{message}/resend', '202', 'WebhookResentMessage'],
    ];
    for (const [method, path, status, component] of routes) {
      const responses = doc.paths[path]?.[method]?.responses;
      const schema = responses?.[status]?.content?.['application/json']?.schema;
      expect(schema, `${method} ${path} ${status}`).toBeDefined();
      if (component) expect(schema).toEqual({ $ref: `#/components/schemas/${component}` });
      else expect(schema.type, `${method} ${path} ${status}`).toBe('object');
      expect(responses['4XX'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/ApiError' });
    }
    const job = doc.components.schemas.JobView;
    expect(Object.keys(job.properties)).toEqual(expect.arrayContaining(['id', 'state', 'position', 'progress', 'result', 'error', 'timestamps', 'deadlines', 'timings']));
    expect(job.additionalProperties).toBe(false);
    expect(doc.paths['/v1/jobs/{id}/stream'].get.responses['200'].content).toHaveProperty(['text/event-stream']);
    expect(doc.paths['/v1/workflows/{id}/stream'].get.responses['200'].content).toHaveProperty(['text/event-stream']);
    // every reference resolves to a component of the document
    for (const ref of JSON.stringify(doc).match(/"#\/components\/schemas\/[^"]*"/g) ?? []) {
      expect(doc.components.schemas, ref).toHaveProperty([ref.slice('"#/components/schemas/'.length, -1)]);
    }
  });

  it('describe every field of real job views in every state, and the answers keep every field the job view has', async () => {
    const ids = await jobsOfEveryKind();
    const seen = new Set<string>();
    for (const id of ids) {
      const answer = await http('GET', `/v1/jobs/${id}`);
      expect(answer.status).toBe(200);
      conforms(JobView, answer.body);
      const job = await stack.broker.getJob(id);
      expect(answer.body, `job ${id} as answered`).toEqual(JSON.parse(JSON.stringify(await jobAnswer(stack.server.app.queueEta, job!))));
      for (const [key, value] of Object.entries(answer.body)) {
        seen.add(key);
        if (value && typeof value === 'object' && !Array.isArray(value) && key !== 'payload' && key !== 'result') for (const inner of Object.keys(value)) seen.add(`${key}.${inner}`);
      }
    }
    // the jobs above between them have every field the schema declares
    const declared = Object.entries(JobView.shape).flatMap(([key, field]) => {
      const inner = (field as z.ZodType & { unwrap?: () => z.ZodType }).unwrap?.() ?? field;
      return key === 'timings' || key === 'timestamps' || key === 'deadlines' ? Object.keys((inner as z.ZodObject).shape).map((k) => `${key}.${k}`) : [key];
    });
    expect(declared.filter((field) => !seen.has(field))).toEqual([]);

    const listed = await http('GET', '/v1/jobs?limit=100');
    conforms(JobPage, listed.body);
    expect(listed.body.jobs.length).toBeGreaterThanOrEqual(ids.length);
  });

  it('hold for the answers of every other main route, errors included', async () => {
    const done = await http('POST', '/v1/jobs?wait=30', { body: { service: 'simulation' } });
    conforms(SubmittedJob, done.body);
    conforms(BatchSubmitResponse, (await http('POST', '/v1/jobs/batch', { body: { jobs: [{ service: 'simulation' }, { service: 'nosuch' }] } })).body);
    conforms(JobEventsPage, (await http('GET', `/v1/jobs/${done.body.id}/events`)).body);
    const waiting = await http('POST', '/v1/jobs', { body: { service: 'ollama', requirements: { models: ['nowhere'] } } });
    conforms(CancelResponse, (await http('POST', `/v1/jobs/${waiting.body.id}/cancel`)).body);
    conforms(RetryResponse, (await http('POST', `/v1/jobs/${waiting.body.id}/retry`)).body);
    await http('POST', `/v1/jobs/${waiting.body.id}/cancel`);
    for (const outcome of ['complete', 'fail'] as const) {
      await http('POST', '/v1/jobs', { body: { service: 'http' } });
      const held = (await stack.broker.claim('standard', 'hand')).job!;
      const answer = await http('POST', `/v1/jobs/${held.id}/${outcome}`, { body: outcome === 'complete' ? { result: 1 } : { error: { kind: 'non_retryable', message: 'x' } } });
      conforms(outcome === 'complete' ? CompleteResponse : FailResponse, answer.body);
    }
    conforms(QueueReport, (await http('GET', '/v1/queues')).body);
    conforms(PoolReport, (await http('GET', '/v1/pools')).body);
    conforms(ShardReport, (await http('GET', '/v1/shards')).body);
    conforms(PoolShards, (await http('PUT', '/v1/pools/openapi-shards/shards', { body: { count: 2 } })).body);
    const workers = await http('GET', '/v1/workers');
    conforms(WorkerList, workers.body);
    expect(workers.body.workers).toContainEqual(expect.objectContaining({ id: 'api-test-worker', capabilities: expect.objectContaining({ services: ['simulation'] }) }));
    conforms(MachineList, (await http('GET', '/v1/machines')).body);
    conforms(PauseResponse, (await http('POST', '/v1/services/comfyui/pause', { body: { pool: 'standard' } })).body);
    conforms(MachineCommandResponse, (await http('POST', '/v1/machines/api-test-machine/drain')).body);
    for (const bad of [await http('GET', '/v1/jobs/nope'), await http('GET', '/v1/jobs/standard.doesnotexist00'), await call(stack.url, 'GET', '/v1/queues'), await http('PUT', '/v1/pools/standard/shards', { body: { count: 0 } })]) {
      expect(bad.status).toBeGreaterThanOrEqual(400);
      conforms(ApiErrorBody, bad.body);
    }
  });
});
