import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { z } from 'zod';
import { withBroker } from '../connection';
import { parseFlags, redisFlag, secondsFlag } from '../flags';
import { FleetActivity } from '../fleet-activity';
import { clockTime, duration } from '../format';
import { TerminalScreen } from '../terminal-screen';
import { readTopSnapshot, renderTopFrame } from '../top-view';

const TopFlags = z.object({ interval: secondsFlag, pool: z.string().min(1).optional(), once: z.boolean().default(false) });

/**
 * `emp top`: the fleet on one screen for operators without a browser, redrawn
 * every --interval: per pool its throughput, workers and machines by state and
 * its queues per service; then the recent failures. On a terminal it takes the
 * whole window until q or Ctrl-C; otherwise (a pipe, a log) it prints a plain
 * frame per interval; --once prints one and exits.
 */
export function registerTop(program: Command): void {
  program
    .command('top')
    .description('a live one-screen view of pools, queues, workers, machines, throughput and recent failures, redrawn until q or Ctrl-C')
    .option('--pool <name>', 'only this pool')
    .option('--interval <seconds>', 'seconds between frames', '2')
    .option('--once', 'print one frame and exit (for scripts)')
    .action(async (options: Record<string, unknown>, command: Command) => {
      const flags = parseFlags(TopFlags, options);
      await withBroker(redisFlag(command), async (broker) => {
        const activity = new FleetActivity(broker);
        const errorMessages = new Map<string, string>();
        const frame = async (hint: string) => {
          const snapshot = await readTopSnapshot(broker, activity, flags.pool, errorMessages, { wholeHour: flags.once });
          return renderTopFrame(snapshot, `emp top  ${clockTime(snapshot.now).slice(0, 8)}${flags.pool ? `  pool ${flags.pool}` : ''}${hint}`);
        };
        if (flags.once) {
          process.stdout.write(`${(await frame('')).join('\n')}\n`);
          return;
        }
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        const every = `  every ${duration(flags.interval)}`;
        const screen = process.stdout.isTTY ? new TerminalScreen(process.stdout, process.stdin, onSignal) : undefined;
        try {
          while (!stop.signal.aborted) {
            if (screen) screen.draw(await frame(`${every}  (q quits)`));
            else process.stdout.write(`${(await frame(every)).join('\n')}\n\n`);
            await sleep(flags.interval, undefined, { signal: stop.signal }).catch(() => undefined);
          }
        } finally {
          screen?.close();
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      });
    });
}
