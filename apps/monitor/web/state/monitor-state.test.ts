import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { STREAM_EVENT_TYPES } from '@emp/core';
import { feedEvent, feedMessage, machineHash, snapshot, workerHash } from './feed-fixtures';
import { isUnreadable } from './fleet-records';
import { toLiveEvent } from './live-event';
import { HOUR_MS, MAX_LIVE_JOBS, type MonitorAction, type MonitorState, flowSeries, initialState, monitorReducer, recentRate, workersByMachine } from './monitor-state';

const reduce = (...actions: MonitorAction[]): MonitorState => actions.reduce(monitorReducer, initialState);
const events = (...list: Extract<MonitorAction, { type: 'events' }>['events']): MonitorAction => ({ type: 'events', events: list });

const fleet = snapshot({
  machines: [
    machineHash('m1', {
      region: 'eu-west',
      agent_started_at: '1699000000000',
      gpus: JSON.stringify([{ index: 0, name: 'RTX 4090', memory_total_mb: 24_564, memory_used_mb: 1_024, utilization_pct: 37 }]),
      processes: JSON.stringify([{ name: 'worker-0', kind: 'worker', state: 'running', restarts: 0 }, { name: 'comfyui-0', kind: 'service', state: 'running', restarts: 1 }]),
      models: JSON.stringify(['sdxl.safetensors', { name: 'flux.safetensors', size_bytes: 1e10 }]),
    }),
    machineHash('m2', { gpus: '{"not": "a list"}', processes: 'nonsense{', models: '[{"size_bytes": 5}]' }),
  ],
  workers: [workerHash('m1-w0', 'm1'), workerHash('m1-w1', 'm1'), workerHash('m2-w0', 'm2', { capabilities: '[' })],
});

describe('the snapshot', () => {
  it('lays out machines with their GPUs, processes and models, workers, queues and the cursors to resume from', () => {
    const state = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    expect(state.cursors).toEqual({ standard: '1699999999999-0' });
    const m1 = state.machines['standard/m1']!;
    expect(m1).toMatchObject({ id: 'm1', pool: 'standard', state: 'ready', region: 'eu-west', startedAt: 1_699_000_000_000 });
    expect(m1.gpus).toEqual([expect.objectContaining({ name: 'RTX 4090', utilization_pct: 37 })]);
    expect(m1.processes).toEqual([expect.objectContaining({ name: 'worker-0', state: 'running' }), expect.objectContaining({ name: 'comfyui-0', restarts: 1 })]);
    expect(m1.models).toEqual([{ name: 'sdxl.safetensors' }, { name: 'flux.safetensors', size_bytes: 1e10 }]);
    expect(workersByMachine(state.workers).get('standard/m1')?.map((w) => w.id)).toEqual(['m1-w0', 'm1-w1']);
    expect(state.queues?.pools[0]?.depth).toBe(3);
    expect(state.depth['standard/simulation']).toEqual([[1_700_000_000_000, 3]]);
  });

  it('shows a malformed field as unreadable, with the reason, instead of failing', () => {
    const state = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const m2 = state.machines['standard/m2']!;
    expect(m2.gpus).toEqual({ unreadable: expect.stringMatching(/^gpus: /) });
    expect(m2.processes).toEqual({ unreadable: 'processes: not JSON' });
    expect(m2.models).toEqual({ unreadable: expect.stringMatching(/^models\.0/) });
    expect(isUnreadable(state.workers['standard/m2-w0']!.capabilities)).toBe(true);
    // and records without an id or pool are left out rather than shown half
    expect(Object.keys(reduce({ type: 'snapshot', snapshot: snapshot({ machines: [{ state: 'ready' }], workers: [{ id: 'x' }] }), at: 1 }).machines)).toEqual([]);
  });

  it('reads the model cache as the machine agent writes it: models with size, last use and pins, totals, downloads', () => {
    // the fields @emp/machine's machineModelFields writes that the page reads
    const sdxl = { name: 'sdxl.safetensors', folder: 'checkpoints', size_bytes: 6.9e9, last_used: 1_699_999_000_000, in_use: true };
    const agentFields = {
      models: JSON.stringify([sdxl, { ...sdxl, name: 'detail.safetensors', folder: 'loras', size_bytes: 1.4e8, in_use: false }]),
      models_downloading: JSON.stringify([{ model: 'flux.safetensors', received: 1e9, total: 2.3e10 }]),
      model_cache_used_bytes: String(3e10),
      model_cache_budget_bytes: String(2 ** 30 * 200),
      disk_free_bytes: '0',
    };
    const worker = workerHash('m3-w0', 'm3', { capabilities: JSON.stringify({ services: ['comfyui'], models: { comfyui: ['sdxl.safetensors', 'flux.safetensors'] }, custom_nodes: ['ComfyUI-Manager'] }) });
    const state = reduce({ type: 'snapshot', snapshot: snapshot({ machines: [machineHash('m3', agentFields)], workers: [worker] }), at: 1 });
    const m3 = state.machines['standard/m3']!;
    expect(m3.models).toEqual([sdxl, { ...sdxl, name: 'detail.safetensors', folder: 'loras', size_bytes: 1.4e8, in_use: false }]);
    expect(m3.modelCache).toEqual({ usedBytes: 3e10, budgetBytes: 2 ** 30 * 200, diskFreeBytes: 0, downloads: [{ model: 'flux.safetensors', received: 1e9, total: 2.3e10 }] });
    expect(state.workers['standard/m3-w0']!.capabilities).toMatchObject({ models: { comfyui: ['sdxl.safetensors', 'flux.safetensors'] }, custom_nodes: ['ComfyUI-Manager'] });

    const odd = reduce({ type: 'snapshot', snapshot: snapshot({ machines: [machineHash('m4', { ...agentFields, models_downloading: '[{"received":1}]' })] }), at: 1 });
    expect(odd.machines['standard/m4']!.modelCache?.downloads).toEqual({ unreadable: expect.stringMatching(/^models_downloading\.0\.model/) });
    expect(reduce({ type: 'snapshot', snapshot: fleet, at: 1 }).machines['standard/m1']!.modelCache).toBeUndefined();
  });

  it('keeps every card it showed when a later snapshot (after a reconnect) no longer lists it', () => {
    const first = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const second = monitorReducer(first, { type: 'snapshot', snapshot: snapshot({ machines: [machineHash('m1')], workers: [] }), at: 2 });
    expect(Object.keys(second.machines).sort()).toEqual(['standard/m1', 'standard/m2']);
    expect(Object.keys(second.workers)).toHaveLength(3);
  });
});

describe('deltas', () => {
  it('follow a job through a worker: its row, the worker card and the wait time', () => {
    const base = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const job = 'standard.j1';
    const state = monitorReducer(base, events(
      feedEvent('job.queued', { job, state: 'queued', tenant: 'acme', service: 'simulation' }, { ts: 1_700_000_001_000 }),
      feedEvent('worker.busy', { worker: 'm1-w0', machine: 'm1', state: 'busy' }, { ts: 1_700_000_001_200 }),
      feedEvent('job.starting', { job, state: 'starting', worker: 'm1-w0', machine: 'm1', attempt: 1, submitted_at: '1700000001000' }, { ts: 1_700_000_001_250 }),
      feedEvent('job.running', { job, state: 'running', worker: 'm1-w0' }, { ts: 1_700_000_001_300 }),
      feedEvent('job.progress', { job, state: 'running', progress: { stage: 'running', value: 3, max: 10 } }, { ts: 1_700_000_001_400 }),
    ));
    expect(state.jobs[job]).toMatchObject({ state: 'running', tenant: 'acme', service: 'simulation', worker: 'm1-w0', machine: 'm1', attempt: 1, waitMs: 250, progress: { value: 3, max: 10 } });
    expect(state.workers['standard/m1-w0']).toMatchObject({ state: 'busy', currentJob: job });

    const done = monitorReducer(state, events(
      feedEvent('job.succeeded', { job, state: 'succeeded', worker: 'm1-w0' }, { ts: 1_700_000_002_000 }),
      feedEvent('worker.idle', { worker: 'm1-w0', machine: 'm1', state: 'idle' }, { ts: 1_700_000_002_001 }),
    ));
    expect(done.jobs[job]?.state).toBe('succeeded');
    // as the API answers a finished job: its progress says how it ended, the last report's figures kept
    expect(done.jobs[job]?.progress).toEqual({ stage: 'succeeded', value: 3, max: 10 });
    expect(done.workers['standard/m1-w0']?.currentJob).toBeUndefined();
    expect(done.workers['standard/m1-w0']?.state).toBe('idle');
    expect(done.eventsApplied).toBe(7);
  });

  it('applies nothing twice: events at or before the cursor (a resumed feed, a duplicate) are skipped', () => {
    const base = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const batch = [
      feedEvent('job.queued', { job: 'standard.j2', state: 'queued', service: 'simulation' }),
      feedEvent('job.succeeded', { job: 'standard.j2', state: 'succeeded' }),
    ];
    const once = monitorReducer(base, events(...batch));
    const twice = monitorReducer(once, events(...batch));
    expect(twice).toBe(once);
    expect(once.cursors.standard).toBe(batch[1]!.id);
    const old = feedEvent('worker.offline', { worker: 'm1-w0', state: 'offline' }, { ts: 1 });
    const stale = { ...old, id: '1699999999998-0' };
    expect(monitorReducer(base, events(stale))).toBe(base);
  });

  it("keeps a cursor per shard of a sharded pool: an event of shard 1 is applied to the pool even when shard 0's cursor is past its id", () => {
    const base = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const ahead = feedEvent('job.queued', { job: 'standard.j3', state: 'queued', service: 'simulation' }, { ts: 1_800_000_000_000 });
    const inShard = { ...feedEvent('job.queued', { job: 'standard_1.j4', state: 'queued', service: 'simulation' }, { ts: 1_700_000_000_500 }), shard: 'standard_1' };
    const state = monitorReducer(monitorReducer(base, events(ahead)), events(inShard));
    expect(state.cursors).toMatchObject({ standard: ahead.id, standard_1: inShard.id });
    expect(state.jobs['standard_1.j4']).toMatchObject({ pool: 'standard', state: 'queued' });
  });

  it('shows a worker that went offline as offline and keeps it; only a removal from the registry (gone) drops it', () => {
    const base = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const offline = monitorReducer(base, events(
      feedEvent('worker.offline', { worker: 'm1-w1', state: 'offline' }),
      feedEvent('machine.offline', { machine: 'm2', state: 'offline' }),
    ));
    expect(offline.workers['standard/m1-w1']).toMatchObject({ state: 'offline', machine: 'm1' });
    expect(offline.machines['standard/m2']?.state).toBe('offline');
    const gone = monitorReducer(offline, events(feedEvent('worker.gone', { worker: 'm1-w1', state: 'gone' }), feedEvent('machine.gone', { machine: 'm2', state: 'gone' })));
    expect(gone.workers['standard/m1-w1']).toBeUndefined();
    expect(gone.machines['standard/m2']).toBeUndefined();
  });

  it('creates cards for machines and workers that register after the snapshot', () => {
    const state = reduce(
      { type: 'snapshot', snapshot: snapshot(), at: 1 },
      events(
        feedEvent('machine.starting', { machine: 'new-1', state: 'starting' }, { pool: 'heavy' }),
        feedEvent('worker.registered', { worker: 'new-1-w0', machine: 'new-1' }, { pool: 'heavy' }),
        feedEvent('worker.idle', { worker: 'new-1-w0', machine: 'new-1', state: 'idle' }, { pool: 'heavy' }),
      ),
    );
    expect(state.machines['heavy/new-1']).toMatchObject({ state: 'starting', pool: 'heavy' });
    expect(state.workers['heavy/new-1-w0']).toMatchObject({ state: 'idle', machine: 'new-1' });
    expect(state.cursors.heavy).toMatch(/^\d+-\d+$/);
  });

  it('tracks an operator command from the request through its announcement to its outcome', () => {
    const base = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const requested = monitorReducer(base, { type: 'command-requested', command: { command_id: '1700000005000-0', machine: 'm1', pool: 'standard', action: 'restart', service: 'comfyui' }, by: 'ops', at: 5 });
    expect(requested.commands['1700000005000-0']).toMatchObject({ action: 'restart', service: 'comfyui', announced: false });
    const announced = monitorReducer(requested, events(feedEvent('machine.command', { machine: 'm1', action: 'restart', service: 'comfyui', command: '1700000005000-0', by: 'key1' })));
    expect(announced.commands['1700000005000-0']).toMatchObject({ announced: true, by: 'ops' });
    expect(announced.machines['standard/m1']?.lastCommand).toMatchObject({ action: 'restart', id: '1700000005000-0' });
    const done = monitorReducer(announced, events(feedEvent('machine.command.done', { machine: 'm1', command: '1700000005000-0', action: 'restart', outcome: 'failed', message: 'comfyui did not come back' })));
    expect(done.commands['1700000005000-0']).toMatchObject({ outcome: 'failed', message: 'comfyui did not come back', doneAt: expect.any(Number) });
  });

  it('keeps the restart history of supervised processes and shows their new state on the card', () => {
    const base = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const state = monitorReducer(base, events(
      feedEvent('machine.process', { machine: 'm1', process: 'comfyui-0', state: 'exited', restarts: '1', exit_code: '137' }),
      feedEvent('machine.process', { machine: 'm1', process: 'comfyui-0', state: 'restarting', restarts: '2' }),
    ));
    expect(state.processHistory['standard/m1']).toEqual([
      expect.objectContaining({ process: 'comfyui-0', state: 'exited', restarts: 1, exitCode: 137 }),
      expect.objectContaining({ process: 'comfyui-0', state: 'restarting', restarts: 2 }),
    ]);
    expect(state.machines['standard/m1']?.processes).toContainEqual(expect.objectContaining({ name: 'comfyui-0', state: 'restarting', restarts: 2 }));
  });

  it('marks a paused service in the queue report at once', () => {
    const base = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const paused = monitorReducer(base, events(feedEvent('service.paused', { service: 'simulation', by: 'ops', reason: 'bad rollout' })));
    expect(paused.queues?.pools[0]?.services[0]?.paused).toBe(true);
    expect(paused.queues?.pools[0]?.paused).toEqual([expect.objectContaining({ service: 'simulation', reason: 'bad rollout' })]);
    const resumed = monitorReducer(paused, events(feedEvent('service.resumed', { service: 'simulation' })));
    expect(resumed.queues?.pools[0]?.services[0]?.paused).toBe(false);
    expect(resumed.queues?.pools[0]?.paused).toEqual([]);
  });
});

describe('registry reads and queue reports', () => {
  it("refresh a machine's fields without undoing a state change the feed told later", () => {
    const base = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const offline = monitorReducer(base, events(feedEvent('machine.offline', { machine: 'm1', state: 'offline' }, { ts: 1_700_000_009_000 })));
    const refreshed = monitorReducer(offline, { type: 'machines', machines: [machineHash('m1', { state: 'ready', state_since: '1700000001000', gpus: '[{"index":0,"name":"RTX 4090","memory_total_mb":24564,"utilization_pct":99}]' })] });
    expect(refreshed.machines['standard/m1']).toMatchObject({ state: 'offline', gpus: [expect.objectContaining({ utilization_pct: 99 })] });
    const newer = monitorReducer(refreshed, { type: 'machines', machines: [machineHash('m1', { state: 'ready', state_since: '1700000010000' })] });
    expect(newer.machines['standard/m1']?.state).toBe('ready');
  });

  it('keeps an hour of depth per pool, service and class, and brings a drained queue down to zero', () => {
    const base = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const report = fleet.queues as Extract<MonitorAction, { type: 'queues' }>['report'];
    const later = monitorReducer(base, { type: 'queues', report: { ...report, now: report.now + 5_000, pools: [{ ...report.pools[0]!, depth: 0, services: [], classes: [] }] } });
    expect(later.depth['standard/simulation']).toEqual([[report.now, 3], [report.now + 5_000, 0]]);
    expect(later.depth['standard/#abc']?.at(-1)).toEqual([report.now + 5_000, 0]);
    const hourLater = monitorReducer(later, { type: 'queues', report: { ...report, now: report.now + HOUR_MS + 1_000 } });
    expect(hourLater.depth['standard/simulation']).toEqual([[report.now + 5_000, 0], [report.now + HOUR_MS + 1_000, 3]]);
  });
});

describe('batching', () => {
  it('gives the same state whether events arrive one by one or in batches of any size', () => {
    const base = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const stream = Array.from({ length: 60 }, (_, i) => {
      const job = `standard.b${i % 7}`;
      const states = ['queued', 'starting', 'running', 'succeeded'] as const;
      const state = states[i % 4]!;
      return i % 5 === 4
        ? feedEvent(`worker.${i % 2 ? 'busy' : 'idle'}`, { worker: `m1-w${i % 2}`, machine: 'm1', state: i % 2 ? 'busy' : 'idle' })
        : feedEvent(`job.${state}`, { job, state, service: 'simulation', worker: 'm1-w0', submitted_at: '1700000000000' });
    });
    const oneByOne = stream.reduce((state, event) => monitorReducer(state, events(event)), base);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 59 }), { maxLength: 10 }), (cuts) => {
        const bounds = [0, ...[...new Set(cuts)].sort((a, b) => a - b), stream.length];
        let state = base;
        for (let i = 0; i + 1 < bounds.length; i += 1) state = monitorReducer(state, events(...stream.slice(bounds[i], bounds[i + 1])));
        expect(state).toEqual(oneByOne);
      }),
      { numRuns: 50 },
    );
  });

  it('bounds the jobs it keeps, dropping finished ones first', () => {
    const running = Array.from({ length: 10 }, (_, i) => feedEvent('job.running', { job: `standard.r${i}`, state: 'running' }));
    const finished = Array.from({ length: MAX_LIVE_JOBS }, (_, i) => feedEvent('job.succeeded', { job: `standard.f${i}`, state: 'succeeded' }));
    const state = reduce({ type: 'snapshot', snapshot: snapshot(), at: 1 }, events(...running, ...finished));
    expect(Object.keys(state.jobs).length).toBeLessThanOrEqual(MAX_LIVE_JOBS);
    for (let i = 0; i < 10; i += 1) expect(state.jobs[`standard.r${i}`]?.state).toBe('running');
    expect(state.jobs[`standard.f${MAX_LIVE_JOBS - 1}`]?.state).toBe('succeeded');
    expect(state.jobs['standard.f0']).toBeUndefined();
  });
});

describe('commands reported through the status snapshot', () => {
  it('shows the last command a machine recorded, and its outcome once the machine reports it done', () => {
    const sent = machineHash('m1', { last_command: 'restart', last_command_id: '1700000005000-0', last_command_service: '', last_command_at: '1700000005000' });
    const state = reduce({ type: 'snapshot', snapshot: snapshot({ machines: [sent] }), at: 1 });
    expect(state.commands['1700000005000-0']).toMatchObject({ action: 'restart', machine: 'm1', announced: true, requestedAt: 1_700_000_005_000 });
    expect(state.commands['1700000005000-0']?.outcome).toBeUndefined();
    const done = monitorReducer(state, {
      type: 'machines',
      machines: [{ ...sent, last_command_handled: '1700000005000-0', last_command_outcome: 'ok', last_command_message: 'restarted 2 workers', last_command_done_at: '1700000007000' }],
    });
    expect(done.commands['1700000005000-0']).toMatchObject({ outcome: 'ok', message: 'restarted 2 workers', doneAt: 1_700_000_007_000 });
    // an outcome word it does not know is not taken for one
    const odd = reduce({ type: 'machines', machines: [{ ...sent, last_command_handled: '1700000005000-0', last_command_outcome: 'maybe' }] });
    expect(odd.commands['1700000005000-0']?.outcome).toBeUndefined();
  });
});

describe('history recorded before the page opened', () => {
  const NOW = 1_700_000_000_000;
  const sample = (ts: number, depth: number, pool = 'standard') => ({
    ts,
    pool,
    depth,
    oldest_age_ms: depth > 0 ? depth * 100 : undefined,
    services: depth > 0 ? [{ service: 'simulation', depth, oldest_age_ms: depth * 100 }] : [],
    classes: depth > 0 ? [{ requirement_class: 'abc', depth, oldest_age_ms: depth * 100 }] : [],
  });

  it('merges the recorded queue samples with the live ones by time, within the hour, without repeats', () => {
    const live = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const history = {
      now: NOW + 1_000,
      interval_ms: 30_000,
      samples: [sample(NOW - HOUR_MS - 30_000, 9), sample(NOW - 60_000, 2), sample(NOW - 30_000, 0), sample(NOW, 7), sample(NOW - 30_000, 4, 'heavy')],
    };
    const state = monitorReducer(live, { type: 'queue-history', history });
    // the live reading at NOW wins over a recorded one at the same time; the one older than an hour is dropped
    expect(state.depth['standard/simulation']).toEqual([[NOW - 60_000, 2], [NOW - 30_000, 0], [NOW, 3]]);
    expect(state.age['standard/simulation']).toEqual([[NOW - 60_000, 200], [NOW - 30_000, 0], [NOW, 1_500]]);
    expect(state.depth['standard/#abc']).toEqual([[NOW - 60_000, 2], [NOW - 30_000, 0], [NOW, 3]]);
    expect(state.depth.standard).toEqual([[NOW - 60_000, 2], [NOW - 30_000, 0], [NOW, 3]]);
    expect(state.depth['heavy/simulation']).toEqual([[NOW - 30_000, 4]]);
    // loading it again (a reconnect) changes nothing, and live samples keep appending after it
    expect(monitorReducer(state, { type: 'queue-history', history })).toEqual(state);
    const report = fleet.queues as Extract<MonitorAction, { type: 'queues' }>['report'];
    const next = monitorReducer(state, { type: 'queues', report: { ...report, now: NOW + 30_000 } });
    expect(next.depth['standard/simulation']?.map(([ts]) => ts)).toEqual([NOW - 60_000, NOW - 30_000, NOW, NOW + 30_000]);
  });

  it('keeps the history per range: throughput, waits and depth come from the server, summed over pools per slot', () => {
    const AT = 1_700_000_010_000; // a slot's start (30 s)
    const wait = (ms: number, bucket: number) => ({ count: 2, p50_ms: ms, p95_ms: ms, max_ms: ms, buckets: [...Array(bucket).fill(0), 2] });
    const flowing = (ts: number, pool: string, succeeded: number, waitMs?: number) => ({
      ...sample(ts, 1, pool),
      finished: { succeeded },
      wait: waitMs !== undefined ? wait(waitMs, waitMs < 100 ? 3 : 7) : undefined,
      services: [{ service: 'simulation', depth: 1, finished: { succeeded }, wait: waitMs !== undefined ? wait(waitMs, waitMs < 100 ? 3 : 7) : undefined }],
    });
    const hour = {
      now: AT + 1_000,
      range: 'hour' as const,
      interval_ms: 30_000,
      // the first slot was not watched whole: its throughput is unknown, not zero
      samples: [sample(AT - 60_000, 2), flowing(AT - 30_000, 'standard', 10, 80), flowing(AT - 30_000 + 15, 'heavy', 5, 900), flowing(AT, 'standard', 20)],
      summary: { all: { finished: { succeeded: 35 }, covered_ms: 60_000, jobs_per_min: 35, wait: wait(80, 3) }, pools: [] },
    };
    const day = { now: AT, range: 'day' as const, interval_ms: 300_000, samples: [], summary: { all: { finished: {}, covered_ms: 0, jobs_per_min: 0 }, pools: [] } };
    const state = [{ type: 'queue-history', history: hour }, { type: 'queue-history', history: day }].reduce<MonitorState>((s, a) => monitorReducer(s, a as MonitorAction), initialState);
    expect(state.history.hour).toBe(hour);
    expect(state.history.day).toBe(day);
    // the day's samples are not the live hour's depths
    expect(state.depth.standard?.map(([ts]) => ts)).toEqual([AT - 60_000, AT - 30_000, AT]);

    const all = flowSeries(state.history.hour);
    expect(all.ts).toEqual([AT - 60_000, AT - 30_000, AT]);
    expect(all.perMin).toEqual([null, 30, 40]);
    expect(all.depth).toEqual([2, 2, 1]);
    expect(all.waitP50[0]).toBeNull();
    expect(all.waitP50[1]).toBeGreaterThan(80); // two pools' waits merged: between the two
    expect(all.waitP95[1]).toBeLessThanOrEqual(900);
    expect(all.waitP50[2]).toBeNull();
    expect(flowSeries(state.history.hour, { pool: 'heavy' })).toMatchObject({ ts: [AT - 30_000], perMin: [10], waitP50: [900] });
    expect(flowSeries(state.history.hour, { pool: 'standard', service: 'simulation' })).toMatchObject({ perMin: [null, 20, 40], depth: [2, 1, 1] });
    expect(flowSeries(undefined).ts).toEqual([]);
    // the last five minutes: 35 jobs over the two known slots
    expect(recentRate(state.history.hour, 5 * 60_000)).toBe(35);
    expect(recentRate(day, 5 * 60_000)).toBeUndefined();
  });

  it("merges a machine's recorded restarts and commands with the live history, in stream order, once each", () => {
    const base = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const live = feedEvent('machine.process', { machine: 'm1', process: 'worker-0', state: 'running', restarts: '1' });
    const withLive = monitorReducer(base, events(live));
    const recorded = [
      { id: '1699999990000-0', pool: 'standard', type: 'machine.process', ts: 1_699_999_990_000, machine: 'm1', process: 'worker-0', state: 'exited', restarts: '0', exit_code: '137' },
      { id: '1699999991000-0', pool: 'standard', type: 'machine.command', ts: 1_699_999_991_000, machine: 'm1', action: 'restart', command: '1699999991000-0', by: 'ops' },
      { id: '1699999992000-0', pool: 'standard', type: 'machine.command.done', ts: 1_699_999_992_000, machine: 'm1', action: 'restart', command: '1699999991000-0', outcome: 'ok' },
      { id: live.id, pool: 'standard', type: 'machine.process', ts: live.ts, machine: 'm1', process: 'worker-0', state: 'running', restarts: '1' },
    ];
    const state = monitorReducer(withLive, { type: 'machine-events', pool: 'standard', machine: 'm1', events: recorded });
    expect(state.processHistory['standard/m1']).toEqual([
      { id: '1699999990000-0', ts: 1_699_999_990_000, process: 'worker-0', state: 'exited', restarts: 0, exitCode: 137 },
      expect.objectContaining({ id: live.id, state: 'running', restarts: 1 }),
    ]);
    expect(state.commands['1699999991000-0']).toMatchObject({ machine: 'm1', action: 'restart', by: 'ops', outcome: 'ok', requestedAt: 1_699_999_991_000 });
    // the card keeps what the feed and snapshots said: recorded history is older
    expect(state.machines['standard/m1']?.processes).toEqual(withLive.machines['standard/m1']?.processes);
    expect(monitorReducer(state, { type: 'machine-events', pool: 'standard', machine: 'm1', events: recorded }).processHistory).toEqual(state.processHistory);
  });
});

describe('event types', () => {
  it("applies every type of core's union without failing, and one it does not know only moves the cursor", () => {
    const base = reduce({ type: 'snapshot', snapshot: fleet, at: 1 });
    const fields = { job: 'standard.t1', state: 'queued', tenant: 't', service: 'simulation', worker: 'm1-w0', machine: 'm1', attempt: 1, progress: { stage: 'running' }, command: 'c1', action: 'restart', outcome: 'ok', process: 'worker-0', class: 'abc', from: 1, gap_ms: 1, grace_until: 1, reason: 'retry', retry_at: 1 };
    const all = STREAM_EVENT_TYPES.map((type) => feedEvent(type, fields));
    const state = monitorReducer(base, events(...all));
    expect(state.eventsApplied).toBe(all.length);
    expect(state.cursors.standard).toBe(all.at(-1)!.id);

    const newer = toLiveEvent(feedMessage('job.teleported', { job: 'standard.t2', state: 'elsewhere' }));
    expect(newer).toMatchObject({ event: 'unknown', sent_as: 'job.teleported' });
    const after = monitorReducer(base, events(newer));
    expect(after).toEqual({ ...base, cursors: { standard: newer.id }, eventsApplied: 1, lastEventAt: newer.ts });
  });
});
