import { EmpApiError, EmpClient, type Identity } from '@emp/client';
import { z } from 'zod';
import { readServerSentEvents } from '../live/server-sent-events';

/** What the monitor's server tells the page (`/config.json`): where the API is. */
export const MonitorConfig = z.object({ api_url: z.url(), auth: z.boolean().optional() }).loose();
export type MonitorConfig = z.infer<typeof MonitorConfig>;

const KEY_ITEM = 'emp.monitor.apiKey';
const API_ITEM = 'emp.monitor.apiUrl';

export interface Settings {
  apiUrl: string;
  apiKey?: string;
}

export async function loadSettings(): Promise<Settings> {
  let apiUrl = localStorage.getItem(API_ITEM) ?? undefined;
  if (!apiUrl) {
    const response = await fetch('config.json', { cache: 'no-store' });
    const parsed = MonitorConfig.safeParse(await response.json().catch(() => undefined));
    if (!parsed.success) throw new Error(`config.json: ${parsed.error.issues[0]?.path.join('.') || 'body'}: ${parsed.error.issues[0]?.message ?? 'unreadable'}`);
    apiUrl = parsed.data.api_url;
  }
  const apiKey = localStorage.getItem(KEY_ITEM) ?? undefined;
  return { apiUrl, apiKey: apiKey || undefined };
}

export function saveSettings(settings: { apiKey?: string; apiUrl?: string }): void {
  if (settings.apiKey) localStorage.setItem(KEY_ITEM, settings.apiKey);
  else localStorage.removeItem(KEY_ITEM);
  if (settings.apiUrl) localStorage.setItem(API_ITEM, settings.apiUrl);
  else localStorage.removeItem(API_ITEM);
}

/** The API as this page talks to it: the SDK, the key's identity, and the few calls the SDK does not have. */
export class Connection {
  readonly client: EmpClient;
  constructor(
    readonly settings: Settings,
    readonly identity: Identity,
  ) {
    this.client = new EmpClient({ baseUrl: settings.apiUrl, apiKey: settings.apiKey, fetch: (...args) => fetch(...args) });
  }

  static async open(settings: Settings): Promise<Connection> {
    const probe = new EmpClient({ baseUrl: settings.apiUrl, apiKey: settings.apiKey, fetch: (...args) => fetch(...args) });
    return new Connection(settings, await probe.whoami());
  }

  get isOperator(): boolean {
    return this.identity.role === 'operator';
  }

  /** May read machines, workers and queues. */
  get seesFleet(): boolean {
    return this.identity.role !== 'client';
  }

  /** An asset URL of the API with the key added, for <img>/<video> that cannot send a header. */
  assetUrl(url: string): string {
    if (!this.settings.apiKey || !url.startsWith(this.settings.apiUrl)) return url;
    const withKey = new URL(url);
    withKey.searchParams.set('api_key', this.settings.apiKey);
    return withKey.toString();
  }

  private headers(): Record<string, string> {
    return this.settings.apiKey ? { authorization: `Bearer ${this.settings.apiKey}` } : {};
  }

  /**
   * One workflow's Server-Sent Events (GET /v1/workflows/:id/stream: its workflow.* events and its steps'
   * job events) until it ends or `signal` aborts; `onEvent` hears each event's type.
   */
  async followWorkflow(id: string, onEvent: (type: string) => void, signal: AbortSignal): Promise<void> {
    const response = await fetch(`${this.settings.apiUrl}/v1/workflows/${encodeURIComponent(id)}/stream`, { headers: this.headers(), signal });
    if (!response.ok) throw new EmpApiError(response.status, 'HTTP_ERROR', `workflow stream: ${response.status}`);
    for await (const event of readServerSentEvents(response)) onEvent(event.event);
  }

  /** A machine's process logs (served by the machine agent's route); `unavailable` when the API has none for it. */
  async machineLogs(machine: string, options: { pool: string; process?: string; after?: string }): Promise<{ available: false; reason: string } | { available: true; entries: LogEntry[]; next?: string }> {
    const query = new URLSearchParams({ pool: options.pool });
    if (options.process) query.set('process', options.process);
    if (options.after) query.set('after', options.after);
    const response = await fetch(`${this.settings.apiUrl}/v1/machines/${encodeURIComponent(machine)}/logs?${query}`, { headers: this.headers() });
    if (response.status === 404) return { available: false, reason: 'logs not available from this machine' };
    const body: unknown = await response.json().catch(() => undefined);
    if (!response.ok) {
      const error = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new EmpApiError(response.status, error?.code ?? 'HTTP_ERROR', error?.message ?? `logs: ${response.status}`);
    }
    const page = LogPage.safeParse(body);
    if (!page.success) return { available: false, reason: `logs answer unreadable: ${page.error.issues[0]?.path.join('.')}: ${page.error.issues[0]?.message}` };
    return { available: true, entries: page.data.entries, next: page.data.next || undefined };
  }

  /** New log lines as the machine writes them (SSE), until the signal aborts. */
  async *followMachineLogs(machine: string, options: { pool: string; process?: string; after?: string; signal: AbortSignal }): AsyncGenerator<LogEntry> {
    const query = new URLSearchParams({ pool: options.pool, follow: '1' });
    if (options.process) query.set('process', options.process);
    if (options.after) query.set('after', options.after);
    const response = await fetch(`${this.settings.apiUrl}/v1/machines/${encodeURIComponent(machine)}/logs?${query}`, { headers: { ...this.headers(), accept: 'text/event-stream' }, signal: options.signal });
    if (!response.ok) return;
    for await (const event of readServerSentEvents(response)) {
      let data: unknown;
      try {
        data = JSON.parse(event.data);
      } catch {
        continue;
      }
      const entry = LogEntry.safeParse(data);
      if (entry.success) yield entry.data;
    }
  }
}

export const LogEntry = z
  .object({
    id: z.string(),
    process: z.string(),
    stream: z.enum(['stdout', 'stderr']).catch('stdout'),
    line: z.string(),
    ts: z.number(),
  })
  .loose();
export type LogEntry = z.infer<typeof LogEntry>;
const LogPage = z.object({ entries: z.array(LogEntry), next: z.string().nullish() }).loose();

/** A readable message for any failure of a call. */
export function describeError(error: unknown): string {
  if (error instanceof EmpApiError) return `${error.code}: ${error.message}`;
  if (error instanceof Error) return error.message;
  return String(error);
}
