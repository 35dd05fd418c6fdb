import { requestedCommand } from './command-table';
import { reportError } from './errors';
import { empProgram } from './program';

// an error no command awaited is still reported in the one style, then ends the process as Node would
const crash = (error: unknown) => process.exit(reportError(error));
process.on('uncaughtException', crash);
process.on('unhandledRejection', crash);

try {
  // only the command the line names is loaded: `emp --help` loads commander and the command table, `emp queues` not the API
  const program = await empProgram(requestedCommand(process.argv.slice(2)));
  await program.parseAsync(process.argv);
} catch (error) {
  process.exitCode = reportError(error);
}
