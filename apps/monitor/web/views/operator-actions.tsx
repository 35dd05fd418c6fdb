import type { Connection } from '../api/connection';
import type { MonitorStore } from '../live/monitor-store';
import type { CommandView } from '../state/monitor-state';
import { ConfirmButton } from './common';
import { clock, duration } from './format';

/**
 * Operator actions on a machine: restart or drain it, or restart one service
 * on it. Each asks first, and its outcome follows it: the API's answer, the
 * command reaching the machine's stream, and the agent's report when it sends one.
 */
export function MachineActions({ connection, store, pool, machine, services }: { connection: Connection; store: MonitorStore; pool: string; machine: string; services: string[] }) {
  if (!connection.isOperator) return null;
  const send = (action: 'restart' | 'drain', service?: string) => async (reason: string) => {
    const answer = await connection.client.machineCommand(machine, action, { pool, service: service || undefined, reason: reason || undefined });
    store.dispatch({ type: 'command-requested', command: answer, by: connection.identity.key_id, at: Date.now() });
    return `${action}${service ? ` of ${service}` : ''} sent to ${machine} (command ${answer.command_id})`;
  };
  return (
    <div className="action-row" aria-label={`operator actions for ${machine}`}>
      <ConfirmButton
        label="Restart machine"
        title={`Restart ${machine}?`}
        description={<p>Every worker and service on <b>{machine}</b> restarts. Running jobs go back to the queue without using up their attempts.</p>}
        confirmLabel="Restart"
        danger
        askReason
        run={send('restart')}
      />
      <ConfirmButton
        label="Drain"
        title={`Drain ${machine}?`}
        description={<p><b>{machine}</b> takes no new jobs; running ones finish. Restart it to bring it back.</p>}
        askReason
        run={send('drain')}
      />
      {services.map((service) => (
        <ConfirmButton
          key={service}
          label={`Restart ${service}`}
          title={`Restart ${service} on ${machine}?`}
          description={<p>Only the <b>{service}</b> service restarts; its jobs go back to the queue.</p>}
          confirmLabel="Restart service"
          askReason
          run={send('restart', service)}
        />
      ))}
    </div>
  );
}

/** Where a command stands: requested, sent to the machine, done (ok or failed). */
export function commandStage(command: CommandView): { label: string; tone: string } {
  if (command.outcome === 'ok') return { label: 'done', tone: 'ok' };
  if (command.outcome === 'failed') return { label: 'failed', tone: 'bad' };
  if (command.announced) return { label: 'sent to machine', tone: 'info' };
  return { label: 'requested', tone: 'muted' };
}

export function CommandList({ commands, now }: { commands: CommandView[]; now: number }) {
  if (commands.length === 0) return null;
  return (
    <ul className="commands">
      {commands.map((command) => {
        const stage = commandStage(command);
        return (
          <li key={command.id} data-command={command.id} data-stage={stage.label}>
            <span className={`badge tone-${stage.tone}`}>{stage.label}</span>{' '}
            <b>{command.action}</b>
            {command.service ? ` ${command.service}` : ''} <span className="muted">at {clock(command.requestedAt)}</span>
            {command.doneAt !== undefined && <span className="muted"> · took {duration(command.doneAt - command.requestedAt)}</span>}
            {command.doneAt === undefined && <span className="muted"> · {duration(now - command.requestedAt)} ago</span>}
            {command.message && <div className="command-message">{command.message}</div>}
          </li>
        );
      })}
    </ul>
  );
}

/** Pause or resume one service's queue in one pool. */
export function PauseToggle({ connection, pool, service, paused }: { connection: Connection; pool: string; service: string; paused: boolean }) {
  if (!connection.isOperator) return null;
  return paused ? (
    <ConfirmButton
      label="Resume"
      title={`Resume ${service} in ${pool}?`}
      description={<p>Idle workers that can run <b>{service}</b> jobs are woken at once.</p>}
      run={async () => {
        await connection.client.setServicePaused(service, false, { pool });
        return `${service} resumed in ${pool}`;
      }}
    />
  ) : (
    <ConfirmButton
      label="Pause"
      title={`Pause ${service} in ${pool}?`}
      description={<p>No worker claims <b>{service}</b> jobs in <b>{pool}</b> until it is resumed; queued jobs keep their place.</p>}
      askReason
      danger
      run={async (reason) => {
        await connection.client.setServicePaused(service, true, { pool, reason: reason || undefined });
        return `${service} paused in ${pool}`;
      }}
    />
  );
}
