import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Broker } from '@emp/core';
import { type RedisProcess, startRedis } from '@emp/core/redis-server';
import { Redis } from 'ioredis';
import { ApiServerProcess, WorkersProcess, drain, load } from './api-load';
import { redisCpuMicros } from './redis-info';
import { formatNumber, formatTable, median } from './stats';

/**
 * The HTTP API of this checkout and of another one (an older commit, say) under
 * the same load at the same moment: each API in a process of its own
 * (api-server-process.ts of its checkout) on a redis-server of its own with the
 * same simulation workers, and the same autocannon load on both at once, plain
 * submits and then `?wait` submits. On a shared machine whose load moves by
 * several times within a minute, runs one after the other cannot be compared;
 * side by side both get the same machine. Prints, per checkout, submits/s,
 * latency and the CPU of its API process and of its redis-server per request,
 * the medians over `--runs` (the order of the two alternates between runs).
 *
 *   npx tsx bench/src/api-side-by-side.ts <other checkout> [--runs 3] [--seconds 10] [--connections 50] [--workers 4]
 *
 * The other checkout needs its node_modules (its API runs with its own packages).
 */

interface Side {
  name: string;
  server: RedisProcess;
  redis: Redis;
  broker: Broker;
  workers: WorkersProcess;
  api: ApiServerProcess;
}

interface PhaseResult {
  submitsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  apiMicrosPerRequest: number;
  redisMicrosPerRequest: number;
}

const PHASES = [
  ['plain', '/v1/jobs'],
  ['?wait', '/v1/jobs?wait=30'],
] as const;

async function startSide(name: string, checkout: string | undefined, workers: number): Promise<Side> {
  const server = await startRedis();
  const redis = new Redis(server.url);
  const broker = await Broker.connect({ redis });
  return { name, server, redis, broker, workers: await WorkersProcess.start(server.url, workers), api: await ApiServerProcess.start(server.url, checkout) };
}

async function stopSide(side: Side): Promise<void> {
  await side.api.stop();
  await side.workers.stop();
  await side.redis.quit().catch(() => side.redis.disconnect());
  await side.server.stop();
}

async function measure(side: Side, path: string, options: { connections: number; durationSeconds: number }): Promise<PhaseResult> {
  const [api0, redis0] = await Promise.all([side.api.cpuMicros(), redisCpuMicros(side.redis)]);
  const result = await load(side.api.url, path, side.api.key, options);
  const [api1, redis1] = await Promise.all([side.api.cpuMicros(), redisCpuMicros(side.redis)]);
  const total = result.requests.total;
  return {
    submitsPerSec: result.requests.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    errors: result.non2xx + result.errors,
    apiMicrosPerRequest: total > 0 ? (api1 - api0) / total : Number.NaN,
    redisMicrosPerRequest: total > 0 ? (redis1 - redis0) / total : Number.NaN,
  };
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      runs: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '10' },
      connections: { type: 'string', default: '50' },
      workers: { type: 'string', default: '4' },
    },
  });
  const other = positionals[0] && resolve(positionals[0]);
  if (!other || !existsSync(resolve(other, 'bench/src/api-server-process.ts'))) {
    throw new Error('usage: api-side-by-side.ts <other checkout> [--runs N] [--seconds N] [--connections N] [--workers N] (a checkout with bench/src/api-server-process.ts and its node_modules)');
  }
  const runs = Number(values.runs);
  const options = { connections: Number(values.connections), durationSeconds: Number(values.seconds) };
  const here = fileURLToPath(new URL('../..', import.meta.url));
  const results = new Map<string, PhaseResult[]>();
  for (let run = 0; run < runs; run++) {
    // both at once; which one is started and loaded first alternates
    const order = run % 2 === 0 ? [['this', undefined], ['other', other]] as const : [['other', other], ['this', undefined]] as const;
    const sides = await Promise.all(order.map(([name, checkout]) => startSide(name, checkout, Number(values.workers))));
    try {
      for (const [phase, path] of PHASES) {
        const measured = await Promise.all(sides.map((side) => measure(side, path, options)));
        sides.forEach((side, i) => {
          const key = `${phase}\t${side.name}`;
          results.set(key, [...(results.get(key) ?? []), measured[i]!]);
          console.log(`run ${run + 1}/${runs} ${phase} ${side.name}: ${JSON.stringify(measured[i])}`);
        });
        await Promise.all(sides.map((side) => drain(side.broker)));
      }
    } finally {
      await Promise.all(sides.map(stopSide));
    }
  }
  const rows = [...results].map(([key, list]) => {
    const [phase, name] = key.split('\t') as [string, string];
    const mid = (pick: (r: PhaseResult) => number) => formatNumber(median(list.map(pick)));
    return [phase, name === 'this' ? `this (${here})` : `other (${other})`, mid((r) => r.submitsPerSec), mid((r) => r.p50Ms), mid((r) => r.p99Ms), mid((r) => r.apiMicrosPerRequest), mid((r) => r.redisMicrosPerRequest), String(list.reduce((n, r) => n + r.errors, 0))];
  });
  console.log(`\nmedians of ${runs} side-by-side runs, ${options.connections} connections for ${options.durationSeconds} s each`);
  console.log(formatTable(['phase', 'checkout', 'req/s', 'p50 (ms)', 'p99 (ms)', 'API µs/req', 'Redis µs/req', 'non-2xx'], rows));
}

await main();
