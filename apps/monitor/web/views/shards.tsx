import type { ShardReport } from '@emp/core';
import type { Connection } from '../api/connection';
import { usePolled } from '../live/use-polled';
import { bytes, count } from './format';

const SHARDS_EVERY_MS = 10_000;

/**
 * Where each pool lives (GET /v1/shards): every shard (today a pool, or webhook
 * delivery) with the Redis node serving its slot, and each node's load.
 */
export function ShardsPanel({ connection }: { connection: Connection }) {
  const report: ShardReport | undefined = usePolled(() => connection.client.shards(), SHARDS_EVERY_MS, 'shards', [connection]);
  if (!report) return null;
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
            {report.shards.map((s) => (
              <tr key={s.shard} data-shard={s.shard}>
                <td>{s.pool ?? <span className="muted">{s.kind}</span>}</td>
                <td className="mono">{s.shard}</td>
                <td className="mono" data-shard-node>
                  {s.node}
                </td>
                <td className="num">{s.slot}</td>
                <td className="num">{count(s.queued)}</td>
                <td className="num">{s.running === undefined ? '–' : count(s.running)}</td>
                <td className="num">{s.workers === undefined ? '–' : count(s.workers)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
