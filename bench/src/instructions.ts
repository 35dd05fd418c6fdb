import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { startRedis } from '@emp/core/redis-server';
import { Redis } from 'ioredis';
import { bullmqSystem } from './bullmq-system';
import { empSystem } from './emp-system';
import { formatTable } from './stats';
import type { BenchSystem } from './system';

/**
 * `npm run bench:instructions`: the work each system asks of Redis per job,
 * counted rather than timed. redis-server runs under callgrind (valgrind), which
 * counts the instructions it executes: the same count for the same binary and
 * inputs whatever else the machine is doing, so on a shared machine it shows
 * what the rates of `npm run bench` cannot tell apart from noise. Counted are
 * the submit (in bulk) and the drain of no-op jobs, as in the throughput
 * scenario, after an uncounted warm-up run of each system. Redis's timer
 * (serverCron) is not counted: its work follows the clock, not the jobs (see dump).
 */

const run = promisify(execFile);
const systems: BenchSystem[] = [empSystem, bullmqSystem];

const { values: flags } = parseArgs({
  options: {
    jobs: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '1,10,50' },
  },
  strict: true,
});
const jobs = Number(flags.jobs);
const concurrencies = flags.concurrency.split(',').map(Number);
if (!Number.isInteger(jobs) || jobs < 100) throw new Error(`--jobs must be an integer of at least 100, got ${flags.jobs}`);
if (concurrencies.some((c) => !Number.isInteger(c) || c < 1)) throw new Error(`--concurrency must list positive integers, got ${flags.concurrency}`);

await run('valgrind', ['--version']).catch(() => {
  throw new Error('valgrind is not on PATH (Debian: apt-get install valgrind); it counts the instructions');
});

const dumps = await mkdtemp(join(tmpdir(), 'emp-callgrind-'));
const redis = await startRedis({
  wrapper: ['valgrind', '--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${join(dumps, 'callgrind.out.%p')}`],
  readyTimeoutMs: 60_000,
});
const pid = String(redis.pid);
const admin = new Redis(redis.url);

/**
 * Instructions redis-server executed since the last dump (a dump also starts the
 * next count), less those of its timer (serverCron): it runs ten times a second
 * whatever the load, so its share per job follows the wall time a run took
 * (under valgrind on a busy machine, up to 20k instructions per job), not the jobs.
 */
async function dump(): Promise<number> {
  const before = new Set(await readdir(dumps));
  await run('callgrind_control', ['--dump', pid]);
  const fresh = (await readdir(dumps)).filter((name) => !before.has(name));
  if (fresh.length !== 1) throw new Error(`expected one new callgrind dump, found ${fresh.length}`);
  const file = join(dumps, fresh[0]!);
  const text = await readFile(file, 'utf8');
  const totals = /^(?:totals|summary):\s*(\d+)/m.exec(text);
  if (!totals) throw new Error(`no totals in callgrind dump ${fresh[0]}`);
  const { stdout } = await run('callgrind_annotate', ['--inclusive=yes', '--threshold=100', file], { maxBuffer: 64 * 1024 * 1024 });
  const cron = /^\s*([\d,]+) .*:serverCron \[/m.exec(stdout);
  return Number(totals[1]) - (cron ? Number(cron[1]!.replaceAll(',', '')) : 0);
}

try {
  const rows: string[][] = [];
  for (const concurrency of concurrencies) {
    const perJob = new Map<string, { submit: number; drain: number }>();
    for (const system of systems) {
      await admin.flushall();
      await system.throughput({ redisUrl: redis.url, jobs, concurrency }); // warm-up, not counted
      await admin.flushall();
      await run('callgrind_control', ['--instr=on', pid]);
      await run('callgrind_control', ['--zero', pid]);
      let submit = 0;
      await system.throughput({ redisUrl: redis.url, jobs, concurrency, onSubmitted: async () => void (submit = await dump()) });
      const drain = await dump();
      await run('callgrind_control', ['--instr=off', pid]);
      perJob.set(system.name, { submit: submit / jobs, drain: drain / jobs });
    }
    const emp = perJob.get('emp')!;
    const bullmq = perJob.get('bullmq')!;
    const k = (n: number) => `${Math.round(n / 1000)}k`;
    rows.push(
      [`submit, concurrency ${concurrency}`, k(emp.submit), k(bullmq.submit), `${(emp.submit / bullmq.submit).toFixed(2)}x`],
      [`drain, concurrency ${concurrency}`, k(emp.drain), k(bullmq.drain), `${(emp.drain / bullmq.drain).toFixed(2)}x`],
    );
  }
  console.log(`\nredis-server instructions per job, ${jobs} no-op jobs (callgrind; lower is better)`);
  console.log(formatTable(['scenario', 'emp', 'bullmq', 'ratio emp/bullmq'], rows));
} finally {
  await admin.quit().catch(() => admin.disconnect());
  await redis.stop();
  await rm(dumps, { recursive: true, force: true });
}
