import { setTimeout as sleep } from 'node:timers/promises';
import { type EventView, type LiveClientMessage, type LiveServerMessage, compareStreamIds } from '@emp/core';
import WebSocket from 'ws';
import { EmpApiError } from './errors';

/**
 * A job event as `watch` yields it: `type` is the event type (job.queued,
 * job.progress, job.succeeded, ...), or `events.missed` when events after the
 * cursor were trimmed from the stream before they were read (its `id` is that
 * cursor, `first_id` the oldest event kept): read the job again with `get`.
 */
export type JobEvent = EventView;

const TERMINAL = new Set(['job.succeeded', 'job.failed', 'job.canceled', 'job.expired']);

export interface WatchOptions {
  /** resume after this event id; 'start' (the default) yields every event of the job */
  after?: string;
  signal?: AbortSignal;
  /** backoff between reconnects */
  minReconnectMs?: number;
  maxReconnectMs?: number;
}

type Received = { message: LiveServerMessage } | { closed: { code: number; reason: string } } | { refused: EmpApiError };

/** Messages of one socket, awaited one at a time. */
class Inbox {
  private readonly items: Received[] = [];
  private waiting: ((item: Received) => void) | undefined;
  push(item: Received): void {
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = undefined;
      resolve(item);
    } else this.items.push(item);
  }
  next(): Promise<Received> {
    const item = this.items.shift();
    return item ? Promise.resolve(item) : new Promise((resolve) => (this.waiting = resolve));
  }
}

function connect(url: string, apiKey: string | undefined, inbox: Inbox): WebSocket {
  const socket = new WebSocket(url, apiKey ? { headers: { authorization: `Bearer ${apiKey}` } } : {});
  socket.on('message', (data) => {
    try {
      inbox.push({ message: JSON.parse(data.toString()) as LiveServerMessage });
    } catch {
      // not ours to understand; the protocol sends JSON only
    }
  });
  socket.on('unexpected-response', (_request, response) => {
    let text = '';
    response.on('data', (chunk: Buffer) => (text += chunk.toString()));
    response.on('end', () => {
      response.destroy();
      let error = new EmpApiError(response.statusCode ?? 0, 'UNEXPECTED_RESPONSE', `WebSocket upgrade refused: ${response.statusCode}`);
      try {
        const body = JSON.parse(text) as { error?: { code: string; message: string } };
        if (body.error) error = new EmpApiError(response.statusCode ?? 0, body.error.code, body.error.message);
      } catch {
        // keep the generic error
      }
      inbox.push({ refused: error });
    });
  });
  socket.on('close', (code, reason) => inbox.push({ closed: { code, reason: reason.toString() } }));
  socket.on('error', () => undefined); // 'close' follows and reconnects
  return socket;
}

/**
 * Every event of a job over the WebSocket feed, in order, each once, until its
 * terminal event. A dropped connection is reopened (with backoff) and resumed
 * after the last event seen, so nothing is missed or repeated.
 */
export async function* watchJob(baseUrl: string, apiKey: string | undefined, jobId: string, options: WatchOptions = {}): AsyncGenerator<JobEvent> {
  const url = `${baseUrl.replace(/^http/, 'ws')}/v1/live`;
  let last = options.after ?? 'start';
  let failures = 0;
  // the cursor a gap was last reported for: a reconnect from the same cursor reports it once
  let missedAfter: string | undefined;
  while (!options.signal?.aborted) {
    const inbox = new Inbox();
    const socket = connect(url, apiKey, inbox);
    const onAbort = () => socket.close(1000, 'done');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('open', () => {
      const subscribe: LiveClientMessage = { type: 'subscribe', job: jobId, after: last };
      socket.send(JSON.stringify(subscribe));
    });
    try {
      for (;;) {
        const item = await inbox.next();
        if ('refused' in item) {
          // 5xx and proxies' errors are worth another try; a refused key or a missing job is not
          if (item.refused.status >= 400 && item.refused.status < 500) throw item.refused;
          break;
        }
        if ('closed' in item) break;
        const message = item.message;
        if (message.type === 'error') {
          if (message.job === undefined || message.job === jobId) {
            throw new EmpApiError(message.code === 'NOT_FOUND' ? 404 : 400, message.code, message.message, message.issues ?? []);
          }
          continue;
        }
        if (message.type === 'events.missed' && message.job === jobId && message.after !== missedAfter) {
          missedAfter = message.after;
          yield { ...message, id: message.after, ts: Date.now() } as JobEvent;
          continue;
        }
        if (message.type !== 'event' || message.job !== jobId) continue;
        if (last !== 'start' && compareStreamIds(message.id, last) <= 0) continue;
        failures = 0;
        last = message.id;
        const { event, type: _message, ...fields } = message;
        yield { ...fields, type: event } as JobEvent;
        if (TERMINAL.has(event)) return;
      }
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) socket.close(1000, 'done');
    }
    if (options.signal?.aborted) return;
    failures += 1;
    const min = options.minReconnectMs ?? 100;
    await sleep(Math.min(options.maxReconnectMs ?? 10_000, min * 2 ** Math.min(failures - 1, 10)) * (0.5 + Math.random() / 2));
  }
}

const WORKFLOW_END = new Set(['workflow.succeeded', 'workflow.failed', 'workflow.canceled']);

/**
 * Every event of a workflow (its workflow.* events and its steps' job events)
 * over its Server-Sent Events stream, in order, each once, until the workflow's
 * end. A dropped stream is reopened (with backoff) after the last event seen.
 */
export async function* watchWorkflow(baseUrl: string, apiKey: string | undefined, workflowId: string, options: WatchOptions & { fetch?: typeof fetch } = {}): AsyncGenerator<JobEvent> {
  const doFetch = options.fetch ?? globalThis.fetch;
  let last = options.after && options.after !== 'start' ? options.after : undefined;
  let failures = 0;
  while (!options.signal?.aborted) {
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (apiKey) headers.authorization = `Bearer ${apiKey}`;
    if (last) headers['last-event-id'] = last;
    let response: Response | undefined;
    try {
      response = await doFetch(`${baseUrl}/v1/workflows/${encodeURIComponent(workflowId)}/stream`, { headers, signal: options.signal });
    } catch (error) {
      if (options.signal?.aborted) return;
      response = undefined;
      void error;
    }
    if (response && response.status >= 400 && response.status < 500) {
      let body: { error?: { code: string; message: string } } = {};
      try {
        body = (await response.json()) as typeof body;
      } catch {
        // no JSON body: the status says enough
      }
      throw new EmpApiError(response.status, body.error?.code ?? 'HTTP_ERROR', body.error?.message ?? `workflow stream: ${response.status}`);
    }
    if (response?.ok && response.body) {
      const decoder = new TextDecoder();
      let buffer = '';
      try {
        for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
          buffer += decoder.decode(chunk, { stream: true });
          for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = /^data: (.*)$/m.exec(block)?.[1];
            if (data === undefined) continue;
            const event = JSON.parse(data) as JobEvent;
            const id = /^id: (.*)$/m.exec(block)?.[1];
            if (id) {
              if (last && compareStreamIds(id, last) <= 0) continue;
              last = id;
            }
            failures = 0;
            yield event;
            if (WORKFLOW_END.has(String(event.type))) return;
          }
        }
      } catch (error) {
        if (options.signal?.aborted) return;
        void error;
      }
    }
    if (options.signal?.aborted) return;
    failures += 1;
    const min = options.minReconnectMs ?? 100;
    await sleep(Math.min(options.maxReconnectMs ?? 10_000, min * 2 ** Math.min(failures - 1, 10)) * (0.5 + Math.random() / 2));
  }
}
