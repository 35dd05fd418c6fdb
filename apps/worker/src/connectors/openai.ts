import { OpenAIOptions, parseWith } from '@emp/core';
import { z } from 'zod';
import { type Connector, JobFailure } from '../connector';
import { ServiceClient, parseMessage, protocolError, statusFailure } from '../service-client';
import { readLines, readServerSentEvents, tail } from '../streaming';

/** The payload is a chat completion request; `stream` and `stream_options` are the connector's. */
export const OpenAIPayload = z
  .object({
    model: z.string().min(1).optional(),
    messages: z.array(z.object({ role: z.string().min(1) }).loose()).min(1),
  })
  .loose();

const Usage = z
  .object({ prompt_tokens: z.number().optional(), completion_tokens: z.number().optional(), total_tokens: z.number().optional() })
  .loose();

/** A `chat.completion.chunk`, leniently: servers differ on `choices` in the usage chunk ([], null or absent). */
const Chunk = z
  .object({
    id: z.string().optional(),
    model: z.string().optional(),
    choices: z
      .array(
        z
          .object({
            index: z.number().optional(),
            delta: z.object({ content: z.string().nullish(), role: z.string().nullish() }).loose().nullish(),
            finish_reason: z.string().nullish(),
          })
          .loose(),
      )
      .nullish(),
    usage: Usage.nullish(),
    error: z.unknown().optional(),
  })
  .loose();

/**
 * Chat completions on an OpenAI-compatible server, streamed: content arrives
 * as progress messages (the tail of the text so far), the result carries the
 * whole text, the finish reason and the token usage. Cancel aborts the HTTP
 * request, which stops generation on servers that watch their connections.
 */
export function openaiConnector(options: OpenAIOptions = {}): Connector {
  const config = parseWith(OpenAIOptions, options, 'openai connector options');
  const client = new ServiceClient(config.service, {
    baseUrl: config.baseUrl,
    headers: { ...(config.apiKey && { authorization: `Bearer ${config.apiKey}` }), ...config.headers },
    tls: config.tls,
    requestTimeoutMs: config.requestTimeoutMs,
  });
  const service = config.service;

  return {
    service,
    id: `${service}@${client.baseUrl.host}`,
    async run(job, ctx) {
      const parsed = OpenAIPayload.safeParse(job.payload);
      if (!parsed.success) {
        const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(payload)'}: ${i.message}`).join('; ');
        throw new JobFailure('non_retryable', `invalid openai payload: ${issues}`, { type: 'InvalidPayload' });
      }
      const model = parsed.data.model ?? config.model;
      if (!model) throw new JobFailure('non_retryable', 'the payload names no model and the connector has no default', { type: 'InvalidPayload' });
      const request = { ...parsed.data, model, stream: true, stream_options: { include_usage: true } };

      const response = await client.request('chat/completions', { json: request, signal: ctx.signal });
      if (!response.ok) {
        throw statusFailure(service, 'POST chat/completions', response.status, await client.readText(response, ctx.signal, 'chat/completions'));
      }
      let content = '';
      let chunks = 0;
      let finishReason: string | undefined;
      let usage: z.output<typeof Usage> | undefined;
      let id: string | undefined;
      let servedModel: string | undefined;
      let done = false;
      const lines = readLines(client, response, { idleMs: config.idleTimeoutMs, signal: ctx.signal, what: 'chat/completions stream' });
      for await (const event of readServerSentEvents(lines)) {
        if (event.data === '[DONE]') {
          done = true;
          break;
        }
        let json: unknown;
        try {
          json = JSON.parse(event.data);
        } catch {
          throw protocolError(service, `a stream event is not JSON: ${event.data.slice(0, 200)}`);
        }
        const chunk = parseMessage(service, 'chat.completion.chunk', Chunk, json);
        if (chunk.error !== undefined) {
          // an error after the 200 (vLLM, OpenAI "server_error"): the request may pass on another try
          throw new JobFailure('retryable', `${service}: error in the stream: ${JSON.stringify(chunk.error).slice(0, 1_000)}`, {
            type: 'ServiceError',
            details: { error: chunk.error },
          });
        }
        id ??= chunk.id;
        servedModel ??= chunk.model;
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices ?? []) {
          if ((choice.index ?? 0) !== 0) continue;
          if (choice.finish_reason) finishReason = choice.finish_reason;
          const delta = choice.delta?.content;
          if (delta) {
            content += delta;
            chunks++;
            ctx.progress({ stage: 'running', value: chunks, message: tail(content) });
          }
        }
      }
      // lenient: some servers close without [DONE], but a stream with no finish reason was cut short
      if (!done && finishReason === undefined) {
        throw new JobFailure('retryable', `${service}: the stream ended before the completion did`, { type: 'StreamTruncated' });
      }
      return {
        id,
        model: servedModel ?? model,
        content,
        finish_reason: finishReason ?? null,
        usage: usage ?? null,
      };
    },
  };
}
