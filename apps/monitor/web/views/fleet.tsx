import type { PoolReport as PoolsReport } from '@emp/core';
import { useEffect, useMemo, useState } from 'react';
import type { Connection } from '../api/connection';
import type { MonitorStore } from '../live/monitor-store';
import { usePolled } from '../live/use-polled';
import { useMonitorState } from '../live/monitor-store';
import type { MachineRecord, WorkerRecord } from '../state/fleet-records';
import { type CommandView, type MonitorState, machineHealth, workersByMachine } from '../state/monitor-state';
import { Empty, href } from './common';
import { count, duration } from './format';
import { MachineCard } from './machine-card';
import { ShardsPanel } from './shards';

type StatusFilter = 'all' | 'online' | 'offline' | 'busy' | 'degraded';
type SortKey = 'name' | 'pool' | 'state' | 'last-seen' | 'utilisation';

function utilisation(machine: MachineRecord): number {
  if (!Array.isArray(machine.gpus) || machine.gpus.length === 0) return -1;
  return machine.gpus.reduce((sum, gpu) => sum + (gpu.utilization_pct ?? 0), 0) / machine.gpus.length;
}

/** Every machine that registered, as cards: offline ones stay, shown as such. */
export function FleetView({ connection, store, now }: { connection: Connection; store: MonitorStore; now: number }) {
  const machines = useMonitorState(store, (s) => s.machines);
  const workers = useMonitorState(store, (s) => s.workers);
  const commands = useMonitorState(store, (s) => s.commands);
  const queues = useMonitorState(store, (s) => s.queues);
  const [search, setSearch] = useState('');
  const [pool, setPool] = useState('all');
  const [status, setStatus] = useState<StatusFilter>('all');
  const [sort, setSort] = useState<SortKey>('name');

  const grouped = useMemo(() => workersByMachine(workers), [workers]);
  const latestCommand = useMemo(() => {
    const latest = new Map<string, CommandView>();
    for (const command of Object.values(commands)) {
      const key = `${command.pool}/${command.machine}`;
      if ((latest.get(key)?.requestedAt ?? -1) < command.requestedAt) latest.set(key, command);
    }
    return latest;
  }, [commands]);
  const pools = useMemo(() => [...new Set(Object.values(machines).map((m) => m.pool))].sort(), [machines]);

  const list = useMemo(() => {
    const needle = search.trim().toLowerCase();
    const rows = Object.values(machines).map((machine) => {
      const own = grouped.get(machine.key) ?? [];
      return { machine, workers: own, health: machineHealth(machine, own) };
    });
    const filtered = rows.filter(({ machine, workers: own, health }) => {
      if (pool !== 'all' && machine.pool !== pool) return false;
      if (status === 'online' && health === 'offline') return false;
      if (status !== 'all' && status !== 'online' && health !== status) return false;
      if (!needle) return true;
      const haystack = [machine.id, machine.pool, machine.region, machine.hostname, machine.state, ...machine.services, ...own.map((w) => w.id)].join(' ').toLowerCase();
      return haystack.includes(needle);
    });
    const byName = (a: MachineRecord, b: MachineRecord) => a.id.localeCompare(b.id, undefined, { numeric: true });
    const order: Record<SortKey, (a: (typeof rows)[number], b: (typeof rows)[number]) => number> = {
      name: (a, b) => byName(a.machine, b.machine),
      pool: (a, b) => a.machine.pool.localeCompare(b.machine.pool) || byName(a.machine, b.machine),
      state: (a, b) => a.health.localeCompare(b.health) || byName(a.machine, b.machine),
      'last-seen': (a, b) => (b.machine.lastSeen ?? 0) - (a.machine.lastSeen ?? 0),
      utilisation: (a, b) => utilisation(b.machine) - utilisation(a.machine) || byName(a.machine, b.machine),
    };
    return filtered.sort(order[sort]);
  }, [machines, grouped, search, pool, status, sort]);

  const all = Object.values(workers);
  const online = Object.values(machines).filter((m) => m.state !== 'offline').length;
  return (
    <section aria-label="fleet">
      <div className="summary">
        <Stat label="machines online" value={`${online} / ${Object.keys(machines).length}`} />
        <Stat label="workers busy" value={count(all.filter((w) => w.state === 'busy').length)} />
        <Stat label="workers idle" value={count(all.filter((w) => w.state === 'idle').length)} />
        <Stat label="workers offline" value={count(all.filter((w) => w.state === 'offline').length)} tone={all.some((w) => w.state === 'offline') ? 'bad' : undefined} />
      </div>
      {queues && queues.pools.length > 0 && <PoolPressure pools={queues.pools} workers={all} selected={pool} />}
      <RoutingPools connection={connection} />
      <ShardsPanel connection={connection} />
      <div className="toolbar" role="search">
        <input type="search" placeholder="Search machines, workers, regions…" value={search} onChange={(e) => setSearch(e.target.value)} aria-label="search machines" />
        <label>
          Pool
          <select value={pool} onChange={(e) => setPool(e.target.value)}>
            <option value="all">all</option>
            {pools.map((p) => (
              <option key={p}>{p}</option>
            ))}
          </select>
        </label>
        <label>
          Status
          <select value={status} onChange={(e) => setStatus(e.target.value as StatusFilter)}>
            {(['all', 'online', 'offline', 'busy', 'degraded'] as const).map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </label>
        <label>
          Sort
          <select value={sort} onChange={(e) => setSort(e.target.value as SortKey)}>
            <option value="name">name</option>
            <option value="pool">pool</option>
            <option value="state">status</option>
            <option value="last-seen">last seen</option>
            <option value="utilisation">GPU utilisation</option>
          </select>
        </label>
      </div>
      {list.length === 0 ? (
        <Empty>{Object.keys(machines).length === 0 ? 'No machine has registered yet.' : 'No machine matches these filters.'}</Empty>
      ) : (
        <div className="cards">
          {list.map(({ machine, workers: own, health }) => (
            <MachineCard key={machine.key} machine={machine} workers={own} health={health} command={latestCommand.get(machine.key)} now={now} />
          ))}
        </div>
      )}
    </section>
  );
}

type PoolReport = NonNullable<MonitorState['queues']>['pools'][number];

/** Per pool, what waits for the machines below: queued jobs, the oldest one's age, and workers idle, busy and offline. */
function PoolPressure({ pools, workers, selected }: { pools: PoolReport[]; workers: WorkerRecord[]; selected: string }) {
  const busy = new Map<string, number>();
  for (const worker of workers) if (worker.state === 'busy') busy.set(worker.pool, (busy.get(worker.pool) ?? 0) + 1);
  const shown = pools.filter((p) => selected === 'all' || p.pool === selected);
  return (
    <div className="pool-pressure" aria-label="queue pressure per pool">
      {shown.map((p) => {
        const starved = p.depth > 0 && p.workers.idle === 0;
        return (
          <a key={p.pool} className={`pool-tile ${starved ? 'tone-warn' : ''}`} href={href('queues')} data-pool-pressure={p.pool} title={starved ? 'jobs wait and no worker of the pool is idle' : undefined}>
            <span className="pool-name">{p.pool}</span>
            <span>
              <b data-queued>{count(p.depth)}</b> queued
            </span>
            <span className="muted">oldest {duration(p.oldest_age_ms)}</span>
            <span className="muted">
              workers {p.workers.idle} idle · {busy.get(p.pool) ?? 0} busy{p.workers.offline > 0 ? ` · ${p.workers.offline} offline` : ''}
            </span>
          </a>
        );
      })}
    </div>
  );
}

/** How often the pools' cutoffs and learned durations are read again. */
const POOLS_EVERY_MS = 10_000;

/** `< 30 s`, `30 s – 3 min`, `≥ 3 min`: the expected durations a pool takes. */
function cutoffText(p: PoolsReport['pools'][number]): string {
  const s = (seconds: number) => duration(seconds * 1_000);
  if (p.max_duration_s === undefined) return `≥ ${s(p.min_duration_s)}`;
  return p.min_duration_s === 0 ? `< ${s(p.max_duration_s)}` : `${s(p.min_duration_s)} – ${s(p.max_duration_s)}`;
}

/** The configured pools jobs are routed to by expected duration, with the duration classes each takes (GET /v1/pools). */
function RoutingPools({ connection }: { connection: Connection }) {
  const report: PoolsReport | undefined = usePolled(() => connection.client.pools(), POOLS_EVERY_MS, 'pools', [connection]);
  if (!report) return null;
  return (
    <div className="panel routing-pools" aria-label="pools by expected duration">
      <h3>Pools by expected duration</h3>
      <div className="table-wrap">
      <table>
        <thead>
          <tr>
            <th>pool</th>
            <th>expected</th>
            <th>target wait</th>
            <th>profile</th>
            <th>queued</th>
            <th>workers</th>
            <th>learned durations (p50 / p90, executions)</th>
          </tr>
        </thead>
        <tbody>
          {report.pools.map((p) => (
            <tr key={p.name} data-routing-pool={p.name}>
              <td>
                {p.name}
                {p.default ? <span className="muted"> (default)</span> : null}
              </td>
              <td data-cutoff>{cutoffText(p)}</td>
              <td>{duration(p.target_wait_s * 1_000)}</td>
              <td>{p.profile.min_gpu_memory_gb !== undefined ? `≥ ${p.profile.min_gpu_memory_gb} GB GPU` : p.profile.gpu ? 'GPU' : 'any'}</td>
              <td>
                {count(p.depth)}
                {p.oldest_age_ms !== undefined ? <span className="muted"> · oldest {duration(p.oldest_age_ms)}</span> : null}
              </td>
              <td>
                {p.workers.online} online · {p.workers.idle} idle · {p.workers.busy} busy
              </td>
              <td>
                {p.durations.length === 0 ? (
                  <span className="muted">none yet</span>
                ) : (
                  p.durations.map((d) => (
                    <div key={d.dclass} data-dclass={d.dclass} className="mono">
                      {d.service}
                      {d.models.length ? ` ${d.models.join(', ')}` : ''}: {duration(d.p50_s * 1_000)} / {duration(d.p90_s * 1_000)}, {d.samples}
                      {d.samples < report.min_samples ? <span className="muted"> (too few to route by)</span> : null}
                    </div>
                  ))
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      </div>
    </div>
  );
}

export function Stat({ label, value, tone }: { label: string; value: string; tone?: string | undefined }) {
  return (
    <div className={`stat ${tone ? `tone-${tone}` : ''}`}>
      <div className="stat-value">{value}</div>
      <div className="stat-label">{label}</div>
    </div>
  );
}
