import { memo, useMemo, useState } from 'react';
import type { MonitorStore } from '../live/monitor-store';
import { useMonitorState } from '../live/monitor-store';
import { type GpuStatus, type MachineRecord, type ProcessStatus, type WorkerRecord, isUnreadable } from '../state/fleet-records';
import { type CommandView, machineHealth, workersByMachine } from '../state/monitor-state';
import { Empty, Meter, StateBadge, href } from './common';
import { ago, count, duration, megabytes } from './format';
import { commandStage } from './operator-actions';

type StatusFilter = 'all' | 'online' | 'offline' | 'busy' | 'degraded';
type SortKey = 'name' | 'pool' | 'state' | 'last-seen' | 'utilisation';

function utilisation(machine: MachineRecord): number {
  if (!Array.isArray(machine.gpus) || machine.gpus.length === 0) return -1;
  return machine.gpus.reduce((sum, gpu) => sum + (gpu.utilization_pct ?? 0), 0) / machine.gpus.length;
}

/** Every machine that registered, as cards: offline ones stay, shown as such. */
export function FleetView({ store, now }: { store: MonitorStore; now: number }) {
  const machines = useMonitorState(store, (s) => s.machines);
  const workers = useMonitorState(store, (s) => s.workers);
  const commands = useMonitorState(store, (s) => s.commands);
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

export function Stat({ label, value, tone }: { label: string; value: string; tone?: string | undefined }) {
  return (
    <div className={`stat ${tone ? `tone-${tone}` : ''}`}>
      <div className="stat-value">{value}</div>
      <div className="stat-label">{label}</div>
    </div>
  );
}

interface MachineCardProps {
  machine: MachineRecord;
  workers: WorkerRecord[];
  health: string;
  command: CommandView | undefined;
  now: number;
}

/** Props equal when the machine, each of its workers, its command and the clock are the same objects: a batch that touched other machines re-renders none of this card. */
function sameCard(a: MachineCardProps, b: MachineCardProps): boolean {
  return a.machine === b.machine && a.health === b.health && a.command === b.command && a.now === b.now && a.workers.length === b.workers.length && a.workers.every((w, i) => w === b.workers[i]);
}

/** One machine: identity, GPUs, workers, services, models, last command. Re-renders only when its own data changed (or the clock ticks). */
export const MachineCard = memo(function MachineCard({ machine, workers, health, command, now }: MachineCardProps) {
  const offline = health === 'offline';
  const since = machine.startedAt ?? machine.registeredAt;
  return (
    <article className={`card machine-card ${offline ? 'is-offline' : ''}`} data-machine={machine.id} data-state={machine.state} aria-label={`machine ${machine.id}`}>
      <header className="card-head">
        <a className="card-title" href={href('machines', machine.pool, machine.id)}>
          {machine.id}
        </a>
        <StateBadge state={machine.state} />
      </header>
      <div className="card-meta">
        <span className="chip">{machine.pool}</span>
        {machine.region && <span className="chip">{machine.region}</span>}
        {machine.kind && <span className="chip">{machine.kind}</span>}
        <span className="muted">{offline ? `offline ${ago(machine.stateSince, now)}` : `up ${duration(since ? now - since : undefined)}`}</span>
        <span className="muted" title="last status snapshot or event">seen {ago(machine.lastSeen, now)}</span>
      </div>
      <GpuList gpus={machine.gpus} />
      <div className="card-section">
        <h4>Workers</h4>
        {workers.length === 0 ? (
          <span className="muted">none registered</span>
        ) : (
          <ul className="workers">
            {workers.map((worker) => (
              <li key={worker.key} data-worker={worker.id} data-state={worker.state}>
                <span className={`dot tone-${worker.state === 'offline' ? 'bad' : worker.state === 'busy' ? 'info' : worker.state === 'idle' ? 'ok' : 'warn'}`} />
                <span className="mono">{worker.id}</span>
                <span className="muted">{worker.state}</span>
                {worker.currentJob && (
                  <a className="mono job-link" href={href('jobs', worker.currentJob)}>
                    {worker.currentJob}
                  </a>
                )}
              </li>
            ))}
          </ul>
        )}
      </div>
      <ProcessList processes={machine.processes} services={machine.services} />
      <ModelSummary models={machine.models} />
      {command && (
        <div className="card-section command-line" data-command-stage={commandStage(command).label}>
          <span className="muted">last command</span> <b>{command.action}</b>
          {command.service ? ` ${command.service}` : ''} <span className={`badge tone-${commandStage(command).tone}`}>{commandStage(command).label}</span>
        </div>
      )}
    </article>
  );
}, sameCard);

export function GpuList({ gpus }: { gpus: MachineRecord['gpus'] }) {
  if (gpus === undefined) return null;
  if (isUnreadable(gpus)) return <div className="card-section unknown" title={gpus.unreadable}>GPUs: unknown ({gpus.unreadable})</div>;
  if (gpus.length === 0) return <div className="card-section muted">no GPU</div>;
  return (
    <div className="card-section">
      <h4>GPUs</h4>
      <ul className="gpus">
        {gpus.map((gpu: GpuStatus) => (
          <li key={gpu.index}>
            <span className="mono">#{gpu.index}</span> <span className="gpu-name">{gpu.name}</span>
            <span className="gpu-figures">
              <Meter value={gpu.memory_used_mb ?? 0} max={gpu.memory_total_mb} label={`GPU ${gpu.index} memory`} />
              <span className="muted">
                {megabytes(gpu.memory_used_mb)} / {megabytes(gpu.memory_total_mb)}
              </span>
              <Meter value={gpu.utilization_pct ?? 0} max={100} label={`GPU ${gpu.index} utilisation`} tone="info" />
              <span className="muted">{gpu.utilization_pct === undefined ? '–' : `${Math.round(gpu.utilization_pct)}%`}</span>
            </span>
          </li>
        ))}
      </ul>
    </div>
  );
}

function ProcessList({ processes, services }: { processes: MachineRecord['processes']; services: string[] }) {
  if (processes === undefined) {
    return services.length > 0 ? (
      <div className="card-section">
        <span className="muted">services</span> {services.join(', ')}
      </div>
    ) : null;
  }
  if (isUnreadable(processes)) return <div className="card-section unknown">Services: unknown ({processes.unreadable})</div>;
  return (
    <div className="card-section">
      <h4>Processes</h4>
      <ul className="processes">
        {processes.map((process: ProcessStatus) => (
          <li key={process.name}>
            <span className="mono">{process.name}</span> <StateBadge state={process.state} />
            {process.restarts ? <span className="muted"> {process.restarts} restart{process.restarts === 1 ? '' : 's'}</span> : null}
          </li>
        ))}
      </ul>
    </div>
  );
}

function ModelSummary({ models }: { models: MachineRecord['models'] }) {
  if (models === undefined) return null;
  if (isUnreadable(models)) return <div className="card-section unknown">Models: unknown ({models.unreadable})</div>;
  return (
    <div className="card-section">
      <span className="muted">models on disk</span> {models.length === 0 ? 'none' : models.slice(0, 3).map((m) => m.name).join(', ')}
      {models.length > 3 && <span className="muted"> +{models.length - 3} more</span>}
    </div>
  );
}
