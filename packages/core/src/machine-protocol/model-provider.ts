/**
 * The machine agent's model routes as a worker sees them: a ModelProvider
 * makes a job's models ready on local disk, and httpModelProvider is its
 * client for the agent's health port (`POST /models/ensure`, `/models/release`).
 */
import { z } from 'zod';
import { ModelDownload, ModelOnDisk } from '../registry';
import { ModelName } from '../requirements';
import { traceHeaders } from '../tracing';
import { parseWith } from '../validation';

/** One model's download, as a provider reports it while a job waits. */
export const ModelProgress = z
  .object({
    model: ModelName,
    /** bytes of the file on disk so far (a resumed download starts at what it already had) */
    received: z.number().int().nonnegative(),
    /** the file's size, once the server has said it */
    total: z.number().int().positive().optional(),
  })
  .strict();
export type ModelProgress = z.infer<typeof ModelProgress>;

/**
 * Why models could not be made ready: `unknown_model` (not in this machine's
 * catalog), `download_failed` (unreachable, refused or cut off for good),
 * `checksum_mismatch` (the file is not the one configured), `cache_full` (the
 * disk budget cannot hold it without evicting models in use).
 */
export const MODEL_ERROR_CODES = ['unknown_model', 'download_failed', 'checksum_mismatch', 'cache_full'] as const;
export type ModelErrorCode = (typeof MODEL_ERROR_CODES)[number];

export class ModelError extends Error {
  override readonly name = 'ModelError';
  constructor(
    readonly code: ModelErrorCode,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
  }
}

/** Unpins what `ensure` pinned; calling it again does nothing. */
export type ReleaseModels = () => Promise<void>;

/**
 * Makes models available on local disk for a job: downloads what is missing
 * (reporting progress) and pins all of them, so that none is evicted, until the
 * returned release function is called. Rejects with a ModelError, or with the
 * signal's reason once it aborts.
 */
export interface ModelProvider {
  ensure(names: readonly string[], onProgress: (progress: ModelProgress) => void, signal?: AbortSignal): Promise<ReleaseModels>;
  /**
   * The models on this machine's disk and those downloading now, where the provider
   * can tell: the worker reports them, and claims prefer jobs whose models are here
   * (docs/broker.md, "Model affinity").
   */
  list?(signal?: AbortSignal): Promise<ModelHoldings>;
}

export interface ModelHoldings {
  on_disk: string[];
  downloading: string[];
}

/** The part of the agent's `GET /models` answer a worker reads (the cache's contents). */
const ModelCacheListing = z.looseObject({
  models: z.array(ModelOnDisk),
  downloads: z.array(ModelDownload).default([]),
});

// ---------------------------------------------------------------- the agent's endpoint

/** One line of the NDJSON stream `POST /models/ensure` answers with. */
export const EnsureLine = z.discriminatedUnion('type', [
  ModelProgress.extend({ type: z.literal('progress') }).strict(),
  z.object({ type: z.literal('ready'), lease: z.string().min(1).max(100), models: z.array(ModelName) }).strict(),
  z.object({ type: z.literal('error'), code: z.enum(MODEL_ERROR_CODES), message: z.string() }).strict(),
]);
export type EnsureLine = z.infer<typeof EnsureLine>;

export const EnsureRequest = z.object({ models: z.array(ModelName).min(1).max(32) }).strict();
export const ReleaseRequest = z.object({ lease: z.string().min(1).max(100) }).strict();

/**
 * A ModelProvider that asks the machine agent (its health port, on loopback)
 * over HTTP: `POST /models/ensure` streams progress lines, then `ready` with a
 * lease; the agent holds the pins while that response stays open, and the
 * release function posts `/models/release` and closes it. A worker that dies
 * closes the connection, which releases its pins too.
 */
export function httpModelProvider(options: { baseUrl: string }): ModelProvider {
  const base = new URL(options.baseUrl.endsWith('/') ? options.baseUrl : `${options.baseUrl}/`);
  return {
    async list(signal) {
      const { request } = await import('undici');
      const response = await request(new URL('models', base), { signal });
      if (response.statusCode !== 200) {
        const text = await response.body.text().catch(() => '');
        throw new Error(`GET /models answered ${response.statusCode}: ${text.slice(0, 500)}`);
      }
      const listing = parseWith(ModelCacheListing, await response.body.json(), 'answer of GET /models');
      return { on_disk: listing.models.map((m) => m.name), downloading: listing.downloads.map((d) => d.model) };
    },
    async ensure(names, onProgress, signal) {
      // loaded on first use: only a worker process in a machine with a model cache asks, and every `emp` command loads the core
      const { request } = await import('undici');
      // the response stays open for the whole job, with no bytes flowing: no body timeout
      const response = await request(new URL('models/ensure', base), {
        method: 'POST',
        // the active span's (a worker's job.models) traceparent: the agent's model.download spans are its children; none with tracing off
        headers: { 'content-type': 'application/json', ...traceHeaders() },
        body: JSON.stringify({ models: names }),
        signal,
        bodyTimeout: 0,
        headersTimeout: 0,
      });
      const { body } = response;
      // destroying the body (release, failure) emits an abort error that nobody needs to hear
      body.on('error', () => undefined);
      if (response.statusCode !== 200) {
        const text = await body.text().catch(() => '');
        throw new Error(`POST /models/ensure answered ${response.statusCode}: ${text.slice(0, 500)}`);
      }
      let lease: string | undefined;
      try {
        body.setEncoding('utf8');
        // leaving the loop at `ready` must not destroy the body: the open response holds the pins
        for await (const line of ndjsonLines(body.iterator({ destroyOnReturn: false }))) {
          const message = parseWith(EnsureLine, line, 'line from POST /models/ensure');
          if (message.type === 'progress') {
            const { type: _type, ...progress } = message;
            onProgress(progress);
          } else if (message.type === 'error') {
            throw new ModelError(message.code, message.message);
          } else {
            lease = message.lease;
            break;
          }
        }
      } catch (error) {
        body.destroy();
        if (signal?.aborted) throw signal.reason;
        throw error;
      }
      if (lease === undefined) {
        body.destroy();
        throw new Error('POST /models/ensure ended before the models were ready');
      }
      let released: Promise<void> | undefined;
      return () => {
        released ??= request(new URL('models/release', base), {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ lease }),
        })
          .then((answer) => answer.body.dump())
          // closing the ensure response releases the pins as well, so a failed post loses nothing
          .catch(() => undefined)
          .finally(() => body.destroy());
        return released;
      };
    },
  };
}

/** The JSON values of a newline-delimited JSON stream, one per non-empty line; stops at the caller's `break`. */
async function* ndjsonLines(stream: AsyncIterable<string>): AsyncGenerator<unknown> {
  let pending = '';
  for await (const chunk of stream) {
    pending += chunk;
    let end: number;
    while ((end = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, end).trim();
      pending = pending.slice(end + 1);
      if (line) yield parseLine(line);
    }
  }
  if (pending.trim()) yield parseLine(pending.trim());
}

function parseLine(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    throw new Error(`POST /models/ensure sent a line that is not JSON: ${line.slice(0, 200)}`);
  }
}
