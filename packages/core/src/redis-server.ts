import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';

/** A redis-server process this code started and owns: safe to flush, always stopped. */
export interface RedisProcess {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  readonly dir: string;
  /** the server's process id (with a `wrapper`, the wrapper's, which runs the server in-process) */
  readonly pid: number | undefined;
  /** Freezes the server (SIGSTOP): connections stay open and nothing is answered, as in a stalled or partitioned Redis. */
  pause(): void;
  /** Thaws a paused server (SIGCONT); it then serves what its clients sent meanwhile. */
  resume(): void;
  stop(): Promise<void>;
}

export interface StartRedisOptions {
  /** Folder for data files; a fresh temporary folder when omitted (and removed on stop). */
  dir?: string;
  /** Port to listen on; a free loopback port when omitted. */
  port?: number;
  /** Append-only file for durability (the embedded server uses it; tests usually do not need it). */
  appendonly?: boolean;
  /** Extra `--flag value` arguments, e.g. ['--cluster-enabled', 'yes']. */
  args?: string[];
  /** Binary to run; `redis-server` on PATH by default. */
  binary?: string;
  /** A command to run the server under, e.g. ['valgrind', '--tool=callgrind']: it gets the binary and its arguments. */
  wrapper?: string[];
  /** How long the server may take to answer PING after it starts (default 10 s; a wrapper may slow it). */
  readyTimeoutMs?: number;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        reject(new Error('could not read the port of a probe socket'));
        return;
      }
      server.close(() => resolve(address.port));
    });
  });
}

/** Whether nothing listens on `port` on loopback now. */
export async function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RedisProcess> {
  const ownsDir = options.dir === undefined;
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'emp-redis-')));
  const port = options.port ?? (await freePort());
  const host = '127.0.0.1';
  const args = [
    '--port', String(port),
    '--bind', host,
    '--dir', dir,
    '--save', '',
    '--appendonly', options.appendonly ? 'yes' : 'no',
    '--protected-mode', 'no',
    '--daemonize', 'no',
    '--logfile', '',
    '--loglevel', 'warning',
    ...(options.args ?? []),
  ];
  const binary = options.binary ?? 'redis-server';
  const [command, ...commandArgs] = options.wrapper?.length ? [...options.wrapper, binary, ...args] : [binary, ...args];
  const child = spawn(command!, commandArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));

  await waitUntilReady(host, port, child, exited, spawnError, () => output, options.readyTimeoutMs ?? 10_000);

  let stopped = false;
  return {
    host,
    port,
    url: `redis://${host}:${port}`,
    dir,
    pid: child.pid,
    pause() {
      child.kill('SIGSTOP');
    },
    resume() {
      child.kill('SIGCONT');
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      child.kill('SIGCONT'); // a paused server would not act on SIGTERM
      await stopProcess(child, exited);
      if (ownsDir) await rm(dir, { recursive: true, force: true });
    },
  };
}

async function waitUntilReady(
  host: string,
  port: number,
  child: ChildProcess,
  exited: Promise<number | null>,
  spawnError: Promise<Error>,
  output: () => string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let failure: Error | undefined;
  void exited.then((code) => (failure ??= new Error(`redis-server exited with code ${code}: ${output().trim()}`)));
  void spawnError.then((error) => (failure ??= new Error(`could not run redis-server (is it on PATH?): ${error.message}`)));
  while (Date.now() < deadline) {
    if (failure) throw failure;
    const probe = new Redis({ host, port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      if ((await probe.ping()) === 'PONG') return;
    } catch {
      // not listening yet
    } finally {
      probe.disconnect();
    }
    await sleep(20);
  }
  child.kill('SIGKILL');
  throw failure ?? new Error(`redis-server on port ${port} did not answer within ${timeoutMs / 1000} s: ${output().trim()}`);
}

async function stopProcess(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}
