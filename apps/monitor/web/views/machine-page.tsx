import { type ReactNode, useEffect, useMemo, useRef, useState } from 'react';
import { MachineEventsPage } from '@emp/core';
import { type Connection, type LogEntry, describeError } from '../api/connection';
import { type MonitorStore, useMonitorState } from '../live/monitor-store';
import { type MachineRecord, isUnreadable, recordKey } from '../state/fleet-records';
import { machineHealth } from '../state/monitor-state';
import { Empty, Field, ShortId, StateBadge, href } from './common';
import { GpuList } from './machine-card';
import { ago, bytes, clock, dateTime, duration } from './format';
import { CommandList, MachineActions } from './operator-actions';

/** One machine in full: status, workers, services with their restart history, model cache, live logs, operator actions. */
export function MachinePage({ connection, store, pool, id, now }: { connection: Connection; store: MonitorStore; pool: string; id: string; now: number }) {
  const key = recordKey(pool, id);
  const machine = useMonitorState(store, (s) => s.machines[key]);
  const allWorkers = useMonitorState(store, (s) => s.workers);
  const history = useMonitorState(store, (s) => s.processHistory[key]);
  const allCommands = useMonitorState(store, (s) => s.commands);
  const workers = useMemo(() => Object.values(allWorkers).filter((w) => w.pool === pool && w.machine === id).sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true })), [allWorkers, pool, id]);
  const commands = useMemo(() => Object.values(allCommands).filter((c) => c.pool === pool && c.machine === id).sort((a, b) => b.requestedAt - a.requestedAt), [allCommands, pool, id]);
  const historyNote = useMachineHistory(connection, store, pool, id);

  if (!machine) {
    return (
      <section>
        <p>
          <a href="#/">← Fleet</a>
        </p>
        <Empty>Machine {id} in pool {pool} is not (or not yet) known to this page.</Empty>
      </section>
    );
  }
  const processes = Array.isArray(machine.processes) ? machine.processes : [];
  const services = [...new Set([...machine.services, ...processes.filter((p) => p.kind === 'service').map((p) => p.name)])];
  return (
    <section className="machine-page" aria-label={`machine ${id}`} data-machine={id}>
      <p className="crumbs">
        <a href="#/">Fleet</a> / {pool} / <b>{id}</b>
      </p>
      <div className="page-head">
        <h2>{id}</h2>
        <StateBadge state={machine.state} />
        <StateBadge state={machineHealth(machine, workers)} title="derived from the workers' states" />
      </div>
      <MachineActions connection={connection} store={store} pool={pool} machine={id} services={services} />
      <CommandList commands={commands.slice(0, 5)} now={now} />
      <div className="grid-2">
        <div className="panel">
          <h3>Status</h3>
          <dl className="fields">
            <Field label="pool">{machine.pool}</Field>
            <Field label="region">{machine.region ?? '–'}</Field>
            <Field label="host">{machine.hostname ?? '–'}</Field>
            <Field label="state since">{dateTime(machine.stateSince)}</Field>
            <Field label="up">{duration(machine.startedAt ?? machine.registeredAt ? now - (machine.startedAt ?? machine.registeredAt)! : undefined)}</Field>
            <Field label="last seen">{ago(machine.lastSeen, now)}</Field>
            <Field label="registered">{dateTime(machine.registeredAt)}</Field>
          </dl>
          <GpuList gpus={machine.gpus} />
        </div>
        <div className="panel">
          <h3>Workers</h3>
          {workers.length === 0 ? (
            <Empty>No worker registered on this machine.</Empty>
          ) : (
            <Table columns={['worker', 'state', 'since', 'job']}>
                {workers.map((w) => (
                  <tr key={w.key} data-worker={w.id} data-state={w.state}>
                    <td className="mono">{w.id}</td>
                    <td>
                      <StateBadge state={w.state} />
                    </td>
                    <td className="muted">{ago(w.stateSince, now)}</td>
                    <td>{w.currentJob ? <ShortId value={w.currentJob} keep={28} href={href('jobs', w.currentJob)} /> : '–'}</td>
                  </tr>
                ))}
            </Table>
          )}
        </div>
      </div>
      <div className="grid-2">
        <div className="panel">
          <h3>Processes and restart history</h3>
          {isUnreadable(machine.processes) && <p className="unknown">Processes: unknown ({machine.processes.unreadable})</p>}
          {processes.length > 0 && (
            <Table columns={['process', 'kind', 'state', 'restarts']}>
                {processes.map((p) => (
                  <tr key={p.name}>
                    <td className="mono">{p.name}</td>
                    <td>{p.kind ?? '–'}</td>
                    <td>
                      <StateBadge state={p.state} />
                    </td>
                    <td>{p.restarts ?? 0}</td>
                  </tr>
                ))}
            </Table>
          )}
          {history && history.length > 0 ? (
            <ol className="history">
              {[...history].reverse().map((change) => (
                <li key={change.id}>
                  <span className="muted mono">{clock(change.ts)}</span> <span className="mono">{change.process}</span> <StateBadge state={change.state} />
                  {change.exitCode !== undefined && <span className="muted"> exit {change.exitCode}</span>}
                  {change.restarts !== undefined && <span className="muted"> · restarts {change.restarts}</span>}
                </li>
              ))}
            </ol>
          ) : (
            <p className="muted">No process restart recorded.</p>
          )}
          {historyNote && <p className="muted history-note">{historyNote}</p>}
        </div>
        <div className="panel">
          <h3>Model cache</h3>
          <ModelCacheSummary cache={machine.modelCache} />
          {machine.models === undefined && <Empty>This machine does not report its models.</Empty>}
          {isUnreadable(machine.models) && <p className="unknown">Models: unknown ({machine.models.unreadable})</p>}
          {Array.isArray(machine.models) && (
            machine.models.length === 0 ? (
              <Empty>No model on disk.</Empty>
            ) : (
              <table>
                <thead>
                  <tr>
                    <th>model</th>
                    <th>size</th>
                    <th>last used</th>
                    <th>in use</th>
                  </tr>
                </thead>
                <tbody>
                  {machine.models.map((m) => (
                    <tr key={m.name}>
                      <td className="mono">{m.name}</td>
                      <td>{'size_bytes' in m ? bytes(m.size_bytes) : '–'}</td>
                      <td className="muted">{'last_used' in m && m.last_used ? ago(m.last_used, now) : '–'}</td>
                      <td>{'in_use' in m && m.in_use ? 'by a job' : '–'}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )
          )}
        </div>
      </div>
      <MachineLogs connection={connection} pool={pool} machine={id} processes={[...processes.map((p) => p.name), ...workers.map((w) => w.id)]} />
      <details className="panel">
        <summary>All fields as stored</summary>
        <pre className="code">{JSON.stringify(machine.fields, null, 2)}</pre>
      </details>
    </section>
  );
}

/** The cache's use of its budget, free disk, and downloads in progress. */
function ModelCacheSummary({ cache }: { cache: MachineRecord['modelCache'] }) {
  if (!cache) return null;
  const { downloads } = cache;
  return (
    <>
      <p>
        <span className="muted">used</span> {bytes(cache.usedBytes)} <span className="muted">of</span> {bytes(cache.budgetBytes)}
        {cache.diskFreeBytes !== undefined && (
          <>
            {' '}
            <span className="muted">· disk free</span> {bytes(cache.diskFreeBytes)}
          </>
        )}
      </p>
      {isUnreadable(downloads) && <p className="unknown">Downloads: unknown ({downloads.unreadable})</p>}
      {Array.isArray(downloads) && downloads.length > 0 && (
        <ul className="downloads">
          {downloads.map((d) => (
            <li key={d.model}>
              <span className="mono">{d.model}</span> <span className="muted">downloading</span> {bytes(d.received)}
              {d.total !== undefined && (
                <>
                  {' '}
                  <span className="muted">of</span> {bytes(d.total)}
                </>
              )}
            </li>
          ))}
        </ul>
      )}
    </>
  );
}

const MAX_LOG_LINES = 2_000;

/** Live process logs streamed from the machine agent through the API (per worker and per service). */
function MachineLogs({ connection, pool, machine, processes }: { connection: Connection; pool: string; machine: string; processes: string[] }) {
  const [process, setProcess] = useState('');
  const [follow, setFollow] = useState(true);
  const [lines, setLines] = useState<LogEntry[]>([]);
  const [state, setState] = useState<{ kind: 'loading' } | { kind: 'unavailable'; reason: string } | { kind: 'ready' } | { kind: 'error'; message: string }>({ kind: 'loading' });
  const box = useRef<HTMLPreElement>(null);
  const choices = useMemo(() => [...new Set(processes)].sort(), [processes.join(',')]);

  useEffect(() => {
    const abort = new AbortController();
    setLines([]);
    setState({ kind: 'loading' });
    void (async () => {
      try {
        const page = await connection.machineLogs(machine, { pool, process: process || undefined });
        if (abort.signal.aborted) return;
        if (!page.available) {
          setState({ kind: 'unavailable', reason: page.reason });
          return;
        }
        setLines(page.entries.slice(-MAX_LOG_LINES));
        setState({ kind: 'ready' });
        if (!follow) return;
        const after = page.entries.at(-1)?.id ?? page.next;
        let pending: LogEntry[] = [];
        let timer: ReturnType<typeof setTimeout> | undefined;
        for await (const entry of connection.followMachineLogs(machine, { pool, process: process || undefined, after, signal: abort.signal })) {
          // batched: a chatty process must not re-render the page per line
          pending.push(entry);
          timer ??= setTimeout(() => {
            const batch = pending;
            pending = [];
            timer = undefined;
            setLines((current) => [...current, ...batch].slice(-MAX_LOG_LINES));
          }, 100);
        }
      } catch (error) {
        if (!abort.signal.aborted) setState({ kind: 'error', message: describeError(error) });
      }
    })();
    return () => abort.abort();
  }, [connection, machine, pool, process, follow]);

  useEffect(() => {
    if (follow && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [lines, follow]);

  return (
    <div className="panel" aria-label="machine logs">
      <div className="panel-head">
        <h3>Logs</h3>
        <label>
          Process
          <select value={process} onChange={(e) => setProcess(e.target.value)}>
            <option value="">all</option>
            {choices.map((name) => (
              <option key={name}>{name}</option>
            ))}
          </select>
        </label>
        <label className="inline">
          <input type="checkbox" checked={follow} onChange={(e) => setFollow(e.target.checked)} /> follow
        </label>
      </div>
      {state.kind === 'unavailable' && <p className="muted logs-unavailable">{state.reason}</p>}
      {state.kind === 'error' && <p className="unknown">Logs could not be read: {state.message}</p>}
      {state.kind === 'loading' && <p className="muted">Loading logs…</p>}
      {state.kind === 'ready' && (
        <pre className="logs" ref={box}>
          {lines.length === 0 ? <span className="muted">no lines yet</span> : lines.map((entry) => (
            <div key={entry.id} className={entry.stream === 'stderr' ? 'log-err' : ''}>
              <span className="muted">{clock(entry.ts)}</span> <span className="log-process">{entry.process}</span> {entry.line}
            </div>
          ))}
        </pre>
      )}
    </div>
  );
}

/**
 * Loads the machine's recorded restarts and commands when its page opens, so
 * the history does not start with the page; answers a note when the history
 * could not be read or may be cut short.
 */
function useMachineHistory(connection: Connection, store: MonitorStore, pool: string, id: string): string | undefined {
  const [note, setNote] = useState<string>();
  useEffect(() => {
    if (!connection.seesFleet) return;
    let stopped = false;
    connection.client
      .machineEvents(id, { pool })
      .then((answer) => {
        if (stopped) return;
        const page = MachineEventsPage.safeParse(answer);
        if (!page.success) {
          setNote(`Recorded history unreadable: ${page.error.issues[0]?.path.join('.')}: ${page.error.issues[0]?.message}`);
          return;
        }
        store.dispatch({ type: 'machine-events', pool, machine: id, events: page.data.events });
        setNote(page.data.complete ? undefined : `Only the newest ${page.data.scanned} events of pool ${pool} were searched; older history may exist.`);
      })
      .catch((error: unknown) => {
        if (!stopped) setNote(`Recorded history not loaded: ${describeError(error)}`);
      });
    return () => {
      stopped = true;
    };
  }, [connection, store, pool, id]);
  return note;
}

/** A table with a header row of these columns around its body rows. */
function Table({ columns, children }: { columns: readonly string[]; children: ReactNode }) {
  return (
    <table>
      <thead>
        <tr>
          {columns.map((column) => (
            <th key={column}>{column}</th>
          ))}
        </tr>
      </thead>
      <tbody>{children}</tbody>
    </table>
  );
}
