/**
 * A child process that runs one policy for the parallel runner (parallel.ts):
 * it takes one RunRequest over IPC, answers one RunReply, and exits.
 */
import { type RunReply, type RunRequest, runRequest } from './parallel';

process.once('message', (request: RunRequest) => {
  runRequest(request).then(
    (report) => reply({ type: 'report', report }, 0),
    (error: Error) => reply({ type: 'error', message: error.message, stack: error.stack }, 1),
  );
});

/** The run has stopped its redis-server by now: once the reply is out, nothing is left to wait for. */
function reply(message: RunReply, code: number): void {
  process.send!(message, () => process.exit(code));
}
