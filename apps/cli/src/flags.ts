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

/** The forms a time flag takes (`emp jobs --since/--until`, `emp webhooks recover --since`). */
export const TIME_FORMS = 'an ISO 8601 time, ms since the epoch, or a duration ago (90s, 15m, 2h, 3d)';

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** A time flag (TIME_FORMS) as ms since the epoch; undefined when it is none of those forms. */
export function parseInstant(text: string, now = Date.now()): number | undefined {
  const trimmed = text.trim();
  const ago = /^(\d+)\s*([smhd])$/.exec(trimmed);
  if (ago) return now - Number(ago[1]) * UNIT_MS[ago[2] as keyof typeof UNIT_MS];
  const ms = /^\d+$/.test(trimmed) ? Number(trimmed) : Date.parse(trimmed);
  return Number.isSafeInteger(ms) && ms >= 0 ? ms : undefined;
}

/** A flag holding a time (TIME_FORMS), as ms since the epoch. */
export const instantFlag = z.string().transform((text, ctx) => {
  const ms = parseInstant(text);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected ${TIME_FORMS}, got '${text}'` });
    return z.NEVER;
  }
  return ms;
});

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

/**
 * Validates a command's positional arguments; a failure is a UsageError (exit
 * code 2) naming the argument as the usage shows it, e.g. `invalid <count>: a pool has at least one shard`.
 */
export function parseArguments<S extends z.ZodType>(schema: S, args: Record<string, unknown>): z.output<S> {
  const result = schema.safeParse(args);
  if (result.success) return result.data;
  const messages = result.error.issues.map((issue) => {
    const [name, ...inner] = issue.path.map(String);
    return `invalid ${name ? `<${name}>` : 'arguments'}: ${inner.length ? `${inner.join('.')}: ` : ''}${issue.message}`;
  });
  throw new UsageError(messages.join('; '));
}

/** The global `--redis <url>` flag, wherever on the command line it was given. */
export function redisFlag(command: Command): string | undefined {
  const value = command.optsWithGlobals().redis as unknown;
  return typeof value === 'string' && value !== '' ? value : undefined;
}
