import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { type IncomingMessage, get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { ModelError } from '@emp/core';
import type { Logger } from 'pino';

export interface DownloadOptions {
  url: string;
  /** the partial file: appended to, and resumed from when it already exists */
  part: string;
  /** after the headers and every chunk; may throw (a ModelError) to stop the download, e.g. when the budget is exceeded */
  onData: (received: number, total: number | undefined) => void;
  signal: AbortSignal;
  /** attempts in a row that bring no new bytes before giving up */
  retries: number;
  /** first wait between attempts, doubled each time */
  retryDelayMs: number;
  /** a connection silent this long is cut and resumed */
  stallTimeoutMs: number;
  logger: Logger;
}

export interface Downloaded {
  size: number;
  sha256: string;
}

const MAX_REDIRECTS = 5;
/** answers worth another try: the server or something in between is having a moment */
const RETRYABLE_STATUS = new Set([408, 425, 429, 500, 502, 503, 504]);

/**
 * Downloads `url` into `part`, resuming from what the file already holds with a
 * Range request (after hashing it), and again after a dropped connection. The
 * sha256 is computed over exactly the bytes written. A server that ignores the
 * range (200) or whose content changed (If-Range) starts the file over.
 */
export async function downloadToPart(options: DownloadOptions): Promise<Downloaded> {
  const { url, part, signal, logger } = options;
  const file = await open(part, 'a');
  try {
    let received = (await file.stat()).size;
    let hash = createHash('sha256');
    if (received > 0) await hashInto(part, hash);
    const restart = async () => {
      await file.truncate(0);
      hash = createHash('sha256');
      received = 0;
    };
    let total: number | undefined;
    let validator: string | undefined;
    let failures = 0;
    for (;;) {
      signal.throwIfAborted();
      const before = received;
      let response: IncomingMessage | undefined;
      try {
        const headers: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'emp-machine' };
        if (received > 0) {
          headers.range = `bytes=${received}-`;
          if (validator) headers['if-range'] = validator;
        }
        response = await fetchFollowingRedirects(new URL(url), headers, signal, options.stallTimeoutMs);
        const status = response.statusCode ?? 0;
        if (status === 416 && received > 0) {
          response.resume();
          const size = contentRange(response.headers['content-range'])?.total;
          if (size === received) {
            total = size; // the part already holds the whole file
            break;
          }
          await restart();
          throw new Error(`the server refused the range from byte ${before} (its file has ${size ?? 'an unknown number of'} bytes)`);
        }
        if (status === 200) {
          if (received > 0) {
            logger.info({ url, had: received }, 'the server sent the whole file instead of the rest; starting over');
            await restart();
          }
          total = contentLength(response.headers['content-length']);
        } else if (status === 206) {
          const range = contentRange(response.headers['content-range']);
          if (!range || range.start !== received) {
            response.resume();
            await restart();
            throw new Error(`the server answered a range other than the one asked for (${response.headers['content-range'] ?? 'none'})`);
          }
          total = range.total ?? total;
        } else {
          response.resume();
          const message = `GET ${url} answered ${status}`;
          if (RETRYABLE_STATUS.has(status)) throw new Error(message);
          throw new ModelError('download_failed', message);
        }
        validator = strongValidator(response.headers) ?? validator;
        options.onData(received, total);
        for await (const chunk of response as AsyncIterable<Buffer>) {
          await file.write(chunk);
          hash.update(chunk);
          received += chunk.length;
          options.onData(received, total);
        }
        if (total !== undefined && received > total) {
          throw new ModelError('download_failed', `GET ${url} sent ${received} bytes, more than the ${total} it announced`);
        }
        if (total !== undefined && received < total) throw new Error(`the connection closed at byte ${received} of ${total}`);
        break;
      } catch (error) {
        response?.destroy();
        if (signal.aborted) throw signal.reason;
        if (error instanceof ModelError) throw error;
        failures = received > before ? 1 : failures + 1;
        const message = error instanceof Error ? error.message : String(error);
        if (failures > options.retries) {
          throw new ModelError('download_failed', `GET ${url} failed ${failures} times in a row without progress; last: ${message}`, { cause: error });
        }
        logger.warn({ url, received, total, attempt: failures, err: message }, 'model download interrupted; resuming');
        // aborted while waiting: the signal's reason (why it stopped), not the timer's generic AbortError
        await sleep(options.retryDelayMs * 2 ** (failures - 1), undefined, { signal }).catch((error: unknown) => {
          throw signal.aborted ? signal.reason : error;
        });
      }
    }
    return { size: received, sha256: hash.digest('hex') };
  } finally {
    await file.close();
  }
}

/** Resolves with the final response (after up to MAX_REDIRECTS redirects) once its headers arrive. */
function fetchFollowingRedirects(url: URL, headers: Record<string, string>, signal: AbortSignal, stallTimeoutMs: number, hops = 0): Promise<IncomingMessage> {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return Promise.reject(new ModelError('download_failed', `${url.href}: only http and https URLs can be downloaded`));
  }
  return new Promise<IncomingMessage>((resolve, reject) => {
    const get = url.protocol === 'https:' ? httpsGet : httpGet;
    const request = get(url, { headers, signal }, (response) => {
      const location = response.headers.location;
      const status = response.statusCode ?? 0;
      if (status >= 300 && status < 400 && location) {
        response.resume();
        if (hops >= MAX_REDIRECTS) {
          reject(new ModelError('download_failed', `${url.href}: more than ${MAX_REDIRECTS} redirects`));
          return;
        }
        fetchFollowingRedirects(new URL(location, url), headers, signal, stallTimeoutMs, hops + 1).then(resolve, reject);
        return;
      }
      resolve(response);
    });
    request.setTimeout(stallTimeoutMs, () => request.destroy(new Error(`no data for ${stallTimeoutMs} ms`)));
    request.on('error', reject);
  });
}

async function hashInto(path: string, hash: Hash): Promise<void> {
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
}

function contentLength(header: string | undefined): number | undefined {
  if (header === undefined || !/^\d+$/.test(header)) return undefined;
  return Number(header);
}

/** `bytes 100-999/1000`, `bytes 100-999/*` or `bytes *\/1000`. */
function contentRange(header: string | undefined): { start?: number; total?: number } | undefined {
  const match = header?.match(/^bytes (?:(\d+)-\d+|\*)\/(\d+|\*)$/);
  if (!match) return undefined;
  return {
    ...(match[1] !== undefined && { start: Number(match[1]) }),
    ...(match[2] !== '*' && { total: Number(match[2]) }),
  };
}

/** If-Range takes an ETag only when it is strong (a weak one would never match). */
function strongValidator(headers: IncomingMessage['headers']): string | undefined {
  const etag = headers.etag;
  if (etag && !etag.startsWith('W/')) return etag;
  return headers['last-modified'];
}
