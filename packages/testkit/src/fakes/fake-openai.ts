/**
 * A fake OpenAI-compatible server: `POST /v1/chat/completions` with
 * `stream: true` answers server-sent events as OpenAI's API reference
 * describes (`chat.completion.chunk` objects with `choices[].delta`, the
 * last content chunk with `finish_reason`; with `stream_options.include_usage`
 * every chunk has `usage: null` and one more chunk carries the usage with
 * `choices: []`; then `data: [DONE]`). `GET /v1/models` lists its models.
 *
 * The reply echoes the last user message word by word. Variants seen in
 * compatible servers (usage chunk with `choices: null` or without `choices`)
 * and failure modes (error event mid-stream, malformed chunk, dropped
 * connection, stall) are switches on the instance.
 */
import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { FakeService, type FakeServerOptions, type RecordedRequest, sendJson } from './http-fake';

export interface FakeOpenAIOptions extends FakeServerOptions {
  models?: string[];
  chunkDelayMs?: number;
}

type ChatRequest = {
  model?: string;
  messages?: Array<{ role: string; content: string }>;
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
};

export class FakeOpenAI extends FakeService {
  readonly models: string[];
  chunkDelayMs: number;
  /** how the usage chunk carries `choices`: [] (OpenAI), null, or not at all */
  usageChoices: 'empty' | 'null' | 'absent' = 'empty';
  sendDone = true;
  /** after this many content chunks: send an error event / a malformed chunk / drop the connection / stall */
  failAfter: { chunks: number; mode: 'error' | 'malformed' | 'drop' | 'stall' } | undefined;
  /** requests whose client went away before the reply was finished (a cancel) */
  readonly abandoned: RecordedRequest[] = [];

  constructor(options: FakeOpenAIOptions = {}) {
    super(options);
    this.models = options.models ?? ['gpt-test'];
    this.chunkDelayMs = options.chunkDelayMs ?? 2;
  }

  static async start(options: FakeOpenAIOptions = {}): Promise<FakeOpenAI> {
    const fake = new FakeOpenAI(options);
    await fake.http.listen();
    return fake;
  }

  protected async route(request: RecordedRequest, res: ServerResponse): Promise<void> {
    if (request.method === 'GET' && request.path === '/v1/models') {
      return sendJson(res, 200, { object: 'list', data: this.models.map((id) => ({ id, object: 'model', created: 0, owned_by: 'fake' })) });
    }
    if (request.method !== 'POST' || request.path !== '/v1/chat/completions') return sendJson(res, 404, { error: { message: 'not found', type: 'invalid_request_error' } });
    const body = request.body as ChatRequest;
    if (!body || !Array.isArray(body.messages) || body.messages.length === 0) {
      return sendJson(res, 400, { error: { message: "'messages' is a required property", type: 'invalid_request_error', param: 'messages', code: null } });
    }
    const model = body.model ?? '';
    if (!this.models.includes(model)) {
      return sendJson(res, 404, { error: { message: `The model \`${model}\` does not exist`, type: 'invalid_request_error', param: null, code: 'model_not_found' } });
    }
    const last = [...body.messages].reverse().find((m) => m.role === 'user')?.content ?? '';
    const words = `You said: ${last}`.split(/(?<= )/);
    const id = `chatcmpl-${Date.now()}`;
    const created = Math.floor(Date.now() / 1000);
    const includeUsage = body.stream_options?.include_usage === true;
    const usage = { prompt_tokens: last.split(/\s+/).length + 3, completion_tokens: words.length, total_tokens: last.split(/\s+/).length + 3 + words.length };

    if (!body.stream) {
      return sendJson(res, 200, {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [{ index: 0, message: { role: 'assistant', content: words.join('') }, finish_reason: 'stop' }],
        usage,
      });
    }

    let finished = false;
    res.once('close', () => {
      if (!finished) this.abandoned.push(request);
    });
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const chunk = (choices: unknown, extra: Record<string, unknown> = {}) =>
      `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_fake', choices, ...(includeUsage && { usage: null }), ...extra })}\n\n`;
    res.write(': keep-alive\n\n');
    res.write(chunk([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
    for (const [index, word] of words.entries()) {
      if (res.destroyed) return;
      if (this.failAfter && index === this.failAfter.chunks) {
        const mode = this.failAfter.mode;
        if (mode === 'error') {
          res.end(`data: ${JSON.stringify({ error: { message: 'The server had an error while processing your request.', type: 'server_error' } })}\n\n`);
          finished = true;
          return;
        }
        if (mode === 'malformed') res.write('data: {"choices": [{"delta": {"content": 42}}\n\n');
        if (mode === 'drop') {
          res.socket?.destroy();
          return;
        }
        if (mode === 'stall') {
          await new Promise((resolve) => res.once('close', resolve));
          return;
        }
      }
      await sleep(this.chunkDelayMs);
      res.write(chunk([{ index: 0, delta: { content: word }, logprobs: null, finish_reason: null }]));
    }
    res.write(chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }]));
    if (includeUsage) {
      const usageChunk = { id, object: 'chat.completion.chunk', created, model, usage } as Record<string, unknown>;
      if (this.usageChoices === 'empty') usageChunk.choices = [];
      if (this.usageChoices === 'null') usageChunk.choices = null;
      res.write(`data: ${JSON.stringify(usageChunk)}\n\n`);
    }
    if (this.sendDone) res.write('data: [DONE]\n\n');
    finished = true;
    res.end();
  }
}
