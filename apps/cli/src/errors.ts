import { EmpError, type ErrorCode } from '@emp/core';
import { CommanderError } from 'commander';

/** Exit codes (apps/cli/README.md): 0 success, 1 the command failed (or the job did not succeed), 2 bad usage or input. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Errors of the broker that mean the input was wrong, not that something failed. */
const BAD_INPUT = new Set<ErrorCode>(['VALIDATION', 'UNKNOWN_SERVICE', 'PAYLOAD_TOO_LARGE']);

/** A bad flag or argument: reported as `error: <message>`, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** A failure the user can act on (Redis unreachable, job not found): `error: <message>`, exit code 1, no stack. */
export class CommandError extends Error {
  override readonly name = 'CommandError';
}

/**
 * Prints an error the way the CLI reports every failure and returns the exit
 * code. User errors never show a stack trace; unexpected ones do only with
 * LOG_LEVEL=debug (or trace).
 */
export function reportError(error: unknown, stderr: NodeJS.WritableStream = process.stderr): number {
  if (error instanceof CommanderError) {
    // --help and --version exit 0; help shown for a missing command has been printed already
    if (error.exitCode === 0) return EXIT_OK;
    if (error.code !== 'commander.help') {
      const message = error.message.replace(/^error:\s*/i, '').replace(/\s*\(Did you mean (.+)\?\)\s*$/s, '; did you mean $1?');
      stderr.write(`error: ${oneLine(message)} (see --help)\n`);
    }
    return EXIT_USAGE;
  }
  if (error instanceof UsageError || (error instanceof EmpError && BAD_INPUT.has(error.code))) {
    stderr.write(`error: ${oneLine(error.message)}\n`);
    return EXIT_USAGE;
  }
  if (error instanceof CommandError || error instanceof EmpError) {
    stderr.write(`error: ${oneLine(error.message)}\n`);
    return EXIT_FAILURE;
  }
  const message = error instanceof Error ? error.message : String(error);
  stderr.write(`error: ${oneLine(message)}\n`);
  if (error instanceof Error && /^(debug|trace)$/i.test(process.env.LOG_LEVEL ?? '')) stderr.write(`${error.stack}\n`);
  return EXIT_FAILURE;
}

/** An error is one line, whatever the message. */
function oneLine(message: string): string {
  return message.trim().replace(/\s*\n\s*/g, ' ');
}
