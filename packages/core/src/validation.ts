import type { z } from 'zod';
import { ValidationError } from './errors';

/** Parses `input` with `schema`, or throws a ValidationError naming each field path and reason. */
export function parseWith<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  throw new ValidationError(
    what,
    result.error.issues.map((issue) => ({
      path: issue.path.map(String).join('.'),
      message: issue.message,
    })),
  );
}

/** JSON.parse, or null for text that is not JSON (a Redis field written by something else: the schema then refuses it). */
export function parseJsonOrNull(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}
