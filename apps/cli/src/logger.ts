import { pino, type Logger } from 'pino';

/**
 * Structured logs (JSON) on stderr, so stdout stays for what the user asked
 * for (the banner, tables, --json output). Level from LOG_LEVEL, default info.
 */
export function createLogger(name: string, level = process.env.LOG_LEVEL || 'info'): Logger {
  return pino({ name, level }, pino.destination({ dest: 2, sync: true }));
}
