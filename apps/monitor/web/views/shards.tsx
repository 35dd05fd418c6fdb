import type { PoolShardsView, ShardReport, ShardView } from '@emp/core';
import type { Connection } from '../api/connection';
import { usePolled } from '../live/use-polled';
import { bytes, count } from './format';

const SHARDS_EVERY_MS = 10_000;

/**
 * Where each pool lives (GET /v1/shards): each pool with its shard counts,
 * then its shards (a pool's jobs spread over `{<pool>}`, `{<pool>_1}`, ...),
 * each with the Redis node serving its slot; then webhook delivery's shard;
 * and each node's load.
 */
export function ShardsPanel({ connection }: { connection: Connection }) {
  const report: ShardReport | undefined = usePolled(() => connection.client.shards(), SHARDS_EVERY_MS, 'shards', [connection]);
  if (!report) return null;
  const grouped = new Set(report.pools.map((p) => p.pool));
  const others = report.shards.filter((s) => s.pool === undefined || !grouped.has(s.pool));
  return (
    <div className="panel shards" aria-label="where each pool lives">
      <h3>Where each pool lives</h3>
      <span className="muted">
        {report.mode === 'cluster' ? `Redis Cluster: ${report.nodes.map((n) => `${n.node} ${n.role}, ${bytes(n.used_memory_bytes)}, ${n.ops_per_sec ?? '–'} ops/s`).join(' · ')}` : `one Redis: ${report.nodes[0]?.node ?? ''}`}
      </span>
      <div className="table-wrap">
        <table>
          <thead>
            <tr>
              <th>pool</th>
              <th>shard</th>
              <th>node</th>
              <th className="num">slot</th>
              <th className="num">queued</th>
              <th className="num">running</th>
              <th className="num">workers</th>
            </tr>
          </thead>
          <tbody>
            {report.pools.flatMap((p) => {
              const own = report.shards.filter((s) => s.pool === p.pool);
              return [<PoolRow key={`pool ${p.pool}`} pool={p} shards={own} />, ...own.map((s) => <ShardRow key={s.shard} shard={s} pool={p} />)];
            })}
            {others.map((s) => (
              <ShardRow key={s.shard} shard={s} />
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}

/** A pool's row: its shard count (and how many its workers serve, when a shrink left some holding jobs), the nodes its shards are on, its jobs summed. */
function PoolRow({ pool, shards }: { pool: PoolShardsView; shards: ShardView[] }) {
  const nodes = new Set(shards.map((s) => s.node)).size;
  const sum = (value: (s: ShardView) => number | undefined) => shards.reduce((total, s) => total + (value(s) ?? 0), 0);
  return (
    <tr data-shard-pool={pool.pool} className="shard-pool">
      <td>
        <strong>{pool.pool}</strong>
      </td>
      <td>
        <span data-shard-count>{pool.count === 1 ? '1 shard' : `${pool.count} shards`}</span>
        {pool.serve !== pool.count ? (
          <span className="muted" data-shard-serve>
            {' '}
            · {pool.serve} served while the left-over ones hold jobs
          </span>
        ) : null}
      </td>
      <td className="muted">{nodes === 1 ? '1 node' : `${nodes} nodes`}</td>
      <td />
      <td className="num">{count(sum((s) => s.queued))}</td>
      <td className="num">{count(sum((s) => s.running))}</td>
      {/* a worker registers in every shard of its pool: the shards' counts are one worker each, not to be summed */}
      <td className="num">{count(Math.max(0, ...shards.map((s) => s.workers ?? 0)))}</td>
    </tr>
  );
}

/** A shard's row, under its pool's (or alone: webhook delivery's), with the node serving its slot. */
function ShardRow({ shard: s, pool }: { shard: ShardView; pool?: PoolShardsView }) {
  const name = s.shard.slice(1, -1);
  const leftOver = pool !== undefined && !pool.shards.slice(0, pool.count).includes(name);
  return (
    <tr data-shard={s.shard}>
      <td>{pool ? null : (s.pool ?? <span className="muted">{s.kind}</span>)}</td>
      <td className="mono">
        {s.shard}
        {leftOver ? <span className="muted"> {pool.shards.includes(name) ? '(takes no new jobs)' : '(not served)'}</span> : null}
      </td>
      <td className="mono" data-shard-node>
        {s.node}
      </td>
      <td className="num">{s.slot}</td>
      <td className="num">{count(s.queued)}</td>
      <td className="num">{s.running === undefined ? '–' : count(s.running)}</td>
      <td className="num">{s.workers === undefined ? '–' : count(s.workers)}</td>
    </tr>
  );
}
