import type { ReadableStreamDefaultReader, ReadableStreamReadResult } from 'node:stream/web';
import type { Response } from 'undici';
import { JobFailure } from './connector';
import type { ServiceClient } from './service-client';

/** A line longer than this is not a protocol we speak (and would exhaust memory). */
const MAX_LINE_CHARS = 8 * 1024 * 1024;

/**
 * The lines of a streamed body (NDJSON, SSE), `\r\n` or `\n` separated. A
 * stall of `idleMs` without a byte is a retryable ServiceTimeout; a broken
 * connection is classified by the client; the job's abort cancels the body.
 */
export async function* readLines(
  client: ServiceClient,
  response: Response,
  options: { idleMs: number; signal: AbortSignal; what: string },
): AsyncGenerator<string> {
  const body = response.body;
  if (!body) return;
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const chunk = await readWithin(client, reader, options);
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      let newline = buffer.indexOf('\n');
      while (newline >= 0) {
        yield buffer.slice(0, newline).replace(/\r$/, '');
        buffer = buffer.slice(newline + 1);
        newline = buffer.indexOf('\n');
      }
      if (buffer.length > MAX_LINE_CHARS) {
        throw new JobFailure('retryable', `${client.service}: ${options.what}: a line of over ${MAX_LINE_CHARS} characters`, { type: 'ProtocolError' });
      }
    }
    buffer += decoder.decode();
    if (buffer.length > 0) yield buffer.replace(/\r$/, '');
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

async function readWithin(
  client: ServiceClient,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  options: { idleMs: number; signal: AbortSignal; what: string },
): Promise<ReadableStreamReadResult<Uint8Array>> {
  let timer: NodeJS.Timeout | undefined;
  const idle = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new JobFailure('retryable', `${client.service}: ${options.what}: no data for ${options.idleMs} ms`, { type: 'ServiceTimeout' })),
      options.idleMs,
    );
  });
  try {
    return await Promise.race([reader.read(), idle]);
  } catch (error) {
    throw client.transportFailure(error, options.signal, options.what);
  } finally {
    clearTimeout(timer);
  }
}

export interface ServerSentEvent {
  event: string;
  data: string;
}

/** Server-sent events (the `data:` lines of one event joined by `\n`); comments and ids are skipped. */
export async function* readServerSentEvents(lines: AsyncIterable<string>): AsyncGenerator<ServerSentEvent> {
  let event = 'message';
  let data: string[] = [];
  for await (const line of lines) {
    if (line === '') {
      if (data.length > 0) yield { event, data: data.join('\n') };
      event = 'message';
      data = [];
      continue;
    }
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'data') data.push(value);
    else if (field === 'event') event = value;
  }
  if (data.length > 0) yield { event, data: data.join('\n') };
}

/** The tail of a growing text, for a progress message (which is at most 1,000 characters). */
export function tail(text: string, max = 1_000): string {
  return text.length <= max ? text : `…${text.slice(text.length - max + 1)}`;
}
