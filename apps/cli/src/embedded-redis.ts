import { closeSync, openSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, isPortFree, startRedis } from '@emp/core/redis-server';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { REDIS_URL_FILE } from './connection';
import { CommandError } from './errors';

/** Wraps redis-server so that the terminal's Ctrl-C does not stop it before the workers are done with it. */
const OWN_SESSION_LAUNCHER = fileURLToPath(new URL('./redis-server-own-session.sh', import.meta.url));

export interface EmbeddedRedis {
  url: string;
  /** the folder holding its append-only file */
  dir: string;
  stop(): Promise<void>;
}

export interface EmbeddedRedisOptions {
  /** `.emp` folder: data in `<stateDir>/redis`, URL in `<stateDir>/redis.url` */
  stateDir: string;
  /** preferred port; a free one is used when it is taken */
  port: number;
  logger: Logger;
}

/**
 * Starts the local stack's own redis-server with its data (AOF, so a restart
 * keeps every acknowledged job) under `.emp/redis`, and records its URL in
 * `.emp/redis.url` for `emp` commands in other terminals.
 */
export async function startEmbeddedRedis(options: EmbeddedRedisOptions): Promise<EmbeddedRedis> {
  const stateDir = resolve(options.stateDir);
  const dir = join(stateDir, 'redis');
  const urlFile = join(stateDir, REDIS_URL_FILE);
  const lockFile = join(stateDir, 'start.pid');
  await mkdir(dir, { recursive: true });
  acquireLock(lockFile);
  try {
    await stopLeftover(urlFile, dir, options.logger);
    const port = (await isPortFree(options.port)) ? options.port : await freePort();
    if (port !== options.port) options.logger.warn({ wanted: options.port, port }, 'redis port taken; using a free one');
    const server = await startRedis({ dir, port, appendonly: true, binary: OWN_SESSION_LAUNCHER });
    writeFileSync(urlFile, `${server.url}\n`);
    return {
      url: server.url,
      dir,
      async stop() {
        rmSync(urlFile, { force: true });
        await server.stop();
        rmSync(lockFile, { force: true });
      },
    };
  } catch (error) {
    rmSync(lockFile, { force: true });
    throw error;
  }
}

/** Two servers on one append-only file would corrupt it: one `emp start` per folder. */
function acquireLock(lockFile: string): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lockFile, 'wx');
      writeFileSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const pid = Number(readFileSync(lockFile, 'utf8').trim());
      if (pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new CommandError(
          `another \`emp start\` (pid ${pid}) is running with its Redis in ${lockFile.replace(/start\.pid$/, '')}; stop it first, or set REDIS_URL to use another Redis`,
        );
      }
      rmSync(lockFile, { force: true }); // its owner is gone
    }
  }
  throw new CommandError(`could not take the lock ${lockFile}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * An `emp start` that was killed hard (SIGKILL) leaves its redis-server running
 * on our data folder; shut it down (AOF is flushed on SHUTDOWN) before starting
 * a fresh one. A Redis with any other data folder is not ours and is left alone.
 */
async function stopLeftover(urlFile: string, dir: string, logger: Logger): Promise<void> {
  let url: string;
  try {
    url = readFileSync(urlFile, 'utf8').trim();
  } catch {
    return;
  }
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1_000 });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    const [, leftoverDir] = (await redis.config('GET', 'dir')) as [string, string];
    if (realpathSync(leftoverDir) !== realpathSync(dir)) return; // redis reports its folder with symlinks resolved
    logger.warn({ url }, 'stopping the embedded redis-server a previous run left behind');
    await redis.call('SHUTDOWN').catch(() => undefined); // the connection closes as it shuts down
    for (let i = 0; i < 100 && (await answers(url)); i++) await sleep(50);
  } catch {
    // nobody answers there: nothing left over
  } finally {
    redis.disconnect();
    rmSync(urlFile, { force: true });
  }
}

async function answers(url: string): Promise<boolean> {
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 500 });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    return (await probe.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}
