import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { contextOf } from './broker/broker';
import type { BrokerContext } from './broker/context';
import { FUNCTIONS } from './broker/functions';
import { ValidationError } from './errors';
import { WEBHOOK_EVENT_ALIASES, WEBHOOK_EVENT_TYPES, type WebhookEventType } from './job';
import { ServiceName, TenantId } from './requirements';
import { DeliveryLogEntry, type WebhookOutbox } from './webhook-outbox';
import { newWebhookSecret } from './webhook-signing';
import { webhookTargetProblem } from './webhook-target';

/**
 * Webhook endpoints (docs/webhooks.md, "Endpoints"): URLs a tenant registers
 * through the API to receive its jobs' events, each with its own signing
 * secret, event filter, optional service / workflow filters, custom headers and
 * rate limit. An endpoint without a tenant is operator-scoped: only an
 * operator key makes or sees one, and only such an endpoint may receive the
 * fleet's `machine.*` / `worker.*` events and the outbox's own
 * `webhook.endpoint.disabled`; it receives the job events of every tenant its
 * filters let through. Records live in Redis (`{_webhooks}` ep:<id>, see
 * keys.ts); every change is one call of webhook_endpoint.lua.
 */

/** Fleet events only operator-scoped endpoints receive (besides `machine.<state>`, any state word of the agent). */
export const OPERATOR_EVENT_TYPES = [
  'worker.registered',
  'worker.idle',
  'worker.busy',
  'worker.draining',
  'worker.offline',
  'worker.gone',
  'machine.command',
  'machine.command.done',
  'machine.process',
  'webhook.endpoint.disabled',
  'webhook.events.lost',
] as const;

/** Sent by `POST /v1/webhooks/:id/test`, whatever the endpoint's filter. */
export const WEBHOOK_TEST_EVENT = 'webhook.test';

/** A workflow's events (docs/workflows.md): a tenant's endpoints receive its own workflows'. */
export const WORKFLOW_EVENT_TYPES = ['workflow.submitted', 'workflow.step_succeeded', 'workflow.step_failed', 'workflow.succeeded', 'workflow.failed', 'workflow.canceled'] as const;

const WILDCARDS = ['job.*', 'workflow.*', 'worker.*', 'machine.*', 'webhook.*'] as const;
const MACHINE_STATE = /^machine\.[a-z_]+$/;

/** Whether `type` is one only operator-scoped endpoints receive. */
export function isOperatorEventType(type: string): boolean {
  return type.startsWith('machine.') || type.startsWith('worker.') || (type.startsWith('webhook.') && type !== WEBHOOK_TEST_EVENT);
}

/** Why `name` is not a valid entry of an endpoint's `events`, or undefined. */
function eventNameProblem(name: string): string | undefined {
  if ((WEBHOOK_EVENT_TYPES as readonly string[]).includes(name) || (WILDCARDS as readonly string[]).includes(name)) return undefined;
  if ((WORKFLOW_EVENT_TYPES as readonly string[]).includes(name)) return undefined;
  if ((OPERATOR_EVENT_TYPES as readonly string[]).includes(name) || MACHINE_STATE.test(name)) return undefined;
  if (Object.hasOwn(WEBHOOK_EVENT_ALIASES, name)) {
    const meant = WEBHOOK_EVENT_ALIASES[name as keyof typeof WEBHOOK_EVENT_ALIASES].join(', ');
    return `'${name}' is an alias of a job's own webhook filter; an endpoint names the events: ${meant}`;
  }
  return `unknown event type '${name}'; one of ${[...WEBHOOK_EVENT_TYPES, ...WORKFLOW_EVENT_TYPES, ...WILDCARDS, ...OPERATOR_EVENT_TYPES, 'machine.<state>'].join(', ')}`;
}

const EventFilter = z
  .array(z.string().min(1).max(100))
  .min(1, 'name at least one event type (e.g. job.succeeded, or job.* for every job event)')
  .max(50)
  .superRefine((names, ctx) => {
    names.forEach((name, index) => {
      const problem = eventNameProblem(name);
      if (problem) ctx.addIssue({ code: 'custom', path: [index], message: problem });
    });
  });

/** Headers the delivery itself sets, or that only mean something to one hop: an endpoint may not set them. */
const RESERVED_HEADERS = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'content-length',
  'content-type',
  'content-encoding',
]);
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$/;

const CustomHeaders = z
  .record(z.string(), z.string().max(1_000))
  .superRefine((headers, ctx) => {
    const names = Object.keys(headers);
    if (names.length > 20) ctx.addIssue({ code: 'custom', message: `at most 20 headers, got ${names.length}` });
    for (const name of names) {
      const lower = name.toLowerCase();
      if (!HEADER_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [name], message: 'not a valid header name' });
      else if (lower.startsWith('webhook-')) ctx.addIssue({ code: 'custom', path: [name], message: 'webhook-* headers are the signature\'s (Standard Webhooks); they cannot be set' });
      else if (RESERVED_HEADERS.has(lower)) ctx.addIssue({ code: 'custom', path: [name], message: `${lower} is set by the delivery (or is hop-by-hop); it cannot be set` });
      if (/[\r\n\0]/.test(headers[name]!)) ctx.addIssue({ code: 'custom', path: [name], message: 'a header value may not hold CR, LF or NUL' });
    }
  });

const WorkflowId = z.string().min(1).max(200);

const endpointFields = {
  /** http(s); checked like a job's webhook URL (webhook-target.ts), again at every delivery */
  url: z.string().url().max(2_000),
  /** event types to deliver: job events (or `job.*`); operator-scoped endpoints also `worker.*`, `machine.*`, `webhook.*` */
  events: EventFilter,
  /** only jobs of these services */
  services: z.array(ServiceName).min(1).max(50),
  /** only jobs of these workflows (`workflow_id`) */
  workflows: z.array(WorkflowId).min(1).max(100),
  description: z.string().max(500),
  /** sent with every request (not hop-by-hop, content-*, host or webhook-* ones) */
  headers: CustomHeaders,
  /** attempts per second at most (over every instance of the service) */
  rate_limit: z.number().int().min(1).max(10_000),
  enabled: z.boolean(),
};

/** POST /v1/webhooks: a new endpoint. */
export const NewWebhookEndpoint = z
  .object({
    url: endpointFields.url,
    events: endpointFields.events,
    /** whose jobs it receives; a client key's own by default. An operator key without it makes an operator-scoped endpoint */
    tenant: TenantId.optional(),
    services: endpointFields.services.optional(),
    workflows: endpointFields.workflows.optional(),
    description: endpointFields.description.optional(),
    headers: endpointFields.headers.optional(),
    rate_limit: endpointFields.rate_limit.optional(),
    enabled: endpointFields.enabled.default(true),
  })
  .strict()
  .meta({ id: 'NewWebhookEndpoint' });
export type NewWebhookEndpoint = z.input<typeof NewWebhookEndpoint>;

/** PATCH /v1/webhooks/:id: the fields to change; null removes an optional one. */
export const WebhookEndpointPatch = z
  .object({
    url: endpointFields.url.optional(),
    events: endpointFields.events.optional(),
    services: endpointFields.services.nullable().optional(),
    workflows: endpointFields.workflows.nullable().optional(),
    description: endpointFields.description.nullable().optional(),
    headers: endpointFields.headers.nullable().optional(),
    rate_limit: endpointFields.rate_limit.nullable().optional(),
    enabled: endpointFields.enabled.optional(),
  })
  .strict()
  .meta({ id: 'WebhookEndpointPatch' });
export type WebhookEndpointPatch = z.input<typeof WebhookEndpointPatch>;

/** An endpoint as the API answers it (never with its secret). */
export const WebhookEndpoint = z
  .object({
    id: z.string(),
    /** absent: operator-scoped */
    tenant: z.string().optional(),
    scope: z.enum(['tenant', 'operator']),
    url: z.string(),
    events: z.array(z.string()),
    services: z.array(z.string()).optional(),
    workflows: z.array(z.string()).optional(),
    description: z.string().optional(),
    headers: z.record(z.string(), z.string()).optional(),
    rate_limit: z.number().int().optional(),
    enabled: z.boolean(),
    /** why it was disabled: by hand, 410 Gone, or failing too long */
    disabled_reason: z.string().optional(),
    disabled_at: z.number().optional(),
    /** its attempts have failed since then, none delivered */
    failing_since: z.number().optional(),
    /** after a secret rotation: until when the previous secret signs too */
    previous_secret_valid_until: z.number().optional(),
    created_at: z.number(),
    updated_at: z.number(),
  })
  .meta({ id: 'WebhookEndpoint' });
export type WebhookEndpoint = z.infer<typeof WebhookEndpoint>;

/** POST /v1/webhooks: the endpoint and its secret, shown this once. */
export const CreatedWebhookEndpoint = WebhookEndpoint.extend({
  /** `whsec_` + base64 of 32 random bytes: verify `webhook-signature` with it */
  secret: z.string(),
}).meta({ id: 'CreatedWebhookEndpoint' });
export type CreatedWebhookEndpoint = z.infer<typeof CreatedWebhookEndpoint>;

export const WebhookEndpointList = z.object({ endpoints: z.array(WebhookEndpoint) }).meta({ id: 'WebhookEndpointList' });
export type WebhookEndpointList = z.infer<typeof WebhookEndpointList>;

/** POST /v1/webhooks/:id/rotate-secret */
export const RotatedWebhookSecret = z
  .object({ id: z.string(), secret: z.string(), previous_secret_valid_until: z.number() })
  .meta({ id: 'RotatedWebhookSecret' });
export type RotatedWebhookSecret = z.infer<typeof RotatedWebhookSecret>;

export const WebhookDeliveryList = z
  .object({ endpoint: z.string(), deliveries: z.array(DeliveryLogEntry) })
  .meta({ id: 'WebhookDeliveryList' });
export type WebhookDeliveryList = z.infer<typeof WebhookDeliveryList>;

/** What an event offers an endpoint's filters. */
export interface EndpointEventFacts {
  type: string;
  tenant?: string;
  service?: string;
  workflow?: string;
}

/** Whether an endpoint's filters let an event through (its scope and enabled flag are checked by the caller). */
export function endpointWants(endpoint: Pick<WebhookEndpoint, 'events' | 'services' | 'workflows'>, event: EndpointEventFacts): boolean {
  const typed = endpoint.events.some((name) => name === event.type || (name.endsWith('.*') && event.type.startsWith(name.slice(0, -1))));
  if (!typed) return false;
  if (event.type.startsWith('workflow.')) return !endpoint.workflows || endpoint.workflows.includes(event.workflow ?? '');
  if (!event.type.startsWith('job.')) return true;
  if (endpoint.services && !endpoint.services.includes(event.service ?? '')) return false;
  if (endpoint.workflows && !endpoint.workflows.includes(event.workflow ?? '')) return false;
  return true;
}

/** The secrets an endpoint signs with now: its own, and the one rotated out while its grace lasts. */
export interface EndpointSigning {
  endpoint: WebhookEndpoint;
  secrets: string[];
}

export const WEBHOOK_ENDPOINT_ID = /^ep_[0-9a-z]{20}$/;

function newEndpointId(): string {
  const bytes = randomBytes(20);
  return `ep_${Array.from(bytes, (b) => '0123456789abcdefghijklmnopqrstuv'[b & 31]).join('')}`;
}

type Stored = Record<string, string>;

function fromHash(hash: Stored, now: number): WebhookEndpoint {
  const json = <T>(field: string): T | undefined => (hash[field] ? (JSON.parse(hash[field]) as T) : undefined);
  const num = (field: string) => (hash[field] ? Number(hash[field]) : undefined);
  const previousUntil = num('previous_until');
  const view: WebhookEndpoint = {
    id: hash.id!,
    scope: hash.tenant ? 'tenant' : 'operator',
    url: hash.url!,
    events: json<string[]>('events') ?? [],
    enabled: hash.enabled === '1',
    created_at: Number(hash.created_at),
    updated_at: Number(hash.updated_at),
  };
  if (hash.tenant) view.tenant = hash.tenant;
  const services = json<string[]>('services');
  if (services) view.services = services;
  const workflows = json<string[]>('workflows');
  if (workflows) view.workflows = workflows;
  if (hash.description) view.description = hash.description;
  const headers = json<Record<string, string>>('headers');
  if (headers) view.headers = headers;
  if (num('rate_limit')) view.rate_limit = num('rate_limit')!;
  if (hash.disabled_reason) view.disabled_reason = hash.disabled_reason;
  if (num('disabled_at') !== undefined) view.disabled_at = num('disabled_at')!;
  if (num('failing_since') !== undefined) view.failing_since = num('failing_since')!;
  if (previousUntil !== undefined && previousUntil > now) view.previous_secret_valid_until = previousUntil;
  return view;
}

/** The stored field/value pairs of what an input sets, and the optional fields it removes (null). */
function toFields(input: Record<string, unknown>): { set: string[]; remove: string[] } {
  const set: string[] = [];
  const remove: string[] = [];
  for (const [field, value] of Object.entries(input)) {
    if (value === undefined || field === 'tenant') continue;
    if (value === null) remove.push(field);
    else if (field === 'enabled') set.push(field, value ? '1' : '0');
    else if (field === 'url' || field === 'description') set.push(field, String(value));
    else if (field === 'rate_limit') set.push(field, String(value));
    else set.push(field, JSON.stringify(value));
  }
  return { set, remove };
}

/**
 * The endpoint records: made, changed, listed and read here, by the API (and
 * the CLI through it), and read by the webhook service when it fans events out
 * and signs. Tenancy is the caller's to check: `scope` of a record says whose it is.
 */
export class WebhookEndpoints {
  readonly #ctx: BrokerContext;

  constructor(private readonly outbox: WebhookOutbox) {
    this.#ctx = contextOf(outbox.broker);
  }

  /**
   * Makes an endpoint for `tenant` ('' = operator-scoped); its URL must pass
   * webhookTargetProblem (`allowPrivate`: the server's setting). Returns the
   * endpoint and its secret, which is never shown again.
   */
  async create(tenant: string, input: z.output<typeof NewWebhookEndpoint>, options: { allowPrivate: boolean }): Promise<CreatedWebhookEndpoint> {
    this.checkTarget(input.url, options.allowPrivate);
    this.checkScope(tenant, input.events);
    const id = newEndpointId();
    const secret = newWebhookSecret();
    const { set } = toFields(input);
    await this.#ctx.calls.callWebhooks(FUNCTIONS.webhookEndpoint, ['create', id, tenant, ...set, 'secret', secret]);
    const created = await this.get(id);
    if (!created) throw new Error(`endpoint ${id} vanished as it was made`);
    return { ...created, secret };
  }

  async get(id: string): Promise<WebhookEndpoint | null> {
    const signing = await this.signing(id);
    return signing?.endpoint ?? null;
  }

  /** The endpoint and the secrets its messages are signed with now (both during a rotation's grace period). */
  async signing(id: string, now = Date.now()): Promise<EndpointSigning | null> {
    if (!WEBHOOK_ENDPOINT_ID.test(id)) return null;
    const hash = await this.#ctx.redis.hgetall(this.outbox.keys.webhookEndpoint(id));
    if (!hash.id) return null;
    const secrets = [hash.secret!];
    if (hash.previous_secret && Number(hash.previous_until) > now) secrets.push(hash.previous_secret);
    return { endpoint: fromHash(hash, now), secrets };
  }

  /** Endpoints, oldest first: a tenant's, the operator-scoped ones (''), or every one (undefined). */
  async list(tenant?: string): Promise<WebhookEndpoint[]> {
    const ids = await this.#ctx.redis.zrange(this.outbox.keys.webhookEndpoints(tenant), 0, -1);
    if (ids.length === 0) return [];
    const pipeline = this.#ctx.redis.pipeline();
    for (const id of ids) pipeline.hgetall(this.outbox.keys.webhookEndpoint(id));
    const now = Date.now();
    const hashes = (await pipeline.exec()) ?? [];
    return hashes.flatMap(([, hash]) => ((hash as Stored | null)?.id ? [fromHash(hash as Stored, now)] : []));
  }

  /** The enabled endpoints an event of `tenant` may go to: the tenant's and the operator-scoped ones. */
  async forDelivery(tenant: string | undefined): Promise<WebhookEndpoint[]> {
    const [own, operator] = await Promise.all([tenant ? this.list(tenant) : Promise.resolve([]), this.list('')]);
    return [...own, ...operator].filter((endpoint) => endpoint.enabled);
  }

  /** Changes an endpoint; null when there is none. */
  async update(id: string, patch: z.output<typeof WebhookEndpointPatch>, options: { allowPrivate: boolean }): Promise<WebhookEndpoint | null> {
    const current = await this.get(id);
    if (!current) return null;
    if (patch.url !== undefined) this.checkTarget(patch.url, options.allowPrivate);
    if (patch.events !== undefined) this.checkScope(current.tenant ?? '', patch.events);
    const { set, remove } = toFields(patch);
    // enabling by PATCH forgets why it was disabled, as POST .../enable does
    if (patch.enabled === true) remove.push('disabled_reason', 'disabled_at', 'failing_since');
    if (patch.enabled === false) set.push('disabled_reason', 'disabled by hand', 'disabled_at', String(Date.now()));
    const done = await this.#ctx.calls.callWebhooks(FUNCTIONS.webhookEndpoint, ['update', id, remove.length, ...remove, ...set]);
    return done === true ? this.get(id) : null;
  }

  async delete(id: string): Promise<boolean> {
    return (await this.#ctx.calls.callWebhooks(FUNCTIONS.webhookEndpoint, ['delete', id])) === true;
  }

  async enable(id: string): Promise<WebhookEndpoint | null> {
    return (await this.#ctx.calls.callWebhooks(FUNCTIONS.webhookEndpoint, ['enable', id])) === true ? this.get(id) : null;
  }

  async disable(id: string, reason = 'disabled by hand'): Promise<WebhookEndpoint | null> {
    return (await this.#ctx.calls.callWebhooks(FUNCTIONS.webhookEndpoint, ['disable', id, reason])) === true ? this.get(id) : null;
  }

  /** A new secret; the current one keeps signing too (both signatures sent) for `graceMs`. */
  async rotateSecret(id: string, graceMs: number): Promise<RotatedWebhookSecret | null> {
    const reply = await this.#ctx.calls.callWebhooks(FUNCTIONS.webhookEndpoint, ['rotate', id, newWebhookSecret(), graceMs]);
    if (typeof reply !== 'object') return null;
    return { id, secret: reply.secret, previous_secret_valid_until: reply.previousValidUntil };
  }

  /** The endpoint's delivery attempts, newest first (at most `limit`). */
  async deliveries(id: string, limit = 100): Promise<DeliveryLogEntry[]> {
    const entries = await this.#ctx.redis.lrange(this.outbox.keys.webhookEndpointLog(id), -limit, -1);
    return entries.reverse().flatMap((text) => {
      const parsed = DeliveryLogEntry.safeParse(JSON.parse(text));
      return parsed.success ? [parsed.data] : [];
    });
  }

  /** Sends every failed message of the endpoint made since `since` (ms) again; `left`: failed ones over `limit`. */
  async recover(id: string, since: number, limit = 10_000): Promise<{ queued: number; left: number }> {
    return this.#ctx.calls.callWebhooks(FUNCTIONS.webhookRecover, [id, since, limit]);
  }

  /** Queues a `webhook.test` message to the endpoint (whatever its filter); its message id. */
  async sendTest(endpoint: WebhookEndpoint, now = Date.now()): Promise<string> {
    const id = `msg_test_${now}_${randomBytes(4).toString('hex')}`;
    const body = JSON.stringify({
      type: WEBHOOK_TEST_EVENT,
      timestamp: new Date(now).toISOString(),
      data: { endpoint: endpoint.id, message: 'a test event: the endpoint is reachable and can verify signatures' },
    });
    await this.outbox.enqueue({ id, tenant: endpoint.tenant ?? '', url: endpoint.url, job: `test:${endpoint.id}`, type: WEBHOOK_TEST_EVENT, body, endpoint: endpoint.id });
    return id;
  }

  private checkTarget(url: string, allowPrivate: boolean): void {
    const problem = webhookTargetProblem(url, { allowPrivate });
    if (problem) throw new ValidationError('body', [{ path: 'url', message: problem }]);
  }

  /** Fleet events are for operator-scoped endpoints only. */
  private checkScope(tenant: string, events: readonly string[]): void {
    if (tenant === '') return;
    const issues = events.flatMap((name, index) =>
      isOperatorEventType(name.replace(/\*$/, 'x')) ? [{ path: `events.${index}`, message: `'${name}' is an operator event; only an operator-scoped endpoint (an operator key, no tenant) receives it` }] : [],
    );
    if (issues.length) throw new ValidationError('body', issues);
  }
}

/** The webhook event type of a job stream event type (job.running is sent as job.started; job.starting is not sent). */
export function webhookEventOf(streamType: string): WebhookEventType | undefined {
  if (streamType === 'job.running') return 'job.started';
  if (streamType === 'job.starting') return undefined;
  return (WEBHOOK_EVENT_TYPES as readonly string[]).includes(streamType) ? (streamType as WebhookEventType) : undefined;
}
