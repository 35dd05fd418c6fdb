import {
  CreatedWebhookEndpoint,
  NewWebhookEndpoint,
  NotFoundError,
  RotatedWebhookSecret,
  TenantId,
  ValidationError,
  WebhookDeliveryList,
  WebhookEndpoint,
  WebhookEndpointList,
  WebhookEndpointPatch,
  WebhookEndpoints,
  WebhookOutbox,
} from '@emp/core';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { actingTenant } from '../auth/plugin';
import type { Principal } from '../auth/roles';
import { ApiError } from '../errors';
import { Instant, answers } from '../schemas';

const DAY_SECONDS = 86_400;

const EndpointParams = z.object({ id: z.string().min(1).max(100) }).strict();
const ListQuery = z.object({ tenant: TenantId.optional(), api_key: z.string().optional() }).strict();
const DeliveriesQuery = z
  .object({ limit: z.coerce.number().int().min(1).max(1_000).default(100), api_key: z.string().optional() })
  .strict();
const RotateBody = z
  .object({
    /** how long messages stay signed with the old secret too (default a day, at most a week) */
    grace_seconds: z.number().int().min(0).max(7 * DAY_SECONDS).default(DAY_SECONDS),
  })
  .strict()
  .default({ grace_seconds: DAY_SECONDS });
/** ms since the epoch, or an ISO 8601 time */
/** ms since the epoch, as a number or as text, or an ISO 8601 time */
const Since = z.union([z.number().int().min(0), Instant]);
const RecoverBody = z.object({ since: Since }).strict();
const RecoverResponse = z
  .object({
    endpoint: z.string(),
    /** failed messages queued again */
    queued: z.number().int(),
    /** failed messages over the limit of one call, not queued: call again */
    left: z.number().int(),
  })
  .meta({ id: 'WebhookRecoverResult' });
const MessageParams = z.object({ id: z.string().min(1).max(100), message: z.string().min(1).max(200) }).strict();
const ResendResponse = z.object({ endpoint: z.string(), message_id: z.string() }).meta({ id: 'WebhookResentMessage' });
const TestResponse = z.object({ endpoint: z.string(), message_id: z.string() }).meta({ id: 'WebhookTestMessage' });

/** Whether `principal` may see `endpoint`: a tenant key its tenant's; without a tenant every tenant's, and an operator the operator-scoped ones too. */
function sees(principal: Principal, endpoint: WebhookEndpoint): boolean {
  if (principal.tenant !== undefined) return endpoint.tenant === principal.tenant;
  return endpoint.scope === 'tenant' || principal.role === 'operator';
}

/**
 * Per-tenant webhook endpoints (docs/webhooks.md, "Endpoints"): a client key
 * manages its tenant's; an operator sees and manages all of them and makes
 * operator-scoped ones (no tenant), the only ones that receive machine.* /
 * worker.* events. Another tenant's endpoint answers 404, as if it did not exist.
 */
export async function webhookEndpointRoutes(app: FastifyInstance, options: { webhookAllowPrivate: boolean }): Promise<void> {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const outbox = new WebhookOutbox(app.broker);
  const endpoints = new WebhookEndpoints(outbox);
  const allowPrivate = options.webhookAllowPrivate;

  /** The endpoint, if the caller may see it; else 404. */
  const visible = async (principal: Principal, id: string): Promise<WebhookEndpoint> => {
    const endpoint = await endpoints.get(id);
    if (!endpoint || !sees(principal, endpoint)) throw new NotFoundError(`webhook endpoint ${id} does not exist`);
    return endpoint;
  };
  /** What a change of endpoint `id` answered; 404 when the endpoint was deleted meanwhile. */
  const stillThere = <T>(id: string, changed: T | null | undefined): T => {
    if (!changed) throw new NotFoundError(`webhook endpoint ${id} does not exist`);
    return changed;
  };
  const tags = ['webhooks'];
  const params = EndpointParams;
  /** A route that changes one endpoint the caller may see, with a body, answering 200. */
  const endpointChange = <B extends z.ZodType, R extends z.ZodType>(summary: string, description: string, body: B, response: R) => ({
    config: { access: 'changeJobs' as const },
    schema: { summary, description, tags, params, body, response: answers({ 200: response }) },
  });

  api.post('/v1/webhooks', {
    config: { access: 'changeJobs' },
    schema: {
      summary: 'Register a webhook endpoint; the answer holds its signing secret, shown only this once',
      description:
        "A client key registers one for its own tenant. An operator key names `tenant`, or leaves it out for an operator-scoped endpoint, the only kind that may ask for `worker.*`, `machine.*` and `webhook.*` events (it also receives every tenant's job events its filters let through).",
      tags,
      body: NewWebhookEndpoint,
      response: answers({ 201: CreatedWebhookEndpoint }),
    },
  }, async (request, reply) => {
    const { principal } = request;
    let tenant = actingTenant(principal, request.body.tenant);
    if (tenant === undefined) {
      if (principal.role !== 'operator') throw new ValidationError('body', [{ path: 'tenant', message: 'name the tenant whose jobs the endpoint receives' }]);
      tenant = '';
    }
    return reply.code(201).send(await endpoints.create(tenant, request.body, { allowPrivate }));
  });

  api.get('/v1/webhooks', {
    config: { access: 'readJobs' },
    schema: {
      summary: 'The webhook endpoints the key may see (a client: its tenant\'s; an operator: all, or `?tenant=`)',
      tags,
      querystring: ListQuery,
      response: answers({ 200: WebhookEndpointList }),
    },
  }, async (request) => {
    const { principal } = request;
    const tenant = actingTenant(principal, request.query.tenant);
    const list = await endpoints.list(tenant);
    return { endpoints: list.filter((endpoint) => sees(principal, endpoint)) };
  });

  api.get('/v1/webhooks/:id', {
    config: { access: 'readJobs' },
    schema: { summary: 'One webhook endpoint (without its secret)', tags, params, response: answers({ 200: WebhookEndpoint }) },
  }, async (request) => visible(request.principal, request.params.id));

  api.patch('/v1/webhooks/:id', endpointChange(
    'Change a webhook endpoint: the fields given; null removes an optional one',
    'Messages not yet delivered go to the new URL, with the new headers and limits.',
    WebhookEndpointPatch,
    WebhookEndpoint,
  ), async (request) => {
    const { id } = await visible(request.principal, request.params.id);
    return stillThere(id, await endpoints.update(id, request.body, { allowPrivate }));
  });

  api.delete('/v1/webhooks/:id', {
    config: { access: 'changeJobs' },
    schema: {
      summary: 'Delete a webhook endpoint; its messages not yet delivered are dropped',
      tags,
      params,
      response: answers({ 204: z.null().describe('deleted') }),
    },
  }, async (request, reply) => {
    const { id } = await visible(request.principal, request.params.id);
    await endpoints.delete(id);
    return reply.code(204).send(null);
  });

  for (const action of ['enable', 'disable'] as const) {
    api.post(`/v1/webhooks/:id/${action}`, {
      config: { access: 'changeJobs' },
      schema: {
        summary: action === 'enable' ? 'Enable a webhook endpoint (also one disabled by a 410 or by failing for days)' : 'Disable a webhook endpoint: its messages are dropped until it is enabled',
        tags,
        params,
        response: answers({ 200: WebhookEndpoint }),
      },
    }, async (request) => {
      const { id } = await visible(request.principal, request.params.id);
      return stillThere(id, action === 'enable' ? await endpoints.enable(id) : await endpoints.disable(id));
    });
  }

  api.post('/v1/webhooks/:id/test', {
    config: { access: 'changeJobs' },
    schema: {
      summary: 'Send a `webhook.test` event to the endpoint (whatever its filter), signed like every other',
      description: 'Queued at once; its attempts show in GET /v1/webhooks/:id/deliveries.',
      tags,
      params,
      response: answers({ 202: TestResponse }),
    },
  }, async (request, reply) => {
    const endpoint = await visible(request.principal, request.params.id);
    if (!endpoint.enabled) throw new ApiError(409, 'BAD_STATE', `webhook endpoint ${endpoint.id} is disabled (${endpoint.disabled_reason ?? 'by hand'}); enable it first`);
    return reply.code(202).send({ endpoint: endpoint.id, message_id: await endpoints.sendTest(endpoint) });
  });

  api.post('/v1/webhooks/:id/rotate-secret', endpointChange(
    'Give the endpoint a new secret, shown only in this answer; the old one keeps signing too for a grace period',
    'During the grace period every message carries two signatures (new and old, space-separated), so a receiver can switch without missing one.',
    RotateBody,
    RotatedWebhookSecret,
  ), async (request) => {
    const { id } = await visible(request.principal, request.params.id);
    return stillThere(id, await endpoints.rotateSecret(id, request.body.grace_seconds * 1000));
  });

  api.get('/v1/webhooks/:id/deliveries', {
    config: { access: 'readJobs' },
    schema: {
      summary: "The endpoint's delivery attempts, newest first: time, event, status, latency, outcome, error, the first 1 KiB of the answer",
      tags,
      params,
      querystring: DeliveriesQuery,
      response: answers({ 200: WebhookDeliveryList }),
    },
  }, async (request) => {
    const { id } = await visible(request.principal, request.params.id);
    return { endpoint: id, deliveries: await endpoints.deliveries(id, request.query.limit) };
  });

  api.post('/v1/webhooks/:id/messages/:message/resend', {
    config: { access: 'changeJobs' },
    schema: {
      summary: 'Send one message of the endpoint again (delivered, failed or dropped): same webhook-id and body, attempts from 1',
      description: 'Its id is the `message` of a delivery attempt (GET /v1/webhooks/:id/deliveries). 409 while it is still waiting or in flight, or while the endpoint is disabled.',
      tags,
      params: MessageParams,
      response: answers({ 202: ResendResponse }),
    },
  }, async (request, reply) => {
    const endpoint = await visible(request.principal, request.params.id);
    const { message } = request.params;
    const stored = await outbox.message(message);
    if (!stored || stored.endpoint !== endpoint.id) throw new NotFoundError(`message ${message} of webhook endpoint ${endpoint.id} does not exist (or its retention has passed)`);
    const outcome = await outbox.resend(message);
    if (outcome === 'queued') return reply.code(202).send({ endpoint: endpoint.id, message_id: message });
    if (outcome === 'unknown') throw new NotFoundError(`message ${message} of webhook endpoint ${endpoint.id} does not exist (or its retention has passed)`);
    throw new ApiError(409, 'BAD_STATE', outcome === 'pending' ? `message ${message} is still waiting or in flight` : `webhook endpoint ${endpoint.id} is disabled; enable it first`);
  });

  api.post('/v1/webhooks/:id/recover', {
    config: { access: 'changeJobs' },
    schema: {
      summary: 'Send again every failed message of the endpoint made since a time (same webhook-id and body, attempts from 1)',
      tags,
      params,
      body: RecoverBody,
      response: answers({ 200: RecoverResponse }),
    },
  }, async (request) => {
    const endpoint = await visible(request.principal, request.params.id);
    if (!endpoint.enabled) throw new ApiError(409, 'BAD_STATE', `webhook endpoint ${endpoint.id} is disabled (${endpoint.disabled_reason ?? 'by hand'}); enable it first`);
    if (request.body.since > Date.now()) throw new ValidationError('body', [{ path: 'since', message: 'it is in the future' }]);
    return { endpoint: endpoint.id, ...(await endpoints.recover(endpoint.id, request.body.since)) };
  });
}
