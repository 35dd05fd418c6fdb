import { parseArgs } from 'node:util';
import { startRedis } from '@emp/core/redis-server';
import { Redis } from 'ioredis';
import { bullmqSystem } from './bullmq-system';
import { empSystem } from './emp-system';
import { formatTable } from './stats';
import type { BenchSystem } from './system';

/**
 * `npm run bench:commands`: the Redis commands each system runs per job, counted
 * with MONITOR while it submits (in bulk) and drains no-op jobs as the
 * throughput scenario does. Commands a function or script runs count one each
 * (shown as `lua <NAME>`), beside the calls that reached Redis from the client
 * (`FCALL emp_complete`, `EVALSHA`...): the first say how much work a job is, the
 * second how many round trips' worth of dispatch. Counted, not timed: the same
 * on every run, whatever else the machine is doing (a drain's batching moves
 * them a little). Each phase is told apart by a marker sent on the admin
 * connection, which MONITOR shows in the order Redis ran it.
 *
 *   npm run bench:commands -- [--jobs 2000] [--concurrency 1,10,50] [--top 12]
 */

const systems: BenchSystem[] = [empSystem, bullmqSystem];

const { values: flags } = parseArgs({
  options: {
    jobs: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '1,10,50' },
    top: { type: 'string', default: '12' },
  },
  strict: true,
});
const jobs = Number(flags.jobs);
const concurrencies = flags.concurrency.split(',').map(Number);
const top = Number(flags.top);
if (!Number.isInteger(jobs) || jobs < 100) throw new Error(`--jobs must be an integer of at least 100, got ${flags.jobs}`);
if (concurrencies.some((c) => !Number.isInteger(c) || c < 1)) throw new Error(`--concurrency must list positive integers, got ${flags.concurrency}`);
if (!Number.isInteger(top) || top < 0) throw new Error(`--top must be a non-negative integer, got ${flags.top}`);

type Phase = 'submit' | 'drain';
const MARK = 'emp-bench-commands:';

/** What MONITOR saw in one phase: commands by name (`lua X` for those a function ran). */
class Tally {
  readonly byName = new Map<string, number>();

  add(name: string): void {
    this.byName.set(name, (this.byName.get(name) ?? 0) + 1);
  }

  total(filter: (name: string) => boolean = () => true): number {
    let sum = 0;
    for (const [name, n] of this.byName) if (filter(name)) sum += n;
    return sum;
  }
}

const fromFunction = (name: string) => name.startsWith('lua ');

/** The tallies of one system's counted run, per phase. */
async function count(system: BenchSystem, redisUrl: string, admin: Redis, concurrency: number): Promise<Record<Phase, Tally>> {
  const tallies: Record<Phase, Tally> = { submit: new Tally(), drain: new Tally() };
  let phase: Phase | undefined;
  const seen = new Map<string, () => void>();
  const marker = (what: string) =>
    new Promise<void>((resolve) => {
      seen.set(what, resolve);
      void admin.echo(MARK + what);
    });
  // (ioredis opens a connection of its own for MONITOR)
  const monitor = await admin.monitor();
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    const command = String(args[0]).toUpperCase();
    if (command === 'ECHO' && String(args[1]).startsWith(MARK)) {
      const what = String(args[1]).slice(MARK.length);
      phase = what === 'end' ? undefined : (what as Phase);
      seen.get(what)?.();
      return;
    }
    if (!phase) return;
    const called = command === 'FCALL' || command === 'FCALL_RO' ? `${command} ${args[1]}` : command;
    tallies[phase].add(source.includes('lua') ? `lua ${called}` : called);
  });
  try {
    await marker('submit');
    await system.throughput({ redisUrl, jobs, concurrency, onSubmitted: () => marker('drain') });
    await marker('end');
  } finally {
    monitor.disconnect();
  }
  return tallies;
}

const redis = await startRedis();
const admin = new Redis(redis.url);
try {
  const summary: string[][] = [];
  const details: string[] = [];
  const perJob = (n: number) => (n / jobs).toFixed(2);
  for (const concurrency of concurrencies) {
    const counted = new Map<string, Record<Phase, Tally>>();
    for (const system of systems) {
      await admin.flushall();
      await system.throughput({ redisUrl: redis.url, jobs: Math.min(jobs, 500), concurrency }); // warm-up, not counted
      await admin.flushall();
      counted.set(system.name, await count(system, redis.url, admin, concurrency));
    }
    for (const phase of ['submit', 'drain'] as const) {
      const emp = counted.get('emp')![phase];
      const bullmq = counted.get('bullmq')![phase];
      summary.push([
        `${phase}, concurrency ${concurrency}`,
        perJob(emp.total()),
        perJob(bullmq.total()),
        perJob(emp.total((name) => !fromFunction(name))),
        perJob(bullmq.total((name) => !fromFunction(name))),
      ]);
      if (top > 0) {
        const rows = [...emp.byName].sort((a, b) => b[1] - a[1]).slice(0, top);
        details.push(`\nemp, ${phase} at concurrency ${concurrency}: commands per job by name (top ${top})`);
        details.push(formatTable(['command', 'per job'], rows.map(([name, n]) => [name, (n / jobs).toFixed(3)])));
      }
    }
  }
  console.log(`\nRedis commands per job, ${jobs} no-op jobs (MONITOR; lower is less work)`);
  console.log(formatTable(['scenario', 'emp', 'bullmq', 'emp calls from the client', 'bullmq calls from the client'], summary));
  for (const line of details) console.log(line);
} finally {
  await admin.quit().catch(() => admin.disconnect());
  await redis.stop();
}
