import { EmpError, type Job, JobErrorInfo, JobId, type SubmitJobInput as SubmitInput, SubmitJobInput, TERMINAL_STATES, TenantId, poolOfJobId } from '@emp/core';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { type Principal, mayAccess, notFound, requireRole } from '../auth';
import { ApiError, toHttpError } from '../errors';
import { TERMINAL_EVENTS } from '../event-feed';
import { type JobFeedItem, followJob } from '../job-follow';
import type { ApiContext } from '../server';

const JobParams = z.object({ id: JobId });
/** The job schema with no default tenant: a client key's tenant fills it in, and an explicit other tenant is refused. */
const SubmitBody = SubmitJobInput.extend({ tenant: TenantId.optional() });
const WaitQuery = z.object({
  /** hold the request up to this many seconds for the job to finish (like a synchronous run) */
  wait: z.coerce.number().min(0).max(90).optional(),
});
const IdempotencyHeaders = z.object({ 'idempotency-key': z.string().min(1).max(255).optional() }).passthrough();
const BatchBody = z.object({ jobs: z.array(z.unknown()).min(1).max(1_000) }).strict();
const CancelBody = z.object({ reason: z.string().max(500).optional() }).strict().default({});
const CompleteBody = z.object({ token: z.string().regex(/^\d+$/), result: z.unknown() }).strict();
const FailBody = z.object({ token: z.string().regex(/^\d+$/), error: JobErrorInfo }).strict();
const EventsQuery = z.object({ after: z.string().regex(/^\d+-\d+$/).optional() });

const SUBMITTERS = ['client', 'service', 'operator'] as const;

/** Submit, batch, get, cancel, retry, delegated completion and a job's event stream (SSE). */
export function jobRoutes(app: FastifyInstance, context: ApiContext): void {
  const { broker, feed, metrics } = context;
  const api = app.withTypeProvider<ZodTypeProvider>();

  /** The job, if this caller may see it; another tenant's job is "not found". */
  async function visibleJob(principal: Principal, id: string): Promise<Job> {
    const job = await broker.getJob(id);
    if (!job || !mayAccess(principal, job)) throw notFound(id);
    return job;
  }

  /** A client's jobs are its tenant's: a job naming another tenant is refused. */
  function ownedBy(principal: Principal, input: SubmitInput): SubmitInput {
    if (principal.role !== 'client') return input;
    if (input.tenant !== undefined && input.tenant !== principal.tenant) {
      throw new ApiError(403, 'FORBIDDEN', `this key acts for tenant '${principal.tenant}', not '${input.tenant}'`);
    }
    return { ...input, tenant: principal.tenant };
  }

  api.post(
    '/v1/jobs',
    { schema: { body: SubmitBody, querystring: WaitQuery, headers: IdempotencyHeaders } },
    async (request, reply) => {
      requireRole(request.principal, SUBMITTERS, 'submit jobs');
      const headerKey = request.headers['idempotency-key'];
      const body = request.body as SubmitInput;
      if (headerKey !== undefined && body.idempotency_key !== undefined && headerKey !== body.idempotency_key) {
        throw new ApiError(400, 'VALIDATION', 'the Idempotency-Key header and the body\'s idempotency_key differ');
      }
      const input = ownedBy(request.principal, { ...body, ...(headerKey ? { idempotency_key: headerKey } : {}) });
      const submitted = await broker.submit(input);
      metrics.jobsSubmitted.inc({ service: input.service });
      if (request.query.wait) return sendWhenFinished(reply, submitted.id, request.query.wait * 1000);
      return reply.status(submitted.duplicate ? 200 : 201).send({ ...submitted, state: 'queued' });
    },
  );

  api.post('/v1/jobs/batch', { schema: { body: BatchBody } }, async (request) => {
    requireRole(request.principal, SUBMITTERS, 'submit jobs');
    // each job is checked on its own, so one bad job is that job's error, not the batch's
    const inputs: Array<SubmitInput | ApiError> = request.body.jobs.map((job) => {
      // a job that is not even an object is left for the broker's validation to name
      if (typeof job !== 'object' || job === null) return job as SubmitInput;
      try {
        return ownedBy(request.principal, job as SubmitInput);
      } catch (error) {
        return error as ApiError;
      }
    });
    const valid = inputs.filter((input): input is SubmitInput => !(input instanceof ApiError));
    const results = await broker.submitMany(valid);
    let next = 0;
    return {
      results: inputs.map((input) => {
        const result = input instanceof ApiError ? input : results[next++]!;
        if (result instanceof Error) {
          const { status, body } = toHttpError(result);
          return { status, ...body };
        }
        metrics.jobsSubmitted.inc({ service: (input as SubmitInput).service });
        return { status: result.duplicate ? 200 : 201, ...result, state: 'queued' };
      }),
    };
  });

  api.get('/v1/jobs/:id', { schema: { params: JobParams } }, async (request) => visibleJob(request.principal, request.params.id));

  api.post('/v1/jobs/:id/cancel', { schema: { params: JobParams, body: CancelBody } }, async (request) => {
    requireRole(request.principal, SUBMITTERS, 'cancel jobs');
    await visibleJob(request.principal, request.params.id);
    const { state, changed } = await broker.cancel(request.params.id, request.body?.reason ?? '');
    return { id: request.params.id, state, changed };
  });

  api.post('/v1/jobs/:id/retry', { schema: { params: JobParams } }, async (request) => {
    requireRole(request.principal, SUBMITTERS, 'retry jobs');
    await visibleJob(request.principal, request.params.id);
    return { id: request.params.id, state: await broker.retry(request.params.id) };
  });

  // Delegated completion: work done outside the fleet is recorded through the same fenced transition.
  const leaseOf = async (id: string, token: string) => {
    const job = await broker.getJob(id);
    if (!job) throw notFound(id);
    return { pool: poolOfJobId(id), jobId: id, token, workerId: job.worker ?? 'delegated' };
  };
  api.post('/v1/jobs/:id/complete', { schema: { params: JobParams, body: CompleteBody } }, async (request) => {
    requireRole(request.principal, ['service', 'worker', 'operator'], 'complete jobs');
    await broker.complete(await leaseOf(request.params.id, request.body.token), request.body.result);
    return { id: request.params.id, state: 'succeeded' };
  });
  api.post('/v1/jobs/:id/fail', { schema: { params: JobParams, body: FailBody } }, async (request) => {
    requireRole(request.principal, ['service', 'worker', 'operator'], 'fail jobs');
    const { outcome } = await broker.fail(await leaseOf(request.params.id, request.body.token), request.body.error);
    return { id: request.params.id, state: outcome };
  });

  api.get('/v1/jobs/:id/events', { schema: { params: JobParams, querystring: EventsQuery } }, async (request, reply) => {
    const { id } = request.params;
    await visibleJob(request.principal, id);
    const lastEventId = request.headers['last-event-id'];
    const after = typeof lastEventId === 'string' && /^\d+-\d+$/.test(lastEventId) ? lastEventId : request.query.after;
    reply.hijack();
    const out = reply.raw;
    out.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    let unsubscribe: (() => void) | null = null;
    const end = () => {
      unsubscribe?.();
      out.end();
    };
    request.raw.on('close', () => unsubscribe?.());
    const send = (item: JobFeedItem): void => {
      if (item.kind === 'snapshot') {
        out.write(`event: snapshot\ndata: ${JSON.stringify(item.job)}\n\n`);
        if (TERMINAL_STATES.includes(item.job.state)) setImmediate(end);
        return;
      }
      const { event } = item;
      out.write(`id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(eventBody(event))}\n\n`);
      if (TERMINAL_EVENTS.has(event.type)) setImmediate(end);
    };
    try {
      unsubscribe = await followJob({ feed, broker, jobId: id, after, send });
      if (!unsubscribe) end();
    } catch (error) {
      request.log.warn({ err: error, job_id: id }, 'event stream failed');
      end();
    }
  });

  /** Answers once the job has finished or `waitMs` has passed: 200 with the finished job, else 202 with it as it is. */
  async function sendWhenFinished(reply: FastifyReply, id: string, waitMs: number) {
    let settle: () => void = () => undefined;
    const finished = new Promise<void>((resolve) => (settle = resolve));
    const unsubscribe = feed.subscribe(poolOfJobId(id), (event) => {
      if (event.fields.job === id && TERMINAL_EVENTS.has(event.type)) settle();
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      const now = await broker.getJob(id);
      if (now && !TERMINAL_STATES.includes(now.state)) {
        await Promise.race([finished, new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)))]);
      }
    } finally {
      clearTimeout(timer);
      unsubscribe();
    }
    const job = await broker.getJob(id);
    if (!job) throw new EmpError('NOT_FOUND', `job ${id} does not exist`);
    return reply.status(TERMINAL_STATES.includes(job.state) ? 200 : 202).send(job);
  }
}

/** An event as clients see it: what the stream holds, with the time and type at the top. */
export function eventBody(event: { id: string; type: string; ts: number; fields: Record<string, string> }) {
  const { progress, ...fields } = event.fields;
  return { id: event.id, type: event.type, ts: event.ts, ...fields, ...(progress ? { progress: JSON.parse(progress) as unknown } : {}) };
}
