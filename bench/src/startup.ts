import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { startRedis } from '@emp/core/redis-server';
import { formatTable } from './stats';

/**
 * `npm run bench:startup`: how long the processes take to start, each run a
 * fresh (cold) process, medians of `--runs`: `emp --help`, `emp queues`
 * against a Redis, and a worker process from spawn to ready to claim (its
 * 'ready' message to the supervisor). Each is timed twice: from the build
 * (dist/, plain node: how `emp` and the machine agent run) and from the
 * TypeScript sources (through tsx: `npm run dev`). Run `npm run build` first.
 * A bare `node -e ''` is timed alongside, and the load average printed: on a
 * shared machine both say how much of a figure is the machine's.
 */

const { values: flags } = parseArgs({ options: { runs: { type: 'string', default: '5' } }, strict: true });
const runs = Number(flags.runs);
if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer, got ${flags.runs}`);

const root = fileURLToPath(new URL('../../', import.meta.url));
const dist = join(root, 'dist');
if (!existsSync(join(dist, 'emp.js'))) throw new Error('dist/ is missing: run `npm run build` first');

const ways = {
  build: { emp: [join(dist, 'emp.js')], worker: [join(dist, 'worker.js')] },
  sources: { emp: ['--import', 'tsx', join(root, 'apps/cli/src/main.ts')], worker: ['--import', 'tsx', join(root, 'apps/worker/src/main.ts')] },
};

/** Milliseconds from spawn to exit; a failing command fails the bench. */
function timeCommand(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const started = performance.now();
  const child = spawn(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve, reject) =>
    child.once('exit', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`node ${args.join(' ')} exited ${code}: ${stderr}`)))),
  );
}

/** Milliseconds from spawn to the worker's 'ready' message; it is then stopped. */
function timeWorkerReady(args: string[], redisUrl: string, index: number): Promise<number> {
  const config = {
    redis_url: redisUrl,
    worker_id: `bench.startup-${index}`,
    pool: 'startup',
    connectors: [{ type: 'simulation', options: {} }],
    log_level: 'warn',
  };
  const started = performance.now();
  const child = spawn(process.execPath, args, { cwd: root, env: { ...process.env, EMP_WORKER_CONFIG: JSON.stringify(config) }, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    let readyAfter: number | undefined;
    child.on('message', (message: { type?: string }) => {
      if (message.type !== 'ready') return;
      readyAfter = performance.now() - started;
      child.kill('SIGTERM');
    });
    void exited.then(() => (readyAfter === undefined ? reject(new Error(`the worker exited before it was ready: ${stderr}`)) : resolve(readyAfter)));
  });
}

async function median(measure: (run: number) => Promise<number>): Promise<number> {
  const times: number[] = [];
  for (let run = 0; run < runs; run++) times.push(await measure(run));
  times.sort((a, b) => a - b);
  return times[Math.floor((times.length - 1) / 2)]!;
}

const loadBefore = loadavg()[0]!;
const redis = await startRedis();
try {
  const env = { ...process.env, REDIS_URL: redis.url, LOG_LEVEL: 'warn' };
  // loads the function library once, so that no timed run pays for it
  await timeCommand(ways.build.emp.concat('queues'), env);
  const rows: string[][] = [[`node -e ''`, `${Math.round(await median(() => timeCommand(['-e', ''], env)))} ms`, '', '']];
  for (const [name, target] of [['emp --help', 300], ['emp queues', 500], ['worker ready', 1000]] as const) {
    const cells = [];
    for (const way of [ways.build, ways.sources]) {
      const ms =
        name === 'worker ready'
          ? await median((run) => timeWorkerReady(way.worker, redis.url, run))
          : await median(() => timeCommand([...way.emp, ...name.split(' ').slice(1)], env));
      cells.push(`${Math.round(ms)} ms`);
    }
    rows.push([name, ...cells, `< ${target} ms`]);
  }
  const load = `${loadBefore.toFixed(2)} at the start, ${loadavg()[0]!.toFixed(2)} at the end`;
  process.stdout.write(`cold starts, median of ${runs} (1-minute load average ${load}, ${availableParallelism()} cores)\n${formatTable(['', 'build (node dist/)', 'sources (tsx)', 'target'], rows)}\n`);
} finally {
  await redis.stop();
}
