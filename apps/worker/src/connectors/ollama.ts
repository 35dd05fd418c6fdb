import type { ClaimedJob } from '@emp/core';
import { OllamaOptions, parseWith } from '@emp/core';
import { z } from 'zod';
import { type Connector, type JobContext, JobFailure, ModelLoadError } from '../connector';
import { ServiceClient, parseMessage, protocolError, statusFailure } from '../service-client';
import { readLines, tail } from '../streaming';

/** `messages` -> /api/chat, `prompt` -> /api/generate; other fields (options, format, keep_alive, system, ...) pass through. */
export const OllamaPayload = z.union([
  z.object({ model: z.string().min(1), messages: z.array(z.object({ role: z.string(), content: z.string() }).loose()).min(1) }).loose(),
  z.object({ model: z.string().min(1), prompt: z.string() }).loose(),
]);

const Tags = z.object({ models: z.array(z.object({ name: z.string(), model: z.string().optional() }).loose()).nullish() }).loose();

const PullLine = z
  .object({ status: z.string().optional(), digest: z.string().optional(), total: z.number().optional(), completed: z.number().optional(), error: z.string().optional() })
  .loose();

/** The answer to a generate request with no prompt (stream off): the model is loaded (`done_reason` "load"). */
const LoadAnswer = z.object({ model: z.string().optional(), done: z.boolean().optional(), done_reason: z.string().optional(), load_duration: z.number().optional() }).loose();

const GenerationLine = z
  .object({
    model: z.string().optional(),
    message: z.object({ content: z.string().nullish() }).loose().nullish(),
    response: z.string().nullish(),
    done: z.boolean().default(false),
    done_reason: z.string().optional(),
    total_duration: z.number().optional(),
    load_duration: z.number().optional(),
    prompt_eval_count: z.number().optional(),
    eval_count: z.number().optional(),
    eval_duration: z.number().optional(),
    error: z.string().optional(),
  })
  .loose();

/**
 * Ollama chat and generate, streamed (NDJSON). A model that is not on disk
 * (per /api/tags, or a 404 on the request) is pulled first, with download
 * progress (completed/total summed over the layers) reported as stage
 * `downloading_model` while the job is still `starting`; the job becomes
 * `running` only then. The result carries `load_duration` (ns; large when
 * the model was cold) and the token counts.
 */
export function ollamaConnector(options: OllamaOptions = {}): Connector {
  const config = parseWith(OllamaOptions, options, 'ollama connector options');
  // the options carry the endpoint's fields (base URL, headers, TLS, timeout) under the same names
  const client = new ServiceClient(config.service, config);
  const service = config.service;

  async function onDisk(model: string, ctx: JobContext): Promise<boolean> {
    const tags = await client.json('api/tags', Tags, { signal: ctx.signal });
    const wanted = withTag(model);
    return (tags.models ?? []).some((m) => withTag(m.name) === wanted || (m.model !== undefined && withTag(m.model) === wanted));
  }

  async function pull(model: string, ctx: JobContext): Promise<void> {
    if (!config.pull) {
      throw new JobFailure('infrastructure', `${service}: model ${model} is not on this worker and pulling is off`, { type: 'ModelMissing' });
    }
    ctx.logger.debug({ model }, 'ollama pulling model');
    const response = await client.request('api/pull', { json: { model, stream: true }, signal: ctx.signal });
    if (!response.ok) throw statusFailure(service, 'POST api/pull', response.status, await client.readText(response, ctx.signal, 'api/pull'));
    const layers = new Map<string, { total: number; completed: number }>();
    let success = false;
    // status-only lines (verifying, writing manifest) keep the byte counts: throttling may send only them
    let bytes: { value: number; max: number } | undefined;
    for await (const line of readLines(client, response, { idleMs: config.idleTimeoutMs, signal: ctx.signal, what: 'api/pull stream' })) {
      if (line.trim() === '') continue;
      const progress = parseMessage(service, 'pull progress', PullLine, parseJsonLine(service, line));
      if (progress.error !== undefined) {
        // the registry has no such model: the job asked for something that does not exist
        if (/file does not exist|manifest unknown|not found/i.test(progress.error)) {
          throw new JobFailure('non_retryable', `${service}: cannot pull ${model}: ${progress.error}`, { type: 'ModelNotFound' });
        }
        throw new JobFailure('retryable', `${service}: pulling ${model} failed: ${progress.error}`, { type: 'ModelPullFailed' });
      }
      if (progress.digest !== undefined && progress.total !== undefined && progress.total > 0) {
        layers.set(progress.digest, { total: progress.total, completed: Math.min(progress.completed ?? 0, progress.total) });
        let total = 0;
        let completed = 0;
        for (const layer of layers.values()) {
          total += layer.total;
          completed += layer.completed;
        }
        bytes = { value: completed, max: total };
        ctx.progress({ stage: 'downloading_model', ...bytes, message: `pulling ${model}` });
      } else if (progress.status !== undefined) {
        if (progress.status === 'success') success = true;
        ctx.progress({ stage: 'downloading_model', ...bytes, message: `${model}: ${progress.status}`.slice(0, 1_000) });
      }
    }
    if (!success) throw new JobFailure('retryable', `${service}: the pull of ${model} ended without success`, { type: 'ModelPullFailed' });
  }

  async function generate(job: ClaimedJob, ctx: JobContext, payload: z.output<typeof OllamaPayload>, chat: boolean) {
    const path = chat ? 'api/chat' : 'api/generate';
    return client.request(path, { json: { ...payload, stream: true }, signal: ctx.signal });
  }

  return {
    service,
    id: `${service}@${client.baseUrl.host}`,
    startsItself: true,
    /**
     * Ollama loads a model into memory on a generate request that names it and
     * has no prompt (api/generate, "load a model"): no pull here, a model not on
     * its disk is a 404 and the load is refused.
     */
    async loadModel(model, signal) {
      const startedAt = performance.now();
      const response = await client.request('api/generate', { json: { model, stream: false }, signal, timeoutMs: config.idleTimeoutMs });
      if (response.status === 404) {
        throw new ModelLoadError(`${service}: ${model} is not on its disk (${(await client.readText(response, signal, 'api/generate')).slice(0, 200)})`);
      }
      if (!response.ok) throw statusFailure(service, 'POST api/generate', response.status, await client.readText(response, signal, 'api/generate'));
      const answer = parseMessage(service, 'load answer', LoadAnswer, parseJsonLine(service, await client.readText(response, signal, 'api/generate')));
      const seconds = ((performance.now() - startedAt) / 1_000).toFixed(1);
      const loadNs = answer.load_duration;
      return `${service}: ${model} loaded in ${seconds} s${loadNs !== undefined ? ` (load_duration ${(loadNs / 1e9).toFixed(1)} s)` : ''}`;
    },
    async run(job, ctx) {
      const parsed = OllamaPayload.safeParse(job.payload);
      if (!parsed.success) {
        throw new JobFailure('non_retryable', 'invalid ollama payload: expected { model, messages } or { model, prompt }', { type: 'InvalidPayload' });
      }
      const payload = parsed.data;
      const chat = 'messages' in payload;
      let pulled = false;
      if (!(await onDisk(payload.model, ctx))) {
        await pull(payload.model, ctx);
        pulled = true;
      }
      ctx.progress({ stage: 'loading_model', message: `loading ${payload.model}` });
      let response = await generate(job, ctx, payload, chat);
      if (response.status === 404 && !pulled) {
        // removed between /api/tags and the request: pull it and try once more
        await client.readText(response, ctx.signal, chat ? 'api/chat' : 'api/generate');
        await pull(payload.model, ctx);
        pulled = true;
        response = await generate(job, ctx, payload, chat);
      }
      if (!response.ok) throw statusFailure(service, `POST ${chat ? 'api/chat' : 'api/generate'}`, response.status, await client.readText(response, ctx.signal, 'generate'));
      // the model answers: it is loaded, the job runs from here
      await ctx.start();

      let content = '';
      let chunks = 0;
      let final: z.output<typeof GenerationLine> | undefined;
      for await (const line of readLines(client, response, { idleMs: config.idleTimeoutMs, signal: ctx.signal, what: 'generation stream' })) {
        if (line.trim() === '') continue;
        const chunk = parseMessage(service, 'generation chunk', GenerationLine, parseJsonLine(service, line));
        if (chunk.error !== undefined) {
          throw new JobFailure('retryable', `${service}: generation failed: ${chunk.error}`, { type: 'ServiceError', details: { error: chunk.error } });
        }
        const piece = (chat ? chunk.message?.content : chunk.response) ?? '';
        if (piece) {
          content += piece;
          chunks++;
          ctx.progress({ stage: 'running', value: chunks, message: tail(content) });
        }
        if (chunk.done) {
          final = chunk;
          break;
        }
      }
      if (!final) throw new JobFailure('retryable', `${service}: the stream ended before the generation did`, { type: 'StreamTruncated' });
      return {
        model: final.model ?? payload.model,
        content,
        done_reason: final.done_reason ?? null,
        pulled,
        load_duration: final.load_duration ?? null,
        total_duration: final.total_duration ?? null,
        prompt_eval_count: final.prompt_eval_count ?? null,
        eval_count: final.eval_count ?? null,
      };
    },
  };
}

function withTag(model: string): string {
  return model.includes(':') ? model : `${model}:latest`;
}

function parseJsonLine(service: string, line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    throw protocolError(service, `a stream line is not JSON: ${line.slice(0, 200)}`);
  }
}
