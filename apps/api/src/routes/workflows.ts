import { ApiErrorBody, type StreamEvent, StreamId, SubmittedWorkflow, Workflow, WorkflowState, compareStreamIds, eventView, isEventOfWorkflow, poolOfJobId } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { actingTenant } from '../auth/plugin';
import type { Principal } from '../auth/roles';
import { ApiError } from '../errors';
import { closeOnRevocation, EVENT_STREAM_RESPONSE, openEventStream } from '../live/sse';
import { CancelBody, IdempotencyHeaders, JobParams, WorkflowBody, WorkflowListQuery, answers, idempotencyKey } from '../schemas';

const WorkflowParams = JobParams;
const WorkflowCancelResponse = z.object({ id: z.string(), state: WorkflowState, changed: z.boolean() }).strict();
const WorkflowStreamQuery = z.object({ after: StreamId.optional(), api_key: z.string().optional() }).strict();
const WORKFLOW_END = new Set(['workflow.succeeded', 'workflow.failed', 'workflow.canceled']);

/** Submit, get, list and cancel workflows (docs/workflows.md), and the live stream of one. */
export async function workflowRoutes(app: FastifyInstance): Promise<void> {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { broker, hub } = app;

  async function visibleWorkflow(principal: Principal, id: string): Promise<Workflow> {
    const workflow = await broker.getWorkflow(id);
    // another tenant's workflow is answered as one that does not exist
    if (!workflow || (principal.tenant !== undefined && principal.tenant !== workflow.tenant)) {
      throw new ApiError(404, 'NOT_FOUND', `workflow ${id} does not exist (or its retention has passed)`);
    }
    return workflow;
  }

  api.post('/v1/workflows', {
    config: { access: 'submit' },
    schema: {
      summary: 'Submit a workflow: named steps (each a job) with needs, references to earlier results and fan-out',
      description:
        'Answers 201 with the workflow; the steps that need nothing are queued at once. See docs/workflows.md for the reference syntax ({"$from": "generate.images[0]"}, for_each, {"$item": "url"}). ' +
        'With an Idempotency-Key header (or the body\'s idempotency_key), a repeat of the same workflow answers 200 with the first one (duplicate: true); the same key with another workflow is 422 IDEMPOTENCY_CONFLICT.',
      tags: ['workflows'],
      headers: IdempotencyHeaders,
      body: WorkflowBody,
      response: answers({ 200: SubmittedWorkflow, 201: SubmittedWorkflow }),
    },
  }, async (request, reply) => {
    const tenant = actingTenant(request.principal, request.body.tenant);
    const key = idempotencyKey(request.headers['idempotency-key'], request.body.idempotency_key);
    const submitted = await broker.submitWorkflow({ ...request.body, ...(tenant ? { tenant } : {}), ...(key ? { idempotency_key: key } : {}) });
    const workflow = await broker.getWorkflow(submitted.id);
    if (!workflow) throw new ApiError(404, 'NOT_FOUND', `workflow ${submitted.id} no longer exists`);
    return reply
      .code(submitted.duplicate ? 200 : 201)
      .header('location', `/v1/workflows/${submitted.id}`)
      .send({ ...workflow, duplicate: submitted.duplicate });
  });

  api.get('/v1/workflows/:id', {
    config: { access: 'readJobs' },
    schema: {
      summary: 'Get a workflow: its state and every step\'s state, jobs, timings and output',
      tags: ['workflows'],
      params: WorkflowParams,
      response: answers({ 200: Workflow }),
    },
  }, async (request) => visibleWorkflow(request.principal, request.params.id));

  api.get('/v1/workflows', {
    config: { access: 'readJobs' },
    schema: {
      summary: 'List workflows, newest first',
      tags: ['workflows'],
      querystring: WorkflowListQuery,
      response: answers({ 200: z.object({ workflows: z.array(Workflow) }).strict() }),
    },
  }, async (request) => {
    const tenant = actingTenant(request.principal, request.query.tenant);
    const items = await broker.listWorkflows({ tenant, limit: request.query.limit });
    const workflows = await Promise.all(items.map((item) => broker.getWorkflow(item.id)));
    return { workflows: workflows.filter((w): w is Workflow => w !== null) };
  });

  api.post('/v1/workflows/:id/cancel', {
    config: { access: 'changeJobs' },
    schema: {
      summary: 'Cancel a workflow and its steps still queued or running (idempotent: an ended workflow answers 200 with its state)',
      tags: ['workflows'],
      params: WorkflowParams,
      body: CancelBody,
      response: answers({ 200: WorkflowCancelResponse }),
    },
  }, async (request) => {
    await visibleWorkflow(request.principal, request.params.id);
    const outcome = await broker.cancelWorkflow(request.params.id, request.body.reason ?? '');
    return { id: request.params.id, ...outcome };
  });

  api.get('/v1/workflows/:id/stream', {
    config: { access: 'readJobs' },
    schema: {
      summary: "Server-Sent Events of one workflow: its workflow.* events and its steps' job events; resumes after Last-Event-ID",
      description: 'Ends after the workflow\'s end (workflow.succeeded, workflow.failed or workflow.canceled).',
      tags: ['workflows'],
      params: WorkflowParams,
      querystring: WorkflowStreamQuery,
      headers: z.object({ 'last-event-id': StreamId.optional() }).loose(),
      response: EVENT_STREAM_RESPONSE,
    },
  }, async (request, reply) => {
    const id = request.params.id;
    const workflow = await visibleWorkflow(request.principal, id);
    let last = request.headers['last-event-id'] ?? request.query.after ?? `${Math.max(0, workflow.submitted_at - 1)}-0`;
    let unsubscribe: (() => void) | undefined;
    let stopWatchingKey = () => {};
    const stream = openEventStream(reply, () => {
      stopWatchingKey();
      unsubscribe?.();
    });
    stopWatchingKey = closeOnRevocation(app, request.principal.keyId, stream.close);
    const send = (event: StreamEvent) => {
      if (stream.closed() || compareStreamIds(event.id, last) <= 0 || !isEventOfWorkflow(id, event)) return;
      last = event.id;
      const view = eventView(event);
      stream.raw.write(`id: ${event.id}\nevent: ${view.type}\ndata: ${JSON.stringify(view)}\n\n`);
      if (WORKFLOW_END.has(event.type)) stream.close();
    };
    const pool = poolOfJobId(id);
    const missed = await hub.missedAfter(pool, last);
    if (missed) stream.raw.write(`event: ${missed.type}\ndata: ${JSON.stringify({ ...missed, workflow: id })}\n\n`);
    unsubscribe = await hub.follow(pool, last, send);
  });
}
