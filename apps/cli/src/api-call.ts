import { ApiErrorBody } from '@emp/core';
import type { z } from 'zod';
import { CommandError, UsageError } from './errors';

/** Where a command that talks to the HTTP API finds it (`--api`, `--api-key`). */
export interface ApiFlags {
  api: string;
  apiKey?: string;
}

/** One call of the HTTP API; its answer parsed by `schema`, or a CommandError (UsageError for a 400) saying what the API said. */
export async function callApi<S extends z.ZodType>(flags: ApiFlags, method: string, path: string, schema: S, body?: unknown): Promise<z.output<S>> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (flags.apiKey) headers.authorization = `Bearer ${flags.apiKey}`; // an empty EMP_API_KEY is no key
  let response: Response;
  try {
    response = await fetch(`${flags.api.replace(/\/+$/, '')}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new CommandError(`cannot reach the API at ${flags.api} (--api, EMP_API_URL): ${((error as Error).cause as Error | undefined)?.message ?? (error as Error).message}`);
  }
  const answer: unknown = response.status === 204 ? null : await response.json().catch(() => undefined);
  if (!response.ok) {
    const failure = ApiErrorBody.safeParse(answer);
    const message = `the API answered ${response.status}${failure.success ? ` ${failure.data.error.code}: ${failure.data.error.message}` : ''}`;
    if (response.status === 401) throw new CommandError(`${message} (pass --api-key or set EMP_API_KEY)`);
    throw response.status === 400 ? new UsageError(message) : new CommandError(message);
  }
  return schema.parse(answer);
}
