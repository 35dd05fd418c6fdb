import { memo } from 'react';
import { type GpuStatus, type MachineRecord, type ProcessStatus, type WorkerRecord, isUnreadable } from '../state/fleet-records';
import type { CommandView } from '../state/monitor-state';
import { Meter, ShortId, StateBadge, href } from './common';
import { ago, duration, megabytes } from './format';
import { commandStage } from './operator-actions';

export interface MachineCardProps {
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
        <a className="card-title" href={href('machines', machine.pool, machine.id)} title={machine.id}>
          {machine.id}
        </a>
        <StateBadge state={machine.state} />
      </header>
      <div className="card-meta">
        <span className="chip">{machine.pool}</span>
        {machine.region && <span className="chip">{machine.region}</span>}
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
                <span className="mono worker-name" title={worker.id}>
                  {worker.id}
                </span>
                <span className="muted">{worker.state}</span>
                {worker.currentJob && <ShortId value={worker.currentJob} keep={22} href={href('jobs', worker.currentJob)} />}
                {worker.models && !isUnreadable(worker.models) && worker.models.loaded.length > 0 && (
                  <span className="muted mono" title="models it reported loaded in memory: claims prefer their jobs">
                    warm: {worker.models.loaded.join(', ')}
                  </span>
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
