/**
 * A stand-in for a GPU service (ComfyUI, say) for `npm start` and tests: an
 * HTTP server on $PORT that answers GET /ready with 503 while it "loads"
 * (EMP_SIM_WARMUP_MS, default 500) and 200 after, logs a line per request and
 * stops on SIGTERM or when its agent is gone. The simulation connector does the jobs' work; this gives
 * the worker a service to wait for and the supervisor a process to run.
 */
import { createServer } from 'node:http';

const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write(`PORT must be a port number, got '${process.env.PORT ?? ''}'\n`);
  process.exit(2);
}
const warmupMs = Number(process.env.EMP_SIM_WARMUP_MS ?? 500);
const startedAt = Date.now();
const log = (message: string) => process.stdout.write(`${new Date().toISOString()} ${message}\n`);

const server = createServer((request, response) => {
  const ready = Date.now() - startedAt >= warmupMs;
  const status = request.url === '/ready' && !ready ? 503 : request.url === '/ready' || request.url === '/' ? 200 : 404;
  log(`${request.method} ${request.url} ${status}`);
  response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ status: ready ? 'ready' : 'loading' }));
});
server.listen(port, '127.0.0.1', () => log(`simulated service listening on 127.0.0.1:${port} (ready after ${warmupMs} ms)`));
server.on('error', (error) => {
  process.stderr.write(`simulated service: ${error.message}\n`);
  process.exit(1);
});
const stop = (why: string) => {
  log(`${why}: stopping`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.once('SIGTERM', () => stop('SIGTERM'));
// its agent was killed without a chance to stop it (it runs in a process group of its own): do not live on as an orphan
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) stop('agent gone');
}, 1_000).unref();
