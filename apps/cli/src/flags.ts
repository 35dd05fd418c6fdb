import type { Command } from 'commander';
import { z } from 'zod';
import { UsageError } from './errors';

/** A flag holding JSON, validated by `schema`; errors name the path inside the JSON. */
export function jsonFlag<S extends z.ZodType>(schema: S) {
  return z
    .string()
    .transform((text, ctx) => {
      try {
        return JSON.parse(text) as unknown;
      } catch (error) {
        ctx.addIssue({ code: 'custom', message: `not valid JSON (${(error as Error).message})` });
        return z.NEVER;
      }
    })
    .pipe(schema);
}

/** A flag holding a whole number, then validated by `schema`. */
export function intFlag<S extends z.ZodType>(schema: S): z.ZodType<z.output<S>, string> {
  return z
    .string()
    .transform((text, ctx) => {
      if (!/^-?\d+$/.test(text.trim())) {
        ctx.addIssue({ code: 'custom', message: `expected a whole number, got '${text}'` });
        return z.NEVER;
      }
      return Number(text);
    })
    .pipe(schema as unknown as z.ZodType<z.output<S>, number>);
}

/** A flag holding a positive number of seconds, as milliseconds. */
export const secondsFlag = z
  .string()
  .transform((text, ctx) => {
    const seconds = Number(text);
    if (text.trim() === '' || !Number.isFinite(seconds) || seconds <= 0) {
      ctx.addIssue({ code: 'custom', message: `expected a positive number of seconds, got '${text}'` });
      return z.NEVER;
    }
    return Math.round(seconds * 1_000);
  });

/**
 * Validates commander's parsed options; a failure is a UsageError (exit code 2)
 * naming the flag as typed, e.g. `invalid --requirements: pool: a pool name is ...`.
 */
export function parseFlags<S extends z.ZodType>(schema: S, options: Record<string, unknown>): z.output<S> {
  const result = schema.safeParse(options);
  if (result.success) return result.data;
  const messages = result.error.issues.map((issue) => {
    const [flag, ...inner] = issue.path.map(String);
    const name = flag ? `--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}` : 'options';
    return `invalid ${name}: ${inner.length ? `${inner.join('.')}: ` : ''}${issue.message}`;
  });
  throw new UsageError(messages.join('; '));
}

/** The global `--redis <url>` flag, wherever on the command line it was given. */
export function redisFlag(command: Command): string | undefined {
  const value = command.optsWithGlobals().redis as unknown;
  return typeof value === 'string' && value !== '' ? value : undefined;
}
