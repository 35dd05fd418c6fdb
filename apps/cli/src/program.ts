import { Command, Help } from 'commander';
import { COMMANDS } from './command-table';
import { EMP_VERSION } from './version';

/**
 * `emp`: start the local stack or a machine agent, submit and follow jobs,
 * inspect queues, workers and machines, manage API keys, sign asset URLs.
 * Every command is listed (from the command table); only the module of the
 * command `only` names is loaded and registered in full (`'all'`: every one).
 */
export async function empProgram(only: string | undefined): Promise<Command> {
  const program = new Command('emp')
    .description('EMP Job Queue: run the local stack, submit and follow jobs, inspect queues and workers')
    .version(EMP_VERSION, '-V, --version', 'print the version')
    .option('--redis <url>', 'Redis to use (default: REDIS_URL, else the one `npm start` recorded in .emp/redis.url)')
    // commander's own errors (unknown flag, missing argument) are thrown, not printed: reportError prints every error alike
    .configureOutput({ outputError: () => undefined })
    .exitOverride();
  // a command not loaded stands in the listing as the table describes it
  const listed = new Map<Command, string>();
  for (const entry of COMMANDS) {
    if (only === 'all' || entry.name === only) (await entry.load())(program);
    else listed.set(program.command(entry.name).description(entry.description), [entry.name, entry.usage].filter(Boolean).join(' '));
  }
  const help = new Help();
  program.configureHelp({ subcommandTerm: (command) => listed.get(command) ?? help.subcommandTerm(command) });
  return program;
}
