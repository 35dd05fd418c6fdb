import { type EventView, JOB_STATES, type JobProgressView, type JobState, type LiveServerMessage, MACHINE_EVENT_STATES, type QueueHistory, type QueueHistoryRange, type QueueReport, type QueueSample, TERMINAL_STATES, type WaitDigest, assertNever, compareStreamIds, mergeWaitDigests } from '@emp/core';
import { type MachineRecord, type ProcessStatus, type WorkerRecord, isUnreadable, parseMachine, parseWorker, recordKey } from './fleet-records';
import { type EventViewOf, type LiveEvent, type LiveEventOf, type WithoutType, toStreamEventView } from './live-event';

/**
 * Everything the monitor shows about the fleet, as one value: a snapshot from
 * the live feed, then its deltas, applied in batches by one pure reducer (the
 * page applies whatever arrived once per animation frame). Registry fields the
 * feed does not carry (a machine's GPU figures) come from periodic reads of
 * /v1/machines and /v1/workers, merged without undoing newer events.
 */

export type { LiveEvent } from './live-event';
export type MonitorSnapshot = Extract<LiveServerMessage, { type: 'monitor.snapshot' }>;

/** A job as far as the feed told: enough for a live table row. */
export interface LiveJob {
  id: string;
  pool: string;
  state: JobState;
  tenant?: string;
  service?: string;
  worker?: string;
  machine?: string;
  attempt?: number;
  /** as the API answers it: once the job has ended, stage is its terminal state */
  progress?: JobProgressView;
  /** ts of the last event about it */
  updatedAt: number;
  /** ts of its job.queued event, when seen */
  queuedAt?: number;
  /** when a worker first took it (ms since submit), when seen */
  waitMs?: number;
}

/** An operator command for a machine: requested (the API's answer), sent (machine.command), done (machine.command.done). */
export interface CommandView {
  id: string;
  pool: string;
  machine: string;
  action: string;
  service?: string;
  by?: string;
  requestedAt: number;
  /** the machine.command event was seen in the feed */
  announced: boolean;
  outcome?: 'ok' | 'failed';
  message?: string;
  doneAt?: number;
}

/** One change of a supervised process (machine.process): the machine's restart history. */
export interface ProcessChange {
  id: string;
  ts: number;
  process: string;
  state: string;
  restarts?: number;
  exitCode?: number;
}

export type Sample = readonly [ts: number, value: number];

export interface MonitorState {
  /** feed cursors: the id of the last event applied per pool (resume after them) */
  cursors: Record<string, string>;
  snapshotAt?: number;
  machines: Record<string, MachineRecord>;
  workers: Record<string, WorkerRecord>;
  queues?: QueueReport;
  /** queue depth and oldest age over the last hour, per series (`pool`, `pool/service`, `pool/#class`) */
  depth: Record<string, Sample[]>;
  age: Record<string, Sample[]>;
  jobs: Record<string, LiveJob>;
  commands: Record<string, CommandView>;
  processHistory: Record<string, ProcessChange[]>;
  /** the API's queue history (throughput, waits, depth) as last read, per range: the page's figures for them */
  history: Partial<Record<QueueHistoryRange, QueueHistory>>;
  eventsApplied: number;
  lastEventAt?: number;
}

export type MonitorAction =
  | { type: 'snapshot'; snapshot: MonitorSnapshot; at: number }
  | { type: 'events'; events: LiveEvent[] }
  | { type: 'queues'; report: QueueReport }
  /** GET /v1/queues/history: the samples the API recorded before this page opened (or while it was away) */
  | { type: 'queue-history'; history: QueueHistory }
  /** GET /v1/machines/:id/events: a machine's process transitions and commands from before this page opened */
  | { type: 'machine-events'; pool: string; machine: string; events: EventView[] }
  | { type: 'machines'; machines: Array<Record<string, unknown>> }
  | { type: 'workers'; workers: Array<Record<string, unknown>> }
  | { type: 'command-requested'; command: { command_id: string; machine: string; pool: string; action: string; service?: string }; by?: string; at: number };

export const HOUR_MS = 3_600_000;
/** jobs kept in memory for the live table; terminal ones beyond it go first, oldest first */
export const MAX_LIVE_JOBS = 2_000;
const MAX_PROCESS_CHANGES = 100;
const MAX_COMMANDS = 200;

export const initialState: MonitorState = {
  cursors: {},
  machines: {},
  workers: {},
  depth: {},
  age: {},
  jobs: {},
  commands: {},
  processHistory: {},
  history: {},
  eventsApplied: 0,
};

const TERMINAL = new Set<string>(TERMINAL_STATES);
const JOB_STATE_NAMES = new Set<string>(JOB_STATES);

export function monitorReducer(state: MonitorState, action: MonitorAction): MonitorState {
  switch (action.type) {
    case 'snapshot':
      return applySnapshot(state, action.snapshot, action.at);
    case 'events':
      return applyEvents(state, action.events);
    case 'queues':
      return applyQueueReport(state, action.report);
    case 'queue-history':
      return applyQueueHistory(state, action.history);
    case 'machine-events':
      return applyMachineHistory(state, action.pool, action.machine, action.events);
    case 'machines': {
      const machines = action.machines.map(parseMachine);
      const next = mergeRegistry(state, 'machines', machines);
      return { ...next, commands: commandsFromMachines(next.commands, machines) };
    }
    case 'workers':
      return mergeRegistry(state, 'workers', action.workers.map(parseWorker));
    case 'command-requested': {
      const { command } = action;
      const known = state.commands[command.command_id];
      const view: CommandView = {
        id: command.command_id,
        pool: command.pool,
        machine: command.machine,
        action: command.action,
        service: command.service || undefined,
        by: action.by || undefined,
        requestedAt: action.at,
        announced: false,
        ...known,
      };
      return { ...state, commands: boundCommands({ ...state.commands, [view.id]: view }) };
    }
  }
}

function applySnapshot(state: MonitorState, snapshot: MonitorSnapshot, at: number): MonitorState {
  const machines: Record<string, MachineRecord> = {};
  for (const raw of asRecords(snapshot.machines)) {
    const machine = parseMachine(raw);
    if (machine) machines[machine.key] = machine;
  }
  const workers: Record<string, WorkerRecord> = {};
  for (const raw of asRecords(snapshot.workers)) {
    const worker = parseWorker(raw);
    if (!worker) continue;
    // what the feed told about its current job survives a re-snapshot while it stays busy
    const current = state.workers[worker.key]?.currentJob;
    workers[worker.key] = current && worker.state === 'busy' ? { ...worker, currentJob: current } : worker;
  }
  // a card never vanishes: a machine or worker this page saw stays, unless the registry removed it (gone)
  for (const [key, machine] of Object.entries(state.machines)) machines[key] ??= machine;
  for (const [key, worker] of Object.entries(state.workers)) workers[key] ??= worker;
  const next: MonitorState = { ...state, cursors: { ...snapshot.cursors }, snapshotAt: at, machines, workers, commands: commandsFromMachines(state.commands, Object.values(machines)) };
  return isQueueReport(snapshot.queues) ? applyQueueReport(next, snapshot.queues) : next;
}

function asRecords(value: unknown): Array<Record<string, unknown>> {
  return Array.isArray(value) ? value.filter((item): item is Record<string, unknown> => typeof item === 'object' && item !== null) : [];
}

function isQueueReport(value: unknown): value is QueueReport {
  return typeof value === 'object' && value !== null && Array.isArray((value as QueueReport).pools) && typeof (value as QueueReport).now === 'number';
}

function applyQueueReport(state: MonitorState, report: QueueReport): MonitorState {
  const depth = { ...state.depth };
  const age = { ...state.age };
  const add = (key: string, d: number, oldest: number | undefined) => {
    depth[key] = appendSample(depth[key], [report.now, d]);
    age[key] = appendSample(age[key], [report.now, oldest ?? 0]);
  };
  for (const pool of report.pools) {
    add(pool.pool, pool.depth, pool.oldest_age_ms);
    for (const service of pool.services) add(`${pool.pool}/${service.service}`, service.depth, service.oldest_age_ms);
    for (const cls of pool.classes) add(`${pool.pool}/#${cls.requirement_class}`, cls.depth, cls.oldest_age_ms);
  }
  // a series whose queue emptied gets zeros, so its chart comes down instead of freezing at the last depth
  for (const key of Object.keys(depth)) {
    const last = depth[key]!.at(-1);
    if (last && last[0] !== report.now) {
      depth[key] = appendSample(depth[key], [report.now, 0]);
      age[key] = appendSample(age[key], [report.now, 0]);
    }
    if (depth[key]!.every(([, value]) => value === 0) && depth[key]!.length > 1 && depth[key]![0]![0] < report.now - HOUR_MS + 60_000) {
      delete depth[key];
      delete age[key];
    }
  }
  return { ...state, queues: report, depth, age };
}

/**
 * The API's history kept as read (throughput and waits come only from it),
 * and the hour's depths merged into the live series by time (a sample at a time
 * already held is the same reading), the hour up to the newest kept. A series
 * a pool's sample does not name had no waiting job then: it reads 0.
 */
function applyQueueHistory(state: MonitorState, read: QueueHistory): MonitorState {
  const range = read.range ?? 'hour';
  const kept = { ...state, history: { ...state.history, [range]: read } };
  return range === 'hour' ? mergeHistoryDepths(kept, read) : kept;
}

function mergeHistoryDepths(state: MonitorState, history: QueueHistory): MonitorState {
  if (history.samples.length === 0) return state;
  const readings = new Map<string, Array<[Sample, Sample]>>();
  const poolOf = (key: string) => key.split('/')[0]!;
  const seriesOfPool = new Map<string, Set<string>>();
  const note = (pool: string, key: string) => {
    if (!seriesOfPool.has(pool)) seriesOfPool.set(pool, new Set());
    seriesOfPool.get(pool)!.add(key);
  };
  for (const key of Object.keys(state.depth)) note(poolOf(key), key);
  const keysOf = (sample: QueueHistory['samples'][number]) => [
    [sample.pool, sample] as const,
    ...sample.services.map((s) => [`${sample.pool}/${s.service}`, s] as const),
    ...sample.classes.map((c) => [`${sample.pool}/#${c.requirement_class}`, c] as const),
  ];
  for (const sample of history.samples) for (const [key] of keysOf(sample)) note(sample.pool, key);
  for (const sample of history.samples) {
    const named = new Map<string, { depth: number; oldest_age_ms?: number }>(keysOf(sample));
    for (const key of seriesOfPool.get(sample.pool) ?? []) {
      const reading = named.get(key);
      const pair: [Sample, Sample] = [[sample.ts, reading?.depth ?? 0], [sample.ts, reading?.oldest_age_ms ?? 0]];
      const list = readings.get(key);
      if (list) list.push(pair);
      else readings.set(key, [pair]);
    }
  }
  const depth = { ...state.depth };
  const age = { ...state.age };
  for (const [key, pairs] of readings) {
    depth[key] = mergeSamples(depth[key], pairs.map(([d]) => d));
    age[key] = mergeSamples(age[key], pairs.map(([, a]) => a));
  }
  return { ...state, depth, age };
}

function mergeSamples(series: Sample[] | undefined, recorded: Sample[]): Sample[] {
  const byTime = new Map<number, Sample>(recorded.map((sample) => [sample[0], sample]));
  for (const sample of series ?? []) byTime.set(sample[0], sample);
  const merged = [...byTime.values()].sort((a, b) => a[0] - b[0]);
  const from = merged.at(-1)![0] - HOUR_MS;
  return merged.filter(([ts]) => ts > from);
}

function appendSample(series: Sample[] | undefined, sample: Sample): Sample[] {
  const from = sample[0] - HOUR_MS;
  const kept = (series ?? []).filter(([ts]) => ts > from && ts < sample[0]);
  kept.push(sample);
  return kept;
}

/**
 * Commands as the machines' hashes record them: the last one sent (so a page
 * opened later still shows it) and the last one the machine reported done
 * in its status snapshot (an agent may report through its snapshot instead of
 * a machine.command.done event).
 */
function commandsFromMachines(commands: Record<string, CommandView>, machines: Array<MachineRecord | undefined>): Record<string, CommandView> {
  let next = commands;
  const put = (view: CommandView) => {
    if (next === commands) next = { ...commands };
    next[view.id] = view;
  };
  for (const machine of machines) {
    if (!machine) continue;
    const sent = machine.lastCommand;
    if (sent && !next[sent.id]) {
      put({ id: sent.id, pool: machine.pool, machine: machine.id, action: sent.action, service: sent.service, requestedAt: sent.at ?? 0, announced: true });
    }
    const done = machine.lastCommandDone;
    const known = done ? next[done.id] : undefined;
    if (done && known && !known.outcome) {
      put({ ...known, announced: true, outcome: done.outcome, message: done.message || known.message, doneAt: done.at ?? known.requestedAt });
    }
  }
  return next === commands ? commands : boundCommands(next);
}

/** A registry read (GET /v1/machines or /v1/workers): fields refreshed; the state kept where the feed told something newer. */
function mergeRegistry<K extends 'machines' | 'workers'>(state: MonitorState, kind: K, records: Array<MonitorState[K][string] | undefined>): MonitorState {
  const merged = { ...state[kind] } as Record<string, MachineRecord | WorkerRecord>;
  for (const record of records) {
    if (!record) continue;
    const known = merged[record.key];
    if (known && (known.stateSince ?? 0) > (record.stateSince ?? 0)) {
      merged[record.key] = { ...record, state: known.state, stateSince: known.stateSince, ...('currentJob' in known ? { currentJob: known.currentJob } : {}) };
    } else {
      merged[record.key] = known && 'currentJob' in known && record.state === 'busy' ? { ...record, currentJob: known.currentJob } : record;
    }
  }
  return { ...state, [kind]: merged };
}

/** Copies a record of the state the first time a batch changes it, and only then. */
class BatchDraft {
  private copied = new Set<string>();
  constructor(readonly next: MonitorState) {}
  table<K extends 'machines' | 'workers' | 'jobs' | 'commands' | 'processHistory'>(name: K): MonitorState[K] {
    if (!this.copied.has(name)) {
      this.copied.add(name);
      (this.next as unknown as Record<string, unknown>)[name] = { ...(this.next[name] as object) };
    }
    return this.next[name];
  }
}

export function applyEvents(state: MonitorState, events: readonly LiveEvent[]): MonitorState {
  if (events.length === 0) return state;
  const draft = new BatchDraft({ ...state, cursors: { ...state.cursors } });
  const next = draft.next;
  let applied = 0;
  for (const event of events) {
    // cursors are per stream: per shard of a pool (its own name for shard 0)
    const stream = event.shard ?? event.pool;
    const cursor = next.cursors[stream];
    // the feed resumes after our cursor; anything at or before it was applied already
    if (cursor !== undefined && compareStreamIds(event.id, cursor) <= 0) continue;
    next.cursors[stream] = event.id;
    applied += 1;
    next.lastEventAt = Math.max(next.lastEventAt ?? 0, event.ts);
    applyEvent(draft, event);
  }
  if (applied === 0) return state;
  next.eventsApplied = state.eventsApplied + applied;
  if (draft.next.jobs !== state.jobs) next.jobs = boundJobs(next.jobs);
  return next;
}

const text = (value: unknown): string | undefined => (typeof value === 'string' && value !== '' ? value : undefined);

/** One event, by its type: every type of core's union has its case (or says why it changes nothing here). */
function applyEvent(draft: BatchDraft, event: LiveEvent): void {
  switch (event.event) {
    case 'job.queued':
    case 'job.starting':
    case 'job.running':
    case 'job.progress':
    case 'job.retrying':
    case 'job.succeeded':
    case 'job.failed':
    case 'job.canceled':
    case 'job.expired':
      return applyJobEvent(draft, event);
    case 'worker.registered':
    case 'worker.idle':
    case 'worker.busy':
    case 'worker.draining':
    case 'worker.offline':
    case 'worker.gone':
      return applyWorkerEvent(draft, event);
    case 'machine.command':
      return noteCommand(draft, event);
    case 'machine.command.done':
      return noteCommandDone(draft, event);
    case 'machine.process':
      return noteProcess(draft, event);
    case 'machine.starting':
    case 'machine.ready':
    case 'machine.degraded':
    case 'machine.draining':
    case 'machine.offline':
    case 'machine.gone':
      return applyMachineState(draft, event);
    case 'service.paused':
    case 'service.resumed':
      return applyServiceEvent(draft, event);
    // routability shows through the queue reads; a clock gap is the scheduler's own concern;
    // the Planner view reads the planner's decisions from GET /v1/planner
    case 'class.routable':
    case 'clock.unwatched':
    case 'planner.decision':
    // the Workflow view follows one workflow's own feed (GET /v1/workflows/:id/events)
    case 'workflow.submitted':
    case 'workflow.step_succeeded':
    case 'workflow.step_failed':
    case 'workflow.succeeded':
    case 'workflow.failed':
    case 'workflow.canceled':
    // a type this page does not know (a newer API): its cursor moved, nothing else
    case 'unknown':
      return;
    default:
      assertNever(event);
  }
}

type JobLiveEvent = LiveEventOf<`job.${string}` & LiveEvent['event']>;

function applyJobEvent(draft: BatchDraft, event: JobLiveEvent): void {
  const id = text(event.job);
  const state = text(event.state);
  if (!id || !state || !JOB_STATE_NAMES.has(state)) return;
  const jobs = draft.table('jobs');
  const known = jobs[id];
  const job: LiveJob = { ...known, id, pool: event.pool, state: state as JobState, updatedAt: event.ts };
  const tenant = text(event.tenant);
  if (tenant) job.tenant = tenant;
  const service = text(event.service);
  if (service) job.service = service;
  const worker = 'worker' in event ? text(event.worker) : undefined;
  if (worker) job.worker = worker;
  switch (event.event) {
    case 'job.queued':
      job.queuedAt ??= event.ts;
      delete job.worker;
      delete job.machine;
      delete job.progress;
      break;
    case 'job.starting': {
      if (event.machine) job.machine = event.machine;
      job.attempt = event.attempt;
      delete job.progress;
      const submittedAt = Number(event.submitted_at);
      if (Number.isFinite(submittedAt) && submittedAt > 0) job.waitMs = Math.max(0, event.ts - submittedAt);
      break;
    }
    case 'job.progress':
      if (typeof event.progress === 'object' && event.progress !== null) job.progress = event.progress;
      break;
  }
  // a finished job's progress says how it ended, as the API's job view does (docs/api.md#progress)
  if (TERMINAL.has(state)) job.progress = { ...job.progress, stage: state as JobProgressView['stage'] };
  jobs[id] = job;

  // the worker's current job, for its card
  const workerId = worker ?? known?.worker;
  if (workerId) {
    const workers = draft.next.workers;
    const key = recordKey(event.pool, workerId);
    const record = workers[key];
    if (record) {
      const holds = state === 'starting' || state === 'running';
      if (holds && record.currentJob !== id) draft.table('workers')[key] = { ...record, currentJob: id };
      else if (!holds && record.currentJob === id) {
        const { currentJob: _, ...rest } = record;
        draft.table('workers')[key] = rest;
      }
    }
  }
}

function applyWorkerEvent(draft: BatchDraft, event: LiveEventOf<`worker.${string}` & LiveEvent['event']>): void {
  const id = text(event.worker);
  if (!id) return;
  const key = recordKey(event.pool, id);
  const workers = draft.table('workers');
  if (event.event === 'worker.gone') {
    delete workers[key];
    return;
  }
  const known = workers[key];
  const machine = text(event.machine) ?? known?.machine ?? '';
  const registered = event.event === 'worker.registered';
  const state = registered ? (known?.state ?? 'starting') : event.state;
  const worker: WorkerRecord = known
    ? { ...known, machine, state, stateSince: registered ? known.stateSince : event.ts, lastSeen: Math.max(known.lastSeen ?? 0, event.ts) }
    : { key, pool: event.pool, id, machine, state, stateSince: event.ts, lastSeen: event.ts, registeredAt: event.ts, capabilities: undefined, fields: {} };
  if (state === 'offline' || state === 'idle') delete worker.currentJob;
  workers[key] = worker;
}

type MachineStateType = `machine.${(typeof MACHINE_EVENT_STATES)[number]}`;

function applyMachineState(draft: BatchDraft, event: LiveEventOf<MachineStateType>): void {
  const id = text(event.machine);
  if (!id) return;
  const key = recordKey(event.pool, id);
  const machines = draft.table('machines');
  if (event.event === 'machine.gone') {
    delete machines[key];
    return;
  }
  const known = machines[key];
  machines[key] = known
    ? { ...known, state: event.state, stateSince: event.ts, lastSeen: Math.max(known.lastSeen ?? 0, event.ts) }
    : { key, pool: event.pool, id, state: event.state, stateSince: event.ts, lastSeen: event.ts, registeredAt: event.ts, services: [], gpus: undefined, processes: undefined, models: undefined, fields: {} };
}

/** A machine.command event, from the feed or a machine's recorded history. */
type CommandEvent = WithoutType<EventViewOf<'machine.command'>>;
type CommandDoneEvent = WithoutType<EventViewOf<'machine.command.done'>>;
type ProcessEvent = WithoutType<EventViewOf<'machine.process'>>;

function noteCommand(draft: BatchDraft, event: CommandEvent, options = { touchMachine: true }): void {
  const id = text(event.command);
  const machine = text(event.machine);
  if (!id || !machine) return;
  const commands = draft.table('commands');
  const service = text(event.service);
  const by = text(event.by);
  commands[id] = {
    id,
    pool: event.pool,
    machine,
    action: text(event.action) ?? 'unknown',
    service,
    by,
    requestedAt: event.ts,
    ...commands[id],
    announced: true,
  };
  draft.next.commands = boundCommands(commands);
  if (!options.touchMachine) return;
  const machines = draft.table('machines');
  const key = recordKey(event.pool, machine);
  const known = machines[key];
  if (known) machines[key] = { ...known, lastCommand: { action: commands[id]!.action, id, service, at: event.ts } };
}

function noteCommandDone(draft: BatchDraft, event: CommandDoneEvent): void {
  const id = text(event.command);
  const machine = text(event.machine);
  if (!id || !machine) return;
  const commands = draft.table('commands');
  const outcome = event.outcome === 'ok' || event.outcome === 'failed' ? event.outcome : 'failed';
  const message = text(event.message);
  const known = commands[id];
  commands[id] = {
    id,
    pool: event.pool,
    machine,
    action: text(event.action) ?? known?.action ?? 'unknown',
    requestedAt: known?.requestedAt ?? event.ts,
    ...known,
    announced: true,
    outcome,
    message: message ?? known?.message,
    doneAt: event.ts,
  };
}

/** A machine.process event as a line of the restart history; undefined when it lacks the process or state. */
function processChange(event: ProcessEvent): ProcessChange | undefined {
  const process = text(event.process);
  const state = text(event.state);
  if (!process || !state) return undefined;
  const restarts = Number(event.restarts);
  const exitCode = event.exit_code === undefined || event.exit_code === '' ? NaN : Number(event.exit_code);
  return {
    id: event.id,
    ts: event.ts,
    process,
    state,
    restarts: Number.isFinite(restarts) ? restarts : undefined,
    exitCode: Number.isFinite(exitCode) ? exitCode : undefined,
  };
}

/**
 * A machine's recorded history merged with what the feed brought, in stream
 * order without repeats; commands this page did not know are added. Process
 * states on the card are left to the feed and status snapshots, which are newer.
 */
function applyMachineHistory(state: MonitorState, pool: string, machine: string, events: readonly EventView[]): MonitorState {
  const key = recordKey(pool, machine);
  const changes = new Map((state.processHistory[key] ?? []).map((change) => [change.id, change]));
  const draft = new BatchDraft({ ...state });
  for (const view of events) {
    const event = toStreamEventView(view);
    if (event?.type === 'machine.process') {
      const change = processChange(event);
      if (change) changes.set(change.id, change);
    } else if (event?.type === 'machine.command') {
      if (!state.commands[event.command]) noteCommand(draft, { ...event, pool, machine }, { touchMachine: false });
    } else if (event?.type === 'machine.command.done') {
      if (!state.commands[event.command]?.outcome) noteCommandDone(draft, { ...event, pool, machine });
    }
  }
  const history = [...changes.values()].sort((a, b) => compareStreamIds(a.id, b.id)).slice(-MAX_PROCESS_CHANGES);
  return { ...draft.next, processHistory: { ...state.processHistory, [key]: history } };
}

function noteProcess(draft: BatchDraft, event: ProcessEvent): void {
  const change = processChange(event);
  if (!change) return;
  const key = recordKey(event.pool, event.machine);
  const { process, state } = change;
  const history = draft.table('processHistory');
  history[key] = [...(history[key] ?? []), change].slice(-MAX_PROCESS_CHANGES);
  // the card shows the process's new state at once, before the next status snapshot
  const machines = draft.table('machines');
  const machine = machines[key];
  if (machine && Array.isArray(machine.processes)) {
    const processes: ProcessStatus[] = machine.processes.map((p) => (p.name === process ? { ...p, state, restarts: change.restarts ?? p.restarts } : p));
    machines[key] = { ...machine, processes };
  }
}

function applyServiceEvent(draft: BatchDraft, event: LiveEventOf<'service.paused' | 'service.resumed'>): void {
  const service = text(event.service);
  const queues = draft.next.queues;
  if (!service || !queues) return;
  const paused = event.event === 'service.paused';
  const by = text(event.by);
  const reason = event.event === 'service.paused' ? text(event.reason) : undefined;
  draft.next.queues = {
    ...queues,
    pools: queues.pools.map((pool) => {
      if (pool.pool !== event.pool) return pool;
      const others = pool.paused.filter((p) => p.service !== service);
      return {
        ...pool,
        paused: paused ? [...others, { service, since: event.ts, by, reason }] : others,
        services: pool.services.map((s) => (s.service === service ? { ...s, paused } : s)),
      };
    }),
  };
}

function boundJobs(jobs: Record<string, LiveJob>): Record<string, LiveJob> {
  const ids = Object.keys(jobs);
  if (ids.length <= MAX_LIVE_JOBS) return jobs;
  // drop finished jobs first, oldest first, down to 3/4 of the bound so this runs rarely
  const target = Math.floor(MAX_LIVE_JOBS * 0.75);
  const byAge = Object.values(jobs).sort((a, b) => Number(TERMINAL.has(b.state)) - Number(TERMINAL.has(a.state)) || a.updatedAt - b.updatedAt);
  const kept = { ...jobs };
  for (const job of byAge.slice(0, ids.length - target)) delete kept[job.id];
  return kept;
}

function boundCommands(commands: Record<string, CommandView>): Record<string, CommandView> {
  const list = Object.values(commands);
  if (list.length <= MAX_COMMANDS) return commands;
  list.sort((a, b) => a.requestedAt - b.requestedAt);
  return Object.fromEntries(list.slice(-MAX_COMMANDS).map((c) => [c.id, c]));
}

// ---------------------------------------------------------------- selectors

/** Jobs that ended per minute, waits and depth at each sample time of a history, summed over pools (or one pool, one service). */
export interface FlowSeries {
  ts: number[];
  /** null: throughput unknown at that time (no API instance watched the whole interval) */
  perMin: Array<number | null>;
  /** null: no job started in the interval */
  waitP50: Array<number | null>;
  waitP95: Array<number | null>;
  depth: number[];
  /** the oldest waiting job's age (ms), the highest of the pools' */
  oldestAge: number[];
}

const finishedSum = (counts: QueueSample['finished']): number => Object.values(counts ?? {}).reduce((sum, n) => sum + (n ?? 0), 0);

/** The chart series of a history answer, oldest first; pools' samples of one slot summed, their waits merged. */
export function flowSeries(history: QueueHistory | undefined, only: { pool?: string; service?: string } = {}): FlowSeries {
  const series: FlowSeries = { ts: [], perMin: [], waitP50: [], waitP95: [], depth: [], oldestAge: [] };
  if (!history) return series;
  const bySlot = new Map<number, QueueSample[]>();
  for (const sample of history.samples) {
    if (only.pool !== undefined && sample.pool !== only.pool) continue;
    const slot = sample.ts - (sample.ts % history.interval_ms);
    bySlot.set(slot, [...(bySlot.get(slot) ?? []), sample]);
  }
  for (const slot of [...bySlot.keys()].sort((a, b) => a - b)) {
    const samples = bySlot.get(slot)!;
    const known = samples.filter((s) => s.finished);
    const parts = samples.map((sample) => {
      if (only.service === undefined) return { finished: sample.finished, wait: sample.wait, depth: sample.depth, age: sample.oldest_age_ms ?? 0 };
      const entry = sample.services.find((e) => e.service === only.service);
      return { finished: sample.finished ? (entry?.finished ?? {}) : undefined, wait: entry?.wait, depth: entry?.depth ?? 0, age: entry?.oldest_age_ms ?? 0 };
    });
    const wait = mergeWaitDigests(parts.flatMap((p) => (p.wait ? [p.wait] : [])));
    series.ts.push(slot);
    series.perMin.push(known.length === 0 ? null : (parts.reduce((sum, p) => sum + finishedSum(p.finished), 0) * 60_000) / history.interval_ms);
    series.waitP50.push(wait ? wait.p50_ms : null);
    series.waitP95.push(wait ? wait.p95_ms : null);
    series.depth.push(parts.reduce((sum, p) => sum + p.depth, 0));
    series.oldestAge.push(Math.max(0, ...parts.map((p) => p.age)));
  }
  return series;
}

/** Jobs that ended per minute over the samples of the last `windowMs` whose throughput is known; undefined when none is. */
export function recentRate(history: QueueHistory | undefined, windowMs: number): number | undefined {
  if (!history) return undefined;
  const from = history.now - windowMs;
  const known = history.samples.filter((s) => s.ts > from && s.finished);
  const slots = new Set(known.map((s) => s.ts - (s.ts % history.interval_ms))).size;
  if (slots === 0) return undefined;
  return (known.reduce((sum, s) => sum + finishedSum(s.finished), 0) * 60_000) / (slots * history.interval_ms);
}

/** The waits of a history's summary (every pool), for the page's figures. */
export function summaryWait(history: QueueHistory | undefined): WaitDigest | undefined {
  return history?.summary?.all.wait;
}

/** Workers of each machine, by machine key. */
export function workersByMachine(workers: Record<string, WorkerRecord>): Map<string, WorkerRecord[]> {
  const grouped = new Map<string, WorkerRecord[]>();
  for (const worker of Object.values(workers)) {
    const key = recordKey(worker.pool, worker.machine);
    const list = grouped.get(key);
    if (list) list.push(worker);
    else grouped.set(key, [worker]);
  }
  for (const list of grouped.values()) list.sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
  return grouped;
}

/** A machine counts as offline when the registry says so; a machine whose every worker is offline is shown degraded. */
export function machineHealth(machine: MachineRecord, workers: readonly WorkerRecord[]): 'offline' | 'degraded' | 'ok' | 'busy' {
  if (machine.state === 'offline' || machine.state === 'stopping') return 'offline';
  const unreadable = isUnreadable(machine.gpus) || isUnreadable(machine.processes);
  if (workers.length > 0 && workers.every((w) => w.state === 'offline')) return 'degraded';
  if (unreadable || workers.some((w) => w.state === 'offline')) return 'degraded';
  return workers.some((w) => w.state === 'busy') ? 'busy' : 'ok';
}
