import type { ShardReport } from '@emp/core';
import type { Command } from 'commander';
import { withBroker } from '../connection';
import { redisFlag } from '../flags';
import { json, table } from '../format';

export function registerShards(program: Command): void {
  program
    .command('shards')
    .description('where each pool lives: every shard (a pool, webhook delivery) with its cluster slot, node, queued and running jobs and workers; then each Redis node')
    .option('--json', "print JSON for scripts (the API's GET /v1/shards)")
    .action(async (options: { json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const report = await broker.shardReport();
        process.stdout.write(`${options.json ? json(report) : renderShards(report)}\n`);
      });
    });
}

const optional = (n: number | undefined) => (n === undefined ? '-' : String(n));

function megabytes(bytes: number | undefined): string {
  return bytes === undefined ? '-' : `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function renderShards(report: ShardReport): string {
  const shards = table(
    ['SHARD', 'POOL', 'NODE', 'SLOT', 'QUEUED', 'RUNNING', 'WORKERS', 'KEYS'],
    report.shards.map((s) => [s.shard, s.pool ?? `(${s.kind})`, s.node, String(s.slot), String(s.queued), optional(s.running), optional(s.workers), optional(s.keys)]),
  );
  const nodes = table(
    ['NODE', 'ROLE', 'SLOTS', 'SHARDS', 'QUEUED', 'MEMORY', 'OPS/S'],
    report.nodes.map((n) => [
      n.node,
      n.replica_of ? `replica of ${n.replica_of}` : n.role,
      String(n.slots),
      String(n.shards),
      String(n.queued),
      n.error ? `unreachable: ${n.error}` : megabytes(n.used_memory_bytes),
      optional(n.ops_per_sec),
    ]),
  );
  const heading = report.mode === 'cluster' ? `Redis Cluster, ${report.nodes.filter((n) => n.role === 'master').length} masters:` : 'one Redis (the slot is where the shard would go on a cluster):';
  return [heading, shards, '', nodes].join('\n');
}
