import type { PoolReport, PoolView } from '@emp/core';
import type { Command } from 'commander';
import { withBroker } from '../connection';
import { duration, json, shortId, table } from '../format';
import { redisFlag } from '../flags';

export function registerPools(program: Command): void {
  program
    .command('pools')
    .description('the pools jobs are routed to by expected duration: cutoffs, target wait, profile, queue, workers and learned durations')
    .option('--json', 'print JSON for scripts (the API\'s GET /v1/pools)')
    .action(async (options: { json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const report = await broker.poolReport();
        process.stdout.write(`${options.json ? json(report) : renderPools(report)}\n`);
      });
    });
}

/** `< 30 s`, `30 s - 3 min`, `>= 3 min` */
export function cutoffText(pool: Pick<PoolView, 'min_duration_s' | 'max_duration_s'>): string {
  const s = (seconds: number) => duration(seconds * 1_000);
  if (pool.max_duration_s === undefined) return `>= ${s(pool.min_duration_s)}`;
  if (pool.min_duration_s === 0) return `< ${s(pool.max_duration_s)}`;
  return `${s(pool.min_duration_s)} - ${s(pool.max_duration_s)}`;
}

function profileText(profile: PoolView['profile']): string {
  const parts = [
    ...(profile.min_gpu_memory_gb !== undefined ? [`>= ${profile.min_gpu_memory_gb} GB GPU`] : []),
    ...(profile.gpu ? ['GPU'] : []),
  ];
  return parts.length ? parts.join(', ') : 'any';
}

function renderPools(report: PoolReport): string {
  const pools = table(
    ['POOL', 'EXPECTED', 'TARGET WAIT', 'PROFILE', 'QUEUED', 'OLDEST', 'WORKERS (IDLE/BUSY)'],
    report.pools.map((p) => [
      p.name + (p.default ? ' (default)' : ''),
      cutoffText(p),
      duration(p.target_wait_s * 1_000),
      profileText(p.profile),
      String(p.depth),
      p.oldest_age_ms === undefined ? '-' : duration(p.oldest_age_ms),
      `${p.workers.online} (${p.workers.idle}/${p.workers.busy})`,
    ]),
  );
  const rows = report.pools.flatMap((p) =>
    p.durations.map((d) => [
      p.name,
      shortId(d.dclass),
      d.service,
      d.models.length ? d.models.join(',') : '-',
      duration(d.p50_s * 1_000),
      duration(d.p90_s * 1_000),
      String(d.samples) + (d.samples < report.min_samples ? ' (too few)' : ''),
    ]),
  );
  const learned = rows.length
    ? table(['POOL', 'CLASS', 'SERVICE', 'MODELS', 'P50', 'P90', 'SAMPLES'], rows)
    : 'no durations learned yet: every success records its execution time';
  return [pools, '', `learned durations (routing trusts a class after ${report.min_samples} executions):`, learned].join('\n');
}
