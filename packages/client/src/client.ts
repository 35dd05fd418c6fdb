import type {
  ApiErrorBody,
  BatchResult,
  CancelResponse,
  CreatedWebhookEndpoint,
  JobEventsPage,
  JobListFilter,
  JobPage,
  JobView,
  MachineEventsPage,
  MachineList,
  NewWebhookEndpoint,
  PlannerReport,
  PoolReport,
  QueueHistory,
  QueueHistoryRange,
  QueueReport,
  RetryResponse,
  ShardReport,
  SubmitJobInput,
  SubmitWorkflowInput,
  SubmittedJob,
  SubmittedWorkflow,
  Workflow,
  WebhookDeliveryList,
  WebhookEndpoint,
  WebhookEndpointList,
  WorkerList,
} from '@emp/core';
import { EmpApiError } from './errors';
import { type JobEvent, type WatchOptions, watchJob, watchWorkflow } from './watch';

export interface EmpClientOptions {
  /** e.g. http://127.0.0.1:3331 */
  baseUrl: string;
  /** an API key (`emp keys create`); not needed when the server runs without auth */
  apiKey?: string;
  fetch?: typeof fetch;
}

export type { BatchResult, JobPage, SubmittedJob };

/** Who a key is (`GET /v1/whoami`); with auth off every caller is an anonymous operator. */
export interface Identity {
  key_id: string;
  role: 'client' | 'worker' | 'service' | 'operator';
  tenant?: string;
  auth: boolean;
}

export interface MachineCommandAnswer {
  command_id: string;
  machine: string;
  pool: string;
  action: 'drain' | 'restart' | 'shutdown' | 'prefetch' | 'evict' | 'load';
  service?: string;
  /** prefetch, evict and load: the model */
  model?: string;
}

/** The EMP Job Queue API, typed with @emp/core's wire schemas (the server's response schemas): submit, get, list, cancel, retry, events and `watch`. */
export class EmpClient {
  private readonly baseUrl: string;
  private readonly fetch: typeof fetch;

  constructor(private readonly options: EmpClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.fetch = options.fetch ?? globalThis.fetch;
  }

  /**
   * Submits a job; with `waitSeconds` (at most 90) the answer comes once it finished or that time passed.
   * `durable`: the answer comes once a Redis replica has the job (`?durable=1`; a 503 NOT_REPLICATED
   * if none acknowledged in time); false: not even where the server's EMP_DURABLE_SUBMIT says so.
   */
  async submit(job: SubmitJobInput, options: { idempotencyKey?: string; waitSeconds?: number; durable?: boolean } = {}): Promise<SubmittedJob> {
    return this.request('POST', `/v1/jobs${submitQuery({ wait: options.waitSeconds || undefined, durable: options.durable })}`, job, options.idempotencyKey ? { 'idempotency-key': options.idempotencyKey } : {});
  }

  async submitBatch(jobs: SubmitJobInput[], options: { durable?: boolean } = {}): Promise<BatchResult[]> {
    return (await this.request<{ results: BatchResult[] }>('POST', `/v1/jobs/batch${submitQuery({ durable: options.durable })}`, { jobs })).results;
  }

  /** One job; with `waitSeconds` a long poll until it finished. */
  async get(id: string, options: { waitSeconds?: number } = {}): Promise<JobView> {
    return this.request('GET', `/v1/jobs/${encodeURIComponent(id)}${options.waitSeconds ? `?wait=${options.waitSeconds}` : ''}`);
  }

  /** One page of jobs, newest first. */
  async list(filter: Omit<JobListFilter, 'limit'> & { limit?: number } = {}): Promise<JobPage> {
    const query = new URLSearchParams();
    if (filter.states?.length) query.set('state', filter.states.join(','));
    if (filter.services?.length) query.set('service', filter.services.join(','));
    for (const key of ['tenant', 'pool', 'since', 'until', 'cursor', 'limit'] as const) {
      if (filter[key] !== undefined) query.set(key, String(filter[key]));
    }
    return this.request('GET', `/v1/jobs?${query}`);
  }

  /** Every job the filter matches, following cursors. */
  async *listAll(filter: Omit<JobListFilter, 'cursor'> = {}): AsyncGenerator<JobView> {
    let cursor: string | undefined;
    do {
      const page = await this.list({ ...filter, cursor });
      yield* page.jobs;
      cursor = page.next_cursor;
    } while (cursor);
  }

  async cancel(id: string, reason?: string): Promise<CancelResponse> {
    return this.request('POST', `/v1/jobs/${encodeURIComponent(id)}/cancel`, reason ? { reason } : {});
  }

  async retry(id: string): Promise<RetryResponse> {
    return this.request('POST', `/v1/jobs/${encodeURIComponent(id)}/retry`);
  }

  /** A job's event history, oldest first; pass `cursor` back as `after` to continue. */
  async events(id: string, options: { after?: string; limit?: number } = {}): Promise<JobEventsPage> {
    const query = new URLSearchParams();
    if (options.after) query.set('after', options.after);
    if (options.limit) query.set('limit', String(options.limit));
    return this.request('GET', `/v1/jobs/${encodeURIComponent(id)}/events?${query}`);
  }

  /**
   * The job's events as they happen (from its first, or after `after`), ending
   * with its terminal event; reconnects and resumes after the last event seen.
   */
  watch(id: string, options: WatchOptions = {}): AsyncGenerator<JobEvent> {
    return watchJob(this.baseUrl, this.options.apiKey, id, options);
  }

  /**
   * Submits a workflow (docs/workflows.md): named steps with needs, references to earlier results, fan-out.
   * With `idempotencyKey`, a repeat (a retry after a timeout, say) answers the first workflow, `duplicate: true`.
   */
  async submitWorkflow(workflow: SubmitWorkflowInput, options: { idempotencyKey?: string } = {}): Promise<SubmittedWorkflow> {
    return this.request('POST', '/v1/workflows', workflow, options.idempotencyKey ? { 'idempotency-key': options.idempotencyKey } : {});
  }

  /** A workflow with every step's state, jobs, timings and output. */
  async getWorkflow(id: string): Promise<Workflow> {
    return this.request('GET', `/v1/workflows/${encodeURIComponent(id)}`);
  }

  /** The newest workflows (of a tenant). */
  async listWorkflows(options: { tenant?: string; limit?: number } = {}): Promise<{ workflows: Workflow[] }> {
    const query = new URLSearchParams();
    if (options.tenant) query.set('tenant', options.tenant);
    if (options.limit) query.set('limit', String(options.limit));
    return this.request('GET', `/v1/workflows?${query}`);
  }

  /** Cancels a workflow and its steps still queued or running (idempotent). */
  async cancelWorkflow(id: string, reason?: string): Promise<{ id: string; state: Workflow['state']; changed: boolean }> {
    return this.request('POST', `/v1/workflows/${encodeURIComponent(id)}/cancel`, reason ? { reason } : {});
  }

  /**
   * A workflow's events as they happen (its workflow.* events and its steps' job events),
   * ending with its end; reconnects and resumes after the last event seen.
   */
  watchWorkflow(id: string, options: WatchOptions = {}): AsyncGenerator<JobEvent> {
    return watchWorkflow(this.baseUrl, this.options.apiKey, id, { ...options, fetch: this.fetch });
  }

  /** The configured pools by expected duration: cutoffs, target wait, profile, queue, workers, learned duration classes. */
  async pools(): Promise<PoolReport> {
    return this.request('GET', '/v1/pools');
  }

  /** Where each pool lives: every shard with its cluster slot, node and jobs, and each Redis node's load (an operator key). */
  async shards(): Promise<ShardReport> {
    return this.request('GET', '/v1/shards');
  }

  async queues(pool?: string): Promise<QueueReport> {
    return this.request('GET', `/v1/queues${pool ? `?pool=${pool}` : ''}`);
  }

  /**
   * Queue samples the API recorded over the last hour, or the last day in coarser slots (`range: 'day'`), from
   * `since` (ms since the epoch) when given: depth, jobs that ended and waits per pool and service, and their summary.
   */
  async queueHistory(options: { pool?: string; since?: number; range?: QueueHistoryRange } = {}): Promise<QueueHistory> {
    const query = new URLSearchParams();
    if (options.pool) query.set('pool', options.pool);
    if (options.since !== undefined) query.set('since', String(options.since));
    if (options.range) query.set('range', options.range);
    return this.request('GET', `/v1/queues/history?${query}`);
  }

  /** A machine's recent process transitions and operator commands, oldest first. */
  async machineEvents(machine: string, options: { pool?: string; limit?: number } = {}): Promise<MachineEventsPage> {
    const query = new URLSearchParams();
    if (options.pool) query.set('pool', options.pool);
    if (options.limit) query.set('limit', String(options.limit));
    return this.request('GET', `/v1/machines/${encodeURIComponent(machine)}/events?${query}`);
  }

  async workers(pool?: string): Promise<WorkerList> {
    return this.request('GET', `/v1/workers${pool ? `?pool=${pool}` : ''}`);
  }

  async machines(pool?: string): Promise<MachineList> {
    return this.request('GET', `/v1/machines${pool ? `?pool=${pool}` : ''}`);
  }

  /** (operator) The planner's forecast, decisions and capacity hint per pool, with the placement matrix. */
  async planner(pool?: string): Promise<PlannerReport> {
    return this.request('GET', `/v1/planner${pool ? `?pool=${encodeURIComponent(pool)}` : ''}`);
  }

  async whoami(): Promise<Identity> {
    return this.request('GET', '/v1/whoami');
  }

  /** (operator) Drain or restart a machine, or one service on it: recorded for its agent, answered with the command's id. */
  async machineCommand(machine: string, action: 'drain' | 'restart', options: { pool?: string; service?: string; reason?: string } = {}): Promise<MachineCommandAnswer> {
    return this.request('POST', `/v1/machines/${encodeURIComponent(machine)}/${action}`, options);
  }

  /**
   * (operator) Prefetch a model into a machine's model cache (downloaded, not
   * pinned) or evict one from it: recorded for its agent, answered with the
   * command's id; the agent reports the outcome on the machine.
   */
  async modelCommand(machine: string, action: 'prefetch' | 'evict' | 'load', model: string, options: { pool?: string; reason?: string } = {}): Promise<MachineCommandAnswer> {
    return this.request('POST', `/v1/machines/${encodeURIComponent(machine)}/${action}`, { ...options, model });
  }

  /** (operator) Pause or resume claims of a service's jobs, in one pool or every pool. */
  async setServicePaused(service: string, paused: boolean, options: { pool?: string; reason?: string } = {}): Promise<{ service: string; paused: boolean; pools: Array<{ pool: string; changed: boolean }> }> {
    return this.request('POST', `/v1/services/${encodeURIComponent(service)}/${paused ? 'pause' : 'resume'}`, options);
  }

  /** Registers a webhook endpoint; the answer holds its signing secret, shown only this once. */
  async createWebhookEndpoint(endpoint: NewWebhookEndpoint): Promise<CreatedWebhookEndpoint> {
    return this.request('POST', '/v1/webhooks', endpoint);
  }

  /** The webhook endpoints the key may see: a client key its tenant's; an operator every one (and the operator-scoped ones), or one tenant's. */
  async webhookEndpoints(options: { tenant?: string } = {}): Promise<WebhookEndpointList> {
    return this.request('GET', `/v1/webhooks${options.tenant ? `?tenant=${encodeURIComponent(options.tenant)}` : ''}`);
  }

  async webhookEndpoint(id: string): Promise<WebhookEndpoint> {
    return this.request('GET', `/v1/webhooks/${encodeURIComponent(id)}`);
  }

  /** An endpoint's delivery attempts, newest first (`limit`: at most this many, default 100). */
  async webhookDeliveries(id: string, options: { limit?: number } = {}): Promise<WebhookDeliveryList> {
    return this.request('GET', `/v1/webhooks/${encodeURIComponent(id)}/deliveries${options.limit ? `?limit=${options.limit}` : ''}`);
  }

  /** Sends one message of the endpoint again (delivered, failed or dropped; its id is a delivery's `message`): same webhook-id and body. */
  async resendWebhookMessage(id: string, message: string): Promise<{ endpoint: string; message_id: string }> {
    return this.request('POST', `/v1/webhooks/${encodeURIComponent(id)}/messages/${encodeURIComponent(message)}/resend`);
  }

  /** Enables an endpoint (forgetting why it was disabled) or disables it (its messages not yet sent are dropped). */
  async setWebhookEndpointEnabled(id: string, enabled: boolean): Promise<WebhookEndpoint> {
    return this.request('POST', `/v1/webhooks/${encodeURIComponent(id)}/${enabled ? 'enable' : 'disable'}`);
  }

  /** Sends a signed `webhook.test` event to the endpoint, whatever its filter. */
  async testWebhookEndpoint(id: string): Promise<{ endpoint: string; message_id: string }> {
    return this.request('POST', `/v1/webhooks/${encodeURIComponent(id)}/test`);
  }

  private async request<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    const sent: Record<string, string> = { ...headers };
    if (body !== undefined) sent['content-type'] = 'application/json';
    if (this.options.apiKey) sent.authorization = `Bearer ${this.options.apiKey}`;
    const response = await this.fetch(`${this.baseUrl}${path}`, { method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new EmpApiError(response.status, 'BAD_RESPONSE', `${method} ${path}: ${response.status} with a body that is not JSON: ${text.slice(0, 200)}`);
    }
    if (!response.ok) {
      const error = (parsed as Partial<ApiErrorBody>).error;
      throw new EmpApiError(response.status, error?.code ?? 'HTTP_ERROR', error?.message ?? `${method} ${path}: ${response.status}`, error?.issues ?? []);
    }
    return parsed as T;
  }
}

function submitQuery(query: { wait?: number; durable?: boolean }): string {
  const params = new URLSearchParams();
  if (query.wait !== undefined) params.set('wait', String(query.wait));
  if (query.durable !== undefined) params.set('durable', query.durable ? '1' : '0');
  const text = params.toString();
  return text ? `?${text}` : '';
}
