import { NodeAddress, type PoolShards, PoolName, ShardCount, type ShardReport, shardName } from '@emp/core';
import type { Command } from 'commander';
import { z } from 'zod';
import { withBroker } from '../connection';
import { intFlag, parseArguments, redisFlag } from '../flags';
import { json, table } from '../format';

const SetArguments = z.object({
  pool: PoolName,
  count: intFlag(ShardCount),
  onto: z
    .string()
    .transform((list) => list.split(',').map((node) => node.trim()))
    .pipe(z.array(NodeAddress).min(1))
    .optional(),
});

export function registerShards(program: Command): void {
  const shards = program
    .command('shards')
    .description(
      "where each pool lives: each pool's shard counts, then every shard (a pool's, webhook delivery) with its cluster slot, node, queued and running jobs and workers, then each Redis node; `emp shards set` reshards a pool",
    )
    .option('--json', "print JSON for scripts (the API's GET /v1/shards; with set, PUT /v1/pools/:pool/shards)")
    .action(async (options: { json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const report = await broker.shardReport();
        process.stdout.write(`${options.json ? json(report) : renderShards(report)}\n`);
      });
    });

  shards
    .command('set')
    .description("spread a pool's new jobs over <count> shards (1..64): growing takes effect at once; shrinking keeps the left-over shards served until their jobs are done")
    .argument('<pool>', 'the pool, e.g. standard')
    .argument('<count>', 'how many shards its submits go to, 1 to 64')
    .option('--json', "print JSON for scripts: {pool, count, serve, moved?} (the API's PUT /v1/pools/:pool/shards)")
    .option(
      '--onto <nodes>',
      'a grow on a Redis Cluster: put the added shards on these masters (host:port, comma-separated; e.g. masters just added), moving their still empty slots there first',
    )
    .action(async (poolArgument: string, countArgument: string, options: { onto?: string }, command: Command) => {
      const { pool, count, onto } = parseArguments(SetArguments, { pool: poolArgument, count: countArgument, onto: options.onto });
      // --json after `set` is read by `shards` as its own flag: the two mean the same
      const asJson = command.optsWithGlobals().json === true;
      await withBroker(redisFlag(command), async (broker) => {
        const before = await broker.poolShards(pool, { fresh: true });
        const after = await broker.setShardCount(pool, count, onto ? { onto } : {});
        process.stdout.write(`${asJson ? json(after) : describeChange(before, after)}\n`);
      });
    });
}

const shardsText = (n: number) => `${n} shard${n === 1 ? '' : 's'}`;

/** `pool standard: 4 shards (was 1); workers serve 4`, and which shards stay served past the count and why. */
function describeChange(before: PoolShards, after: PoolShards): string {
  const placed = after.moved?.length ? `; ${after.moved.map((m) => `${m.shard} on ${m.node} (slot ${m.slot})`).join(', ')}` : '';
  const change = `pool ${after.pool}: ${shardsText(after.count)} (was ${before.count}); workers serve ${after.serve}${placed}`;
  if (after.serve > after.count) {
    const leftOver = Array.from({ length: after.serve - after.count }, (_, k) => shardName(after.pool, after.count + k));
    return `${change}: ${leftOver.join(', ')} take no new jobs and stay served until their jobs are done`;
  }
  return after.count < before.count ? `${change} (the shards taken out held no live job)` : change;
}

const optional = (n: number | undefined) => (n === undefined ? '-' : String(n));

function megabytes(bytes: number | undefined): string {
  return bytes === undefined ? '-' : `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function renderShards(report: ShardReport): string {
  const pools = table(
    ['POOL', 'SHARDS', 'SERVED', 'QUEUED', 'NODES'],
    report.pools.map((p) => {
      const own = report.shards.filter((s) => s.pool === p.pool);
      const nodes = [...new Set(own.map((s) => s.node))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
      return [p.pool, String(p.count), String(p.serve), String(own.reduce((sum, s) => sum + s.queued, 0)), nodes.join(',')];
    }),
  );
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
  return [heading, pools, '', shards, '', nodes].join('\n');
}
