import type { Broker, ClassStats, QueueStats } from '@emp/core';
import type { Command } from 'commander';
import { withBroker } from '../connection';
import { redisFlag } from '../flags';
import { duration, json, shortId, table } from '../format';

export function registerQueues(program: Command): void {
  program
    .command('queues')
    .description('queue depth per pool and requirement class, with routability and the age of each head job')
    .option('--pool <name>', 'only this pool')
    .option('--json', 'print JSON for scripts')
    .action(async (options: { pool?: string; json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const report = await queueReport(broker, options.pool);
        process.stdout.write(`${options.json ? json(report) : renderQueues(report)}\n`);
      });
    });
}

type ClassReport = ClassStats & { headAgeMs?: number };

interface QueueReport {
  now: number;
  pools: Array<Omit<QueueStats, 'classes'> & { depth: number; classes: ClassReport[] }>;
  totals: { depth: number; timers: number; idleWorkers: number; onlineWorkers: number; offlineWorkers: number };
}

async function queueReport(broker: Broker, pool: string | undefined): Promise<QueueReport> {
  const pools = pool ? [pool] : await broker.pools();
  const [now, stats] = await Promise.all([broker.serverTime(), Promise.all(pools.map((p) => broker.queueStats(p)))]);
  const report: QueueReport = {
    now,
    pools: stats.map((s) => ({
      ...s,
      depth: s.classes.reduce((sum, c) => sum + c.depth, 0),
      classes: s.classes
        .map((c): ClassReport => (c.headSubmittedAt === undefined ? c : { ...c, headAgeMs: now - c.headSubmittedAt }))
        .sort((a, b) => b.depth - a.depth || a.requirementClass.localeCompare(b.requirementClass)),
    })),
    totals: { depth: 0, timers: 0, idleWorkers: 0, onlineWorkers: 0, offlineWorkers: 0 },
  };
  for (const s of report.pools) {
    report.totals.depth += s.depth;
    report.totals.timers += s.timers;
    report.totals.idleWorkers += s.idleWorkers;
    report.totals.onlineWorkers += s.onlineWorkers;
    report.totals.offlineWorkers += s.offlineWorkers;
  }
  return report;
}

function renderQueues(report: QueueReport): string {
  if (report.pools.length === 0) return 'no pools yet: nothing has been submitted and no worker has registered';
  const rows = report.pools.flatMap((pool) =>
    pool.classes.map((c) => {
      const { service, tenant, ...requirements } = c.definition;
      return [
        pool.pool,
        shortId(c.requirementClass),
        String(service ?? ''),
        String(tenant ?? 'any'),
        String(c.depth),
        c.routable ? 'yes' : 'NO',
        c.headAgeMs === undefined ? '-' : duration(c.headAgeMs),
        Object.keys(requirements).length ? JSON.stringify(requirements) : '-',
      ];
    }),
  );
  const summaries = report.pools.map(
    (p) =>
      `${p.pool}: ${p.depth} queued, ${p.timers} on timers (delayed, retrying or running), workers ${p.onlineWorkers} online (${p.idleWorkers} idle), ${p.offlineWorkers} offline`,
  );
  const t = report.totals;
  return [
    rows.length ? table(['POOL', 'CLASS', 'SERVICE', 'TENANT', 'DEPTH', 'ROUTABLE', 'HEAD AGE', 'REQUIREMENTS'], rows) : 'no requirement classes yet',
    '',
    ...summaries,
    ...(report.pools.length > 1 ? [`total: ${t.depth} queued, ${t.timers} on timers, workers ${t.onlineWorkers} online (${t.idleWorkers} idle), ${t.offlineWorkers} offline`] : []),
  ].join('\n');
}
