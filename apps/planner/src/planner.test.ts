import { Broker, type MachineStatusInput, PlannerReport, encodeMachineStatus } from '@emp/core';
import { type ApiStack, call, startApiStack } from '@emp/testkit/api';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Planner } from './planner';

const GB = 1024 ** 3;
const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
/** virtual midnight, far from any real day */
const DAY0 = Date.UTC(2100, 0, 1);
const logger = pino({ level: process.env.LOG_LEVEL || 'silent' });

/**
 * The planner against a scripted fleet and scripted demand on a real Redis:
 * machines registered with the model records the agent writes (encodeMachineStatus),
 * jobs submitted over virtual time through a broker on a virtual clock.
 */
describe('the planner against a scripted fleet and demand', () => {
  let stack: ApiStack;
  let broker: Broker;
  let now = DAY0;

  beforeAll(async () => {
    stack = await startApiStack({ auth: false, worker: false });
    broker = await Broker.connect({ redis: stack.connection, clock: () => now });
  });
  afterAll(async () => stack?.stop());

  const submitAt = async (at: number, model: string, count: number) => {
    now = at;
    for (let i = 0; i < count; i++) await broker.submit({ service: 'comfyui', requirements: { models: [model] } });
  };
  const machine = async (id: string, budgetGb: number, models: Array<{ name: string; gb: number; in_use?: boolean; loaded?: boolean }>) => {
    const status: MachineStatusInput = {
      models: models.map((m) => ({ name: m.name, size_bytes: m.gb * GB, last_used: DAY0, in_use: m.in_use ?? false, loaded: m.loaded ?? false })),
      models_on_disk: models.map((m) => m.name),
      models_in_use: models.filter((m) => m.in_use).map((m) => m.name),
      models_downloading: [],
      model_cache_budget_bytes: budgetGb * GB,
      model_cache_used_bytes: models.reduce((sum, m) => sum + m.gb * GB, 0),
    };
    await broker.registerMachine('standard', id, 'ready', encodeMachineStatus(status));
  };

  it("prefetches tomorrow's rising model before its peak, within disk budgets, never evicting a model in use", async () => {
    // yesterday: sdxl steady at 1 job per 5 minutes from 09:00 to 12:00; flux quiet, then 20 per 5 minutes from 10:00 to 11:00
    for (let t = DAY0 + 9 * 60 * MINUTE; t < DAY0 + 12 * 60 * MINUTE; t += 5 * MINUTE) {
      await submitAt(t, 'sdxl', 1);
      if (t >= DAY0 + 10 * 60 * MINUTE && t < DAY0 + 11 * 60 * MINUTE) await submitAt(t + MINUTE, 'flux', 20);
    }
    // today until 09:50: sdxl as yesterday, no flux yet
    for (let t = DAY0 + DAY + 9 * 60 * MINUTE; t < DAY0 + DAY + 9 * 60 * MINUTE + 50 * MINUTE; t += 5 * MINUTE) await submitAt(t, 'sdxl', 1);

    // m1: room once `old` (unwanted, idle) goes; m2: its only evictable model cannot make room beside `busy`, which a job holds;
    // m3: the one copy of flux so far
    await machine('m1', 30, [{ name: 'sdxl', gb: 7, loaded: true }, { name: 'old', gb: 20 }]);
    await machine('m2', 30, [{ name: 'sdxl', gb: 7 }, { name: 'busy', gb: 20, in_use: true }]);
    await machine('m3', 30, [{ name: 'flux', gb: 12 }, { name: 'sdxl', gb: 7 }]);

    now = DAY0 + DAY + 9 * 60 * MINUTE + 50 * MINUTE; // 09:50, ten minutes before yesterday's peak
    const planner = new Planner({ broker, logger, config: { pools: ['standard'] }, now: async () => now });
    const [round] = await planner.runOnce();

    const flux = (await broker.plannerState('standard'))!.forecast.find((f) => f.model === 'flux')!;
    expect(flux.current, 'flux has no demand yet today').toBe(0);
    expect(flux.method).toBe('holt+seasonal');
    expect(flux.rate).toBeGreaterThan(2);

    expect(round!.sent.map((d) => `${d.machine} ${d.action} ${d.model}`)).toEqual(['m1 evict old', 'm1 prefetch flux']);
    expect(round!.sent.some((d) => d.model === 'busy' || d.machine === 'm2')).toBe(false);
    expect(round!.skipped).toEqual([]);

    // the commands went through the machine command channel, each decision is an event
    const commands = await broker.readMachineCommands('standard', 'm1', '0');
    expect(commands.map((c) => [c.action, c.model, c.by])).toEqual([['evict', 'old', 'planner'], ['prefetch', 'flux', 'planner']]);
    const decisions = (await broker.readEvents('standard', '0', { count: 10_000 })).filter((e) => e.type === 'planner.decision');
    expect(decisions).toEqual([
      expect.objectContaining({ machine: 'm1', action: 'evict', model: 'old' }),
      expect.objectContaining({ machine: 'm1', action: 'prefetch', model: 'flux', forecast: flux.rate }),
    ]);

    // the next round, before the download shows on the machine, sends nothing again
    now += 30_000;
    const [next] = await planner.runOnce();
    expect(next!.sent).toEqual([]);

    // GET /v1/planner: the decisions with their reasons, and the matrix with flux planned on m1
    const answer = await call(stack.url, 'GET', '/v1/planner?pool=standard');
    expect(answer.status).toBe(200);
    const report = PlannerReport.parse(answer.body);
    const pool = report.pools[0]!;
    expect(pool.decisions.map((d) => `${d.machine} ${d.action} ${d.model}`)).toEqual(['m1 evict old', 'm1 prefetch flux']);
    expect(pool.decisions[1]!.reason).toMatch(/forecast .* copies wanted/);
    const cells = Object.fromEntries(pool.matrix.machines.map((m) => [m.id, m.cells]));
    expect(cells.m1).toMatchObject({ flux: 'planned', old: 'evicting', sdxl: 'loaded' });
    expect(cells.m2).toMatchObject({ busy: 'on_disk', flux: 'absent' });
    expect(cells.m3).toMatchObject({ flux: 'on_disk' });
    expect(pool.capacity).toMatchObject({ arrivals: 10, readyMachines: 3 });
  });

  it('loads a forecast-hot model into the GPU of an idle machine that holds it on disk, never a busy one, and the matrix shows it loading', async () => {
    const pool = 'warm';
    now = DAY0 + 7 * DAY;
    for (let t = now - 60 * MINUTE; t < now; t += 5 * MINUTE) {
      now = t;
      for (let i = 0; i < 4; i++) await broker.submit({ service: 'comfyui', requirements: { pool, models: ['video'] } });
    }
    now = DAY0 + 7 * DAY;
    const onDisk: MachineStatusInput = { models: [{ name: 'video', size_bytes: 28 * GB }], model_cache_budget_bytes: 250 * GB, model_cache_used_bytes: 28 * GB };
    for (const [machineId, state] of [['w1', 'idle'], ['w2', 'busy']] as const) {
      await broker.registerMachine(pool, machineId, 'ready', encodeMachineStatus(onDisk));
      await broker.registerWorker({ id: `${machineId}-gpu0`, pool, machine_id: machineId, capabilities: { services: ['comfyui'], hardware: { gpu_memory_gb: 80 } } });
      if (state === 'busy') {
        // a job of its own makes it busy
        await broker.submit({ service: 'comfyui', requirements: { pool } });
        expect((await broker.claim(pool, `${machineId}-gpu0`)).job).toBeDefined();
      }
    }
    const planner = new Planner({ broker, logger, config: { pools: [pool] }, now: async () => now });
    const [round] = await planner.runOnce();
    expect(round!.sent.map((d) => `${d.machine} ${d.action} ${d.model}`)).toEqual(['w1 load video']);
    expect(round!.sent[0]!.reason).toMatch(/^forecast [\d.]+\/bucket \(holt\), 0 of 2 loaded copies wanted in warm; idle, on disk; 28.0 GB fits \(80.0 GB of GPU memory free\)$/);
    expect((await broker.readMachineCommands(pool, 'w1', '0')).map((c) => [c.action, c.model, c.by])).toEqual([['load', 'video', 'planner']]);
    expect(await broker.readMachineCommands(pool, 'w2', '0')).toEqual([]);
    const answer = await call(stack.url, 'GET', `/v1/planner?pool=${pool}`);
    const cells = Object.fromEntries(PlannerReport.parse(answer.body).pools[0]!.matrix.machines.map((m) => [m.id, m.cells]));
    expect(cells).toMatchObject({ w1: { video: 'loading' }, w2: { video: 'on_disk' } });
    // the next round: the load is on its way, not sent again; with warm loads off, none at all
    now += 30_000;
    expect((await planner.runOnce())[0]!.sent).toEqual([]);
    const diskOnly = new Planner({ broker, logger, config: { pools: [pool], warmLoads: false, holdMs: 0 }, now: async () => now });
    expect((await diskOnly.runOnce())[0]!.sent).toEqual([]);
  });

  it('drops an eviction (and the prefetch it made room for) when a job took the model between the plan and the send', async () => {
    const pool = 'race';
    const status = (oldInUse: boolean): MachineStatusInput => ({
      models: [{ name: 'old', size_bytes: 20 * GB, in_use: oldInUse }],
      models_in_use: oldInUse ? ['old'] : [],
      model_cache_budget_bytes: 25 * GB,
      model_cache_used_bytes: 20 * GB,
    });
    now = DAY0 + 5 * DAY;
    for (let t = now - 60 * MINUTE; t < now; t += 5 * MINUTE) {
      now = t;
      await broker.submit({ service: 'comfyui', requirements: { pool, models: ['hot'] } });
    }
    now = DAY0 + 5 * DAY;
    await broker.registerMachine(pool, 'r1', 'ready', encodeMachineStatus(status(false)));
    await broker.registerMachine(pool, 'r2', 'ready', encodeMachineStatus({ models: [{ name: 'hot', size_bytes: 10 * GB }], model_cache_budget_bytes: 25 * GB }));
    // the real broker; its machine read (the planner's last check) comes after a job took `old` on r1, as the agent reports it
    const lastCheck = async (p: string, id: string) => {
      await broker.registerMachine(pool, 'r1', 'ready', encodeMachineStatus(status(true)));
      return broker.machine(p, id);
    };
    const racing = new Proxy(broker, {
      get: (target, key) => {
        if (key === 'machine') return lastCheck;
        const value = Reflect.get(target, key) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const planner = new Planner({ broker: racing, logger, config: { pools: [pool] }, now: async () => now });
    const [round] = await planner.runOnce();
    expect(round!.dropped.map(({ decision, why }) => [decision.action, decision.model, why])).toEqual([
      ['evict', 'old', 'old on r1 is in use now'],
      ['prefetch', 'hot', 'old on r1 is in use now'],
    ]);
    expect(round!.sent).toEqual([]);
    expect(await broker.readMachineCommands(pool, 'r1', '0')).toEqual([]);
    expect((await broker.readEvents(pool, '0', { count: 1_000 })).filter((e) => e.type === 'planner.decision')).toEqual([]);
  });

  it("gives each pool the machines that would have met its wait target over the hour (M/M/c), on /metrics too", async () => {
    now = DAY0 + 3 * DAY;
    await broker.registerMachine('fast', 'f1', 'ready', encodeMachineStatus({ model_cache_budget_bytes: 10 * GB, models: [{ name: 'tiny', size_bytes: GB }] }));
    await broker.registerWorker({ id: 'f1-w', machine_id: 'f1', pool: 'fast', capabilities: { services: ['comfyui'] } });
    // an hour of 120 jobs of 6 s each
    for (let t = DAY0 + 3 * DAY - 60 * MINUTE; t < DAY0 + 3 * DAY; t += 5 * MINUTE) {
      now = t;
      for (let i = 0; i < 10; i++) {
        await broker.submit({ service: 'comfyui', requirements: { pool: 'fast' } });
        const { job } = await broker.claim('fast', 'f1-w');
        await broker.start(job!.lease);
        now += 6_000;
        await broker.complete(job!.lease, null);
        now = t;
      }
    }
    now = DAY0 + 3 * DAY;
    const planner = new Planner({ broker, logger, config: { pools: ['fast'], dryRun: true }, now: async () => now });
    const [round] = await planner.runOnce();
    // 120 jobs x 6 s in an hour: 0.2 Erlangs; one slot: P(wait > 2 s) = 0.2 e^(-0.8 x 2/6) = 0.15 > 5 %; two: 0.01
    expect(round!.capacity).toMatchObject({ arrivals: 120, meanExecutionMs: 6_000, workersPerMachine: 1, servers: 2, machines: 2 });
    expect((await broker.plannerState('fast'))!.wait_target_ms).toBe(2_000);

    const metrics = await fetch(`${stack.url}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/^emp_pool_capacity_hint_machines\{pool="fast"\} 2$/m);
  });
});
