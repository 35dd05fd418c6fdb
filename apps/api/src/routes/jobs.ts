import {
  BatchSubmitResponse,
  CancelResponse,
  CompleteResponse,
  FailResponse,
  type Job,
  JobEventsPage,
  JobPage,
  JobView,
  RetryResponse,
  DEFAULT_TENANT,
  type SubmitJob,
  type SubmitResult,
  type SubmitJobInput,
  SubmittedJob,
  ValidationError,
  eventView,
  poolOfJobId,
  webhookTargetProblem,
} from '@emp/core';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { actingTenant, assertSees } from '../auth/plugin';
import type { Principal } from '../auth/roles';
import { ApiError, errorBody } from '../errors';
import { jobAnswer } from '../job-view';
import { requestedWait, waitForJob } from '../live/job-waiter';
import {
  BatchBody,
  BatchQuery,
  CancelBody,
  CompleteBody,
  EventsQuery,
  FailBody,
  JobParams,
  ListQuery,
  MAX_WAIT_SECONDS,
  SubmitBody,
  answers,
  SubmitHeaders,
  SubmitJobQuery,
  SubmitQuery,
  idempotencyKey,
} from '../schemas';
import type { z } from 'zod';
import { requestTraceparent } from '../tracing';

export interface JobRoutesOptions {
  /** a webhook.url may name a loopback, private or link-local host (local development) */
  webhookAllowPrivate: boolean;
}

/** Submit, batch submit, get, list, cancel, retry, event history, and delegated completion of jobs. */
export async function jobRoutes(app: FastifyInstance, options: JobRoutesOptions): Promise<void> {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { broker, hub, queueEta } = app;

  /** A job the caller may see, or NOT_FOUND. */
  async function visibleJob(principal: Principal, id: string): Promise<Job> {
    const job = await broker.getJob(id);
    if (!job) throw new ApiError(404, 'NOT_FOUND', `job ${id} does not exist (or its retention has passed)`);
    assertSees(principal, job);
    return job;
  }

  /**
   * The job a request submits: its body (validated by the route's schema, which
   * extends the core's) for the acting tenant. `at` is where the job sits in the
   * body (`jobs.3.` in a batch), for the path of an issue.
   */
  function submission(principal: Principal, body: z.output<typeof SubmitBody>, headerKey?: string, at = ''): SubmitJob {
    if (body.webhook) {
      // the schema took the scheme; whether the host may be private is this server's setting
      const problem = webhookTargetProblem(body.webhook.url, { allowPrivate: options.webhookAllowPrivate });
      if (problem) throw new ValidationError('body', [{ path: `${at}webhook.url`, message: problem }]);
    }
    const tenant = actingTenant(principal, body.tenant) ?? DEFAULT_TENANT;
    // Object.assign, not a spread: spreading zod's output and adding keys cost several us a submit
    return Object.assign({}, body, { tenant, idempotency_key: idempotencyKey(headerKey, body.idempotency_key) });
  }

  api.post('/v1/jobs', {
    config: { access: 'submit' },
    schema: {
      summary: 'Submit a job',
      description: 'Answers 201 with the new job, or 200 with the original one when the Idempotency-Key was used with the same body (422 when with a different one). With ?wait=N or `Prefer: wait=N` (at most 90 s) the answer waits for the job to finish. With ?durable=1 the answer waits until a Redis replica has the job, so that a failover cannot lose it; 503 NOT_REPLICATED when none acknowledged in time (the job is queued on the master and may or may not survive a failover: read it, or repeat the submit with the same Idempotency-Key). Without ?durable, the server\'s EMP_DURABLE_SUBMIT decides.',
      tags: ['jobs'],
      body: SubmitBody,
      querystring: SubmitJobQuery,
      headers: SubmitHeaders,
      response: answers({ 200: SubmittedJob, 201: SubmittedJob }),
    },
  }, async (request, reply) => {
    const input = submission(request.principal, request.body, request.headers['idempotency-key']);
    const waitMs = requestedWait(request.query.wait, request.headers.prefer, MAX_WAIT_SECONDS) * 1_000;
    const options = { traceparent: requestTraceparent(request.traceSpan), durable: request.query.durable };
    // the body was parsed by the route's schema: the broker does not parse it again
    let submitted: SubmitResult;
    let job: Job | null;
    if (waitMs > 0) {
      // before the submit: the hub can then tell whether the new job has ended since, so that the job is
      // read once, when it is answered (an idempotent repeat's original job is read first: it may have
      // ended long before)
      const mark = hub.mark();
      submitted = await broker.submitParsed(input, options);
      job = await waitForJob(hub, broker, submitted.id, waitMs, reply.raw, submitted.duplicate ? undefined : { mark });
    } else {
      // read back in the same round trip
      ({ submitted, job } = await broker.submitAndRead(input, options));
    }
    if (!job) throw new ApiError(404, 'NOT_FOUND', `job ${submitted.id} no longer exists`);
    return reply
      .code(submitted.duplicate ? 200 : 201)
      .header('location', `/v1/jobs/${submitted.id}`)
      .send(Object.assign(await jobAnswer(queueEta, job), { duplicate: submitted.duplicate }));
  });

  api.post('/v1/jobs/batch', {
    config: { access: 'submit' },
    schema: {
      summary: 'Submit up to 100 jobs',
      description: 'One result per job, in order: the submitted job (id, pool, duplicate, routable) or the error for that job. ?durable=1 as for a single submit: a job no replica acknowledged in time is that job\'s NOT_REPLICATED error.',
      tags: ['jobs'],
      body: BatchBody,
      querystring: BatchQuery,
      response: answers({ 200: BatchSubmitResponse }),
    },
  }, async (request) => {
    const inputs: SubmitJobInput[] = request.body.jobs.map((job, index) => submission(request.principal, job, undefined, `jobs.${index}.`));
    // every job of the batch continues the request's trace (a caller's traceparent, else the request span's own)
    const results = await broker.submitMany(inputs, { traceparent: requestTraceparent(request.traceSpan), durable: request.query.durable });
    return {
      results: results.map((result) =>
        'id' in result ? result : errorBody(result.code, result.message, result instanceof ValidationError ? result.issues : undefined),
      ),
    };
  });

  api.get('/v1/jobs/:id', {
    config: { access: 'readJobs' },
    schema: {
      summary: 'Get a job: state, position while queued, attempts, progress, timings, worker, result or error',
      description: 'With ?wait=N (at most 90 s) the answer waits for the job to finish (a long poll).',
      tags: ['jobs'],
      params: JobParams,
      querystring: SubmitQuery,
      response: answers({ 200: JobView }),
    },
  }, async (request, reply) => {
    const waitMs = (request.query.wait ?? 0) * 1_000;
    // before the read: the hub can then tell whether the job has ended since, without reading it again
    const mark = waitMs > 0 ? hub.mark() : undefined;
    const job = await visibleJob(request.principal, request.params.id);
    if (!mark) return jobAnswer(queueEta, job);
    const finished = await waitForJob(hub, broker, job.id, waitMs, reply.raw, { job, mark });
    if (!finished) throw new ApiError(404, 'NOT_FOUND', `job ${job.id} no longer exists`);
    return jobAnswer(queueEta, finished);
  });

  api.get('/v1/jobs', {
    config: { access: 'readJobs' },
    schema: {
      summary: 'List jobs, newest first',
      description: 'Filters: state and service (comma-separated), tenant, pool, since/until (submission time, ms or ISO 8601). Pages are cut by `cursor` (from next_cursor); a sparse filter may give a short page that still has a next_cursor. Payloads are left out.',
      tags: ['jobs'],
      querystring: ListQuery,
      response: answers({ 200: JobPage }),
    },
  }, async (request) => {
    const q = request.query;
    const tenant = actingTenant(request.principal, q.tenant);
    const page = await broker.listJobs({
      pool: q.pool,
      tenant,
      states: q.state,
      services: q.service,
      since: q.since,
      until: q.until,
      cursor: q.cursor || undefined, // `?cursor=` is the first page
      limit: q.limit,
    });
    const jobs = await Promise.all(page.jobs.map((item) => broker.getJob(item.id)));
    return {
      jobs: await Promise.all(jobs.filter((job): job is Job => job !== null).map((job) => jobAnswer(queueEta, job, { payload: false }))),
      next_cursor: page.next_cursor,
    };
  });

  api.post('/v1/jobs/:id/cancel', {
    config: { access: 'changeJobs' },
    schema: {
      summary: 'Cancel a job (idempotent: a finished job answers 200 with its state)',
      tags: ['jobs'],
      params: JobParams,
      body: CancelBody,
      response: answers({ 200: CancelResponse }),
    },
  }, async (request) => {
    await visibleJob(request.principal, request.params.id);
    const outcome = await broker.cancel(request.params.id, request.body.reason ?? '');
    return { id: request.params.id, ...outcome };
  });

  api.post('/v1/jobs/:id/retry', {
    config: { access: 'changeJobs' },
    schema: {
      summary: 'Put a failed, canceled or expired job back in the queue under the same id',
      tags: ['jobs'],
      params: JobParams,
      response: answers({ 200: RetryResponse }),
    },
  }, async (request) => {
    await visibleJob(request.principal, request.params.id);
    const state = await broker.retry(request.params.id);
    return { id: request.params.id, state };
  });

  api.get('/v1/jobs/:id/events', {
    config: { access: 'readJobs' },
    schema: {
      summary: "A job's event history",
      description: 'Oldest first, from the pool\'s event stream. Each event id is a cursor: pass it as ?after to continue.',
      tags: ['jobs'],
      params: JobParams,
      querystring: EventsQuery,
      response: answers({ 200: JobEventsPage }),
    },
  }, async (request) => {
    await visibleJob(request.principal, request.params.id);
    const { events, cursor } = await broker.jobEvents(request.params.id, {
      after: request.query.after,
      limit: request.query.limit,
    });
    return { events: events.map(eventView), cursor };
  });

  /** The attempt a delegated call acts for. */
  async function delegatedLease(principal: Principal, id: string, token: string | undefined) {
    const job = await visibleJob(principal, id);
    if (token !== undefined) return { pool: poolOfJobId(id), jobId: id, token, workerId: job.worker ?? 'delegated' };
    const lease = await broker.currentAttempt(id);
    if (!lease) throw new ApiError(409, 'LEASE_LOST', `job ${id} is ${job.state}: no attempt holds it`);
    return lease;
  }

  /** A delegated transition's route (role service): the job by id, a body with the attempt's optional token. */
  const delegatedRoute = <B extends z.ZodType, R extends z.ZodType>(summary: string, description: string, body: B, response: R) => ({
    config: { access: 'delegatedCompletion' as const },
    schema: { summary, description, tags: ['jobs'], params: JobParams, body, response: answers({ 200: response }) },
  });

  api.post('/v1/jobs/:id/complete', delegatedRoute(
    'Complete a job on behalf of an external system (role service)',
    'The same fenced transition a worker makes: with `token`, only that attempt may complete; without, the current one. A stale token answers 409 LEASE_LOST.',
    CompleteBody,
    CompleteResponse,
  ), async (request) => {
    const lease = await delegatedLease(request.principal, request.params.id, request.body.token);
    await broker.complete(lease, request.body.result);
    return { id: request.params.id, state: 'succeeded' as const };
  });

  api.post('/v1/jobs/:id/fail', delegatedRoute(
    'Fail a job attempt on behalf of an external system (role service)',
    'Classified like a worker\'s failure: the job retries, backs off or fails. `outcome` says which.',
    FailBody,
    FailResponse,
  ), async (request) => {
    const lease = await delegatedLease(request.principal, request.params.id, request.body.token);
    const { outcome } = await broker.fail(lease, request.body.error);
    return { id: request.params.id, outcome };
  });
}
