import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let stack: ApiStack;
const keys = { operator: '', acme: '', globex: '' };
const http = (method: string, path: string, options: Parameters<typeof call>[3] = {}) => call(stack.url, method, path, { key: keys.operator, ...options });

beforeAll(async () => {
  stack = await startApiStack({ worker: { durationMs: 20, steps: 1 } });
  const apiKeys = stack.server.app.apiKeys;
  keys.operator = (await apiKeys.create({ role: 'operator' })).key;
  keys.acme = (await apiKeys.create({ role: 'client', tenant: 'acme' })).key;
  keys.globex = (await apiKeys.create({ role: 'client', tenant: 'globex' })).key;
});
afterAll(async () => {
  await stack?.stop();
});

const threeSteps = {
  steps: {
    generate: { service: 'simulation', payload: { result: { images: ['cat-1.png', 'cat-2.png'] } } },
    upscale: { service: 'simulation', needs: ['generate'], payload: { result: { url: { $from: 'generate.images[0]' } } } },
    caption: { service: 'simulation', needs: ['upscale'], payload: { result: { caption: 'a cat', of: { $from: 'upscale.url' } } } },
  },
};

/** The whole SSE stream of a workflow (it ends after the workflow's end), as [type, data] pairs. */
async function streamOf(id: string, key: string): Promise<Array<[string, Record<string, unknown>]>> {
  const response = await fetch(`${stack.url}/v1/workflows/${id}/stream`, { headers: { authorization: `Bearer ${key}` } });
  expect(response.status).toBe(200);
  const text = await response.text();
  return text
    .split('\n\n')
    .filter((block) => block.includes('data: '))
    .map((block) => {
      const type = /^event: (.*)$/m.exec(block)![1]!;
      return [type, JSON.parse(/^data: (.*)$/m.exec(block)![1]!)];
    });
}

describe('workflows over HTTP', () => {
  it('runs three steps on the simulation service, streams their progress and answers every step with its output', async () => {
    const submitted = await http('POST', '/v1/workflows', { body: threeSteps, key: keys.acme });
    expect(submitted.status).toBe(201);
    expect(submitted.headers.get('location')).toBe(`/v1/workflows/${submitted.body.id}`);
    expect(submitted.body).toMatchObject({ tenant: 'acme', state: 'running', progress: { total: 3 } });
    const events = await streamOf(submitted.body.id, keys.acme);
    const workflowEvents = events.filter(([type]) => type.startsWith('workflow.')).map(([type, data]) => `${type} ${data.step ?? ''}`.trim());
    expect(workflowEvents).toEqual(['workflow.submitted', 'workflow.step_succeeded generate', 'workflow.step_succeeded upscale', 'workflow.step_succeeded caption', 'workflow.succeeded']);
    expect(events.filter(([type]) => type === 'job.succeeded')).toHaveLength(3);

    const workflow = (await http('GET', `/v1/workflows/${submitted.body.id}`, { key: keys.acme })).body;
    expect(workflow).toMatchObject({ state: 'succeeded', progress: { ended: 3, total: 3 } });
    expect(workflow.steps.map((s: { name: string; state: string }) => [s.name, s.state])).toEqual([['generate', 'succeeded'], ['upscale', 'succeeded'], ['caption', 'succeeded']]);
    expect(workflow.steps[2].output).toMatchObject({ caption: 'a cat', of: 'cat-1.png' });
    for (const step of workflow.steps) {
      expect(step.started_at).toBeGreaterThanOrEqual(step.ready_at);
      expect(step.ended_at).toBeGreaterThanOrEqual(step.started_at);
    }
    const listed = (await http('GET', '/v1/workflows', { key: keys.acme })).body.workflows;
    expect(listed.map((w: { id: string }) => w.id)).toContain(submitted.body.id);
  });

  it('fails the workflow when a step fails, naming the step', async () => {
    const submitted = await http('POST', '/v1/workflows', {
      body: { steps: { a: { service: 'simulation', payload: { fail: 'non_retryable' } }, b: { service: 'simulation', needs: ['a'] } } },
    });
    await streamOf(submitted.body.id, keys.operator);
    const workflow = (await http('GET', `/v1/workflows/${submitted.body.id}`)).body;
    expect(workflow).toMatchObject({ state: 'failed', failed_step: 'a' });
    expect(workflow.error).toMatch(/^step a failed: job .* failed: simulated non_retryable failure$/);
    expect(workflow.steps.map((s: { state: string }) => s.state)).toEqual(['failed', 'canceled']);
  });

  it('answers a repeat with the same Idempotency-Key with the first workflow (200, duplicate), and refuses the key for another', async () => {
    const body = { steps: { slow: { service: 'simulation', payload: { duration_ms: 60_000 } } } };
    const headers = { 'idempotency-key': 'nightly-2026-12-07' };
    const first = await http('POST', '/v1/workflows', { body, headers, key: keys.acme });
    expect(first.status).toBe(201);
    expect(first.body.duplicate).toBe(false);
    const again = await http('POST', '/v1/workflows', { body: { ...body, idempotency_key: 'nightly-2026-12-07' }, headers, key: keys.acme });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ id: first.body.id, duplicate: true, tenant: 'acme' });
    expect(again.headers.get('location')).toBe(`/v1/workflows/${first.body.id}`);

    const other = await http('POST', '/v1/workflows', { body: { ...body, priority: 3 }, headers, key: keys.acme });
    expect(other.status).toBe(422);
    expect(other.body.error).toMatchObject({ code: 'IDEMPOTENCY_CONFLICT' });
    const differing = await http('POST', '/v1/workflows', { body: { ...body, idempotency_key: 'another' }, headers, key: keys.acme });
    expect(differing.status).toBe(400);
    expect(differing.body.error.message).toBe("the Idempotency-Key header and the body's idempotency_key differ");
    // another tenant's key of the same name starts its own workflow
    const theirs = await http('POST', '/v1/workflows', { body, headers, key: keys.globex });
    expect(theirs.status).toBe(201);
    expect(theirs.body.id).not.toBe(first.body.id);
    for (const id of [first.body.id, theirs.body.id]) await http('POST', `/v1/workflows/${id}/cancel`);
  });

  it('cancels a workflow (idempotently) and its running step', async () => {
    const submitted = await http('POST', '/v1/workflows', { body: { steps: { slow: { service: 'simulation', payload: { duration_ms: 60_000 } } } } });
    const canceled = await http('POST', `/v1/workflows/${submitted.body.id}/cancel`, { body: { reason: 'changed my mind' } });
    expect(canceled.body).toEqual({ id: submitted.body.id, state: 'canceled', changed: true });
    expect((await http('POST', `/v1/workflows/${submitted.body.id}/cancel`)).body).toEqual({ id: submitted.body.id, state: 'canceled', changed: false });
    const workflow = (await http('GET', `/v1/workflows/${submitted.body.id}`)).body;
    expect(workflow.steps[0].state).toBe('canceled');
    expect((await http('GET', `/v1/jobs/${workflow.steps[0].jobs[0].id}`)).body.state).toBe('canceled');
  });

  it('refuses a bad workflow with the precise problem, and keeps tenants apart', async () => {
    const cycle = await http('POST', '/v1/workflows', { body: { steps: { a: { service: 'simulation', needs: ['b'] }, b: { service: 'simulation', needs: ['a'] } } } });
    expect(cycle.status).toBe(400);
    expect(cycle.body.error.message).toContain("the steps' needs form a cycle: a -> b -> a");
    const unknown = await http('POST', '/v1/workflows', { body: { steps: { a: { service: 'nosuch' } } } });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.message).toContain("step a: unknown service 'nosuch'");

    const badRef = await http('POST', '/v1/workflows', {
      body: { steps: { a: { service: 'simulation' }, b: { service: 'simulation', payload: { x: [{ $from: 'a.url' }] } } } },
    });
    expect(badRef.status).toBe(400);
    expect(badRef.body.error.issues).toEqual([
      { path: 'steps.b.payload.x.0', message: `{"$from":"a.url"} names 'a', which this step does not need (add it to needs)` },
    ]);

    const mine = await http('POST', '/v1/workflows', { body: { steps: { a: { service: 'simulation' } } }, key: keys.acme });
    const hidden = await http('GET', `/v1/workflows/${mine.body.id}`, { key: keys.globex });
    expect([hidden.status, hidden.body.error.message]).toEqual([404, `workflow ${mine.body.id} does not exist (or its retention has passed)`]);
    expect((await http('GET', `/v1/workflows/${mine.body.id}/stream`, { key: keys.globex })).status).toBe(404);
    expect((await http('POST', `/v1/workflows/${mine.body.id}/cancel`, { key: keys.globex })).status).toBe(404);
    const forOther = await http('POST', '/v1/workflows', { body: { tenant: 'globex', steps: { a: { service: 'simulation' } } }, key: keys.acme });
    expect(forOther.status).toBe(403);
    expect((await http('GET', '/v1/workflows', { key: keys.globex })).body.workflows.map((w: { id: string }) => w.id)).not.toContain(mine.body.id);
    // a tenant's listing holds its own workflows only; the operator's, every tenant's
    const acmes = (await http('GET', '/v1/workflows', { key: keys.acme })).body.workflows as Array<{ id: string; tenant: string }>;
    expect(acmes.map((w) => w.id)).toContain(mine.body.id);
    expect(new Set(acmes.map((w) => w.tenant))).toEqual(new Set(['acme']));
    expect((await http('GET', '/v1/workflows?tenant=globex', { key: keys.acme })).status).toBe(403);
    expect((await http('GET', '/v1/workflows?limit=100')).body.workflows.map((w: { id: string }) => w.id)).toContain(mine.body.id);
  });
});
