import { describe, expect, it } from 'vitest';
import { feedEvent, machineHash, snapshot, workerHash } from './feed-fixtures';
import { type LiveEvent, type MonitorState, initialState, monitorReducer } from './monitor-state';

/**
 * A load check, not a timing: a fleet of 50 machines and 200 workers, then a
 * few thousand deltas in frame-sized batches, and the state must say exactly
 * what a plain replay of the same events says.
 */

const POOLS = ['fast-lane', 'standard', 'heavy'];
const MACHINES = 50;
const WORKERS_PER_MACHINE = 4;
const JOBS = 1_500;

function fleetSnapshot() {
  const machines = [];
  const workers = [];
  for (let m = 0; m < MACHINES; m += 1) {
    const pool = POOLS[m % POOLS.length]!;
    const gpus = JSON.stringify(Array.from({ length: WORKERS_PER_MACHINE }, (_, index) => ({ index, name: 'RTX 4090', memory_total_mb: 24_564, utilization_pct: 0 })));
    machines.push(machineHash(`m${m}`, { gpus }, pool));
    for (let w = 0; w < WORKERS_PER_MACHINE; w += 1) workers.push(workerHash(`m${m}-w${w}`, `m${m}`, {}, pool));
  }
  return snapshot({ machines, workers, cursors: Object.fromEntries(POOLS.map((pool) => [pool, '1699999999999-0'])) });
}

/** Jobs submitted, claimed, run with progress and finished by the fleet's workers, interleaved; some workers die. */
function trafficEvents(): LiveEvent[] {
  const events: LiveEvent[] = [];
  let ts = 1_700_000_000_000;
  const open: Array<{ id: string; pool: string; worker: string; machine: string; step: number }> = [];
  for (let j = 0; j < JOBS || open.length > 0; j += 1) {
    if (j < JOBS) {
      const m = j % MACHINES;
      const pool = POOLS[m % POOLS.length]!;
      const job = { id: `${pool}.job${j}`, pool, worker: `m${m}-w${j % WORKERS_PER_MACHINE}`, machine: `m${m}`, step: 0 };
      events.push(feedEvent('job.queued', { job: job.id, state: 'queued', tenant: `t${j % 5}`, service: 'simulation' }, { pool, ts: (ts += 1) }));
      open.push(job);
    }
    // advance a few open jobs by one step each
    for (const job of open.splice(0, 3)) {
      ts += 1;
      const at = { pool: job.pool, ts };
      switch (job.step) {
        case 0:
          events.push(feedEvent('job.starting', { job: job.id, state: 'starting', worker: job.worker, machine: job.machine, attempt: 1, submitted_at: String(ts - 40) }, at));
          break;
        case 1:
          events.push(feedEvent('job.running', { job: job.id, state: 'running', worker: job.worker }, at));
          break;
        case 2:
          events.push(feedEvent('job.progress', { job: job.id, state: 'running', progress: { stage: 'running', value: 1, max: 2 } }, at));
          break;
        default: {
          const state = Number(job.id.slice(job.id.indexOf('job') + 3)) % 10 === 0 ? 'failed' : 'succeeded';
          events.push(feedEvent(`job.${state}`, { job: job.id, state, worker: job.worker }, at));
        }
      }
      job.step += 1;
      if (job.step <= 3) open.push(job);
    }
    if (j % 50 === 0) {
      const m = (j / 50) % MACHINES;
      const pool = POOLS[m % POOLS.length]!;
      events.push(feedEvent('worker.busy', { worker: `m${m}-w0`, machine: `m${m}`, state: 'busy' }, { pool, ts: (ts += 1) }));
      events.push(feedEvent('worker.offline', { worker: `m${m}-w3`, state: 'offline' }, { pool, ts: (ts += 1) }));
    }
  }
  return events;
}

describe('a fleet of 50 machines / 200 workers under a few thousand deltas', () => {
  it('ends in exactly the state a replay of the events describes, applied in frame-sized batches', () => {
    const events = trafficEvents();
    expect(events.length).toBeGreaterThan(6_000);

    let state: MonitorState = monitorReducer(initialState, { type: 'snapshot', snapshot: fleetSnapshot(), at: 1 });
    // the page applies whatever arrived in a frame: uneven batches of up to a few hundred events
    for (let i = 0, size = 1; i < events.length; i += size, size = (size * 7) % 300 + 1) {
      state = monitorReducer(state, { type: 'events', events: events.slice(i, i + size) });
    }

    // the model: the last word on each job and worker, the count of each terminal state
    const lastJobState = new Map<string, string>();
    const lastWorkerState = new Map<string, string>();
    const finished: Record<string, number> = {};
    let starts = 0;
    for (const event of events) {
      if (event.event.startsWith('job.') && 'job' in event) lastJobState.set(String(event.job), String(event.state));
      if (event.event === 'job.starting') starts += 1;
      if (event.event === 'job.succeeded' || event.event === 'job.failed') finished[event.state] = (finished[event.state] ?? 0) + 1;
      if ('worker' in event && 'state' in event && event.event.startsWith('worker.')) lastWorkerState.set(`${event.pool}/${event.worker}`, event.state);
    }

    expect(state.eventsApplied).toBe(events.length);
    expect(Object.keys(state.machines)).toHaveLength(MACHINES);
    expect(Object.keys(state.workers)).toHaveLength(MACHINES * WORKERS_PER_MACHINE);
    expect(Object.keys(state.jobs)).toHaveLength(JOBS);
    for (const [id, jobState] of lastJobState) expect(state.jobs[id]?.state).toBe(jobState);
    for (const [key, workerState] of lastWorkerState) expect(state.workers[key]?.state).toBe(workerState);
    const counted: Record<string, number> = {};
    for (const job of Object.values(state.jobs)) if (job.state === 'succeeded' || job.state === 'failed') counted[job.state] = (counted[job.state] ?? 0) + 1;
    expect(counted).toEqual(finished);
    const waited = Object.values(state.jobs).filter((job) => job.waitMs !== undefined);
    expect(waited).toHaveLength(starts);
    expect(waited.every((job) => job.waitMs === 40)).toBe(true);
    // every job finished, so no worker still shows one as its current job
    expect(Object.values(state.workers).filter((w) => w.currentJob)).toEqual([]);
    for (const pool of POOLS) expect(state.cursors[pool]).toBe(events.filter((e) => e.pool === pool).at(-1)!.id);
  });
});
