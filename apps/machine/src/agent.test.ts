import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Broker, StreamEventOf } from '@emp/core';
import { call, temporaryFolder, waitFor } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { POOL, alive, machineEvents, machineRecord, simulatedServiceSpec, testMachineConfig } from '@emp/testkit/machine';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MachineAgent } from './agent';
import type { MachineProcessStatus, MachineStatus } from './status';

const silent = pino({ level: 'silent' });

let stack: ApiStack;
let broker: Broker;
let operator: string;
let folder: Awaited<ReturnType<typeof temporaryFolder>>;
let agent: MachineAgent;

const status = async (): Promise<MachineStatus> => (await fetch(`${agent.url}/status`)).json() as Promise<MachineStatus>;
const processOf = async (name: string): Promise<MachineProcessStatus> => (await status()).processes.find((p) => p.name === name)!;
const pids = async () => Object.fromEntries((await status()).processes.map((p) => [p.name, p.pid]));
const http = (method: string, path: string, body?: unknown) => call(stack.url, method, path, { key: operator, ...(body === undefined ? {} : { body }) });

/** Waits for the command's acknowledgement event and returns it. */
async function acknowledged(commandId: string): Promise<StreamEventOf<'machine.command.done'>> {
  return waitFor(`command ${commandId} to be acknowledged`, async () => (await machineEvents(broker, 'machine.command.done')).find((e) => e.command === commandId), 30_000);
}

beforeAll(async () => {
  stack = await startApiStack({ worker: false });
  broker = stack.broker;
  operator = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
  folder = await temporaryFolder();
  // two CPU slots, each with the simulated service (which its worker waits for) and a sidecar
  agent = new MachineAgent({
    config: testMachineConfig(folder.path, {
      cpu_workers: 2,
      services: [await simulatedServiceSpec('simulation', 2, 300), await simulatedServiceSpec('sidecar', 2)],
    }),
    redisUrl: stack.redis.url,
    logger: silent,
  });
  await agent.start();
});

afterAll(async () => {
  await agent?.stop();
  await stack?.stop();
  await folder?.remove();
});

describe('a machine agent', () => {
  it('runs each slot\'s services and worker, registers the machine and its workers, and answers health, status and metrics', async () => {
    expect((await fetch(`${agent.url}/health`)).status).toBe(200);
    await waitFor('the machine to be ready', async () => (await fetch(`${agent.url}/ready`)).status === 200, 30_000);

    const now = await status();
    expect(now).toMatchObject({ machine_id: 'm1', pool: POOL, state: 'ready', registered: true, hardware: { gpus: [] } });
    expect(now.processes.map((p) => [p.name, p.kind, p.state])).toEqual([
      ['simulation-cpu0', 'service', 'running'],
      ['sidecar-cpu0', 'service', 'running'],
      ['worker-simulation-cpu0', 'worker', 'running'],
      ['simulation-cpu1', 'service', 'running'],
      ['sidecar-cpu1', 'service', 'running'],
      ['worker-simulation-cpu1', 'worker', 'running'],
    ]);
    expect(now.processes.find((p) => p.name === 'worker-simulation-cpu1')).toMatchObject({ workerId: 'm1.simulation-cpu1', worker: { ready: true, running: 0 } });

    const record = await waitFor('the ready status in Redis', async () => {
      const r = await machineRecord(broker);
      return r.state === 'ready' ? r : undefined;
    });
    expect(record).toMatchObject({ workers: 'm1.simulation-cpu0, m1.simulation-cpu1', services: 'simulation, sidecar', health_url: agent.url });
    expect(JSON.parse(record.processes!)).toHaveLength(6);
    expect((await broker.workers(POOL)).map((w) => [w.id, w.machine, w.state]).sort()).toEqual([
      ['m1.simulation-cpu0', 'm1', 'idle'],
      ['m1.simulation-cpu1', 'm1', 'idle'],
    ]);
    expect((await machineEvents(broker, 'machine.ready')).length).toBeGreaterThan(0);

    const { id } = await broker.submit({ service: 'simulation' });
    await waitFor('the job to succeed', async () => (await broker.getJob(id))?.state === 'succeeded');
    expect((await broker.getJob(id))?.machine).toBe('m1');

    const metrics = await (await fetch(`${agent.url}/metrics`)).text();
    expect(metrics).toMatch(/emp_machine_process_up\{process="worker-simulation-cpu0",kind="worker",state="running"\} 1/);
    expect(metrics).toMatch(/emp_machine_worker_jobs_running\{process="worker-simulation-cpu0",worker="m1.simulation-cpu0"\} 0/);
    expect(metrics).toMatch(/emp_machine_draining 0/);
    expect(metrics).toMatch(/^emp_machine_log_lines_dropped_total 0$/m);
  });

  it('ships every process\'s output to the machine\'s log stream (served by the API) and to rotated files', async () => {
    const entries = await waitFor('service and worker output in the log stream', async () => {
      const page = await broker.readMachineLogs(POOL, 'm1', '0', { count: 5_000 });
      const service = page.entries.some((e) => e.process === 'simulation-cpu0' && /listening on/.test(e.line));
      const worker = page.entries.some((e) => e.process === 'worker-simulation-cpu0' && e.line.includes('"worker started"'));
      return service && worker ? page.entries : undefined;
    });
    const workerLine = entries.find((e) => e.process === 'worker-simulation-cpu0' && e.line.includes('"worker started"'));
    expect(JSON.parse(workerLine!.line)).toMatchObject({ msg: 'worker started', worker_id: 'm1.simulation-cpu0', machine_id: 'm1' });
    expect(workerLine).toMatchObject({ stream: 'stdout', ts: expect.any(Number) });

    const page = await http('GET', '/v1/machines/m1/logs?process=simulation-cpu1&limit=1000');
    expect(page.status).toBe(200);
    expect(page.body.entries.length).toBeGreaterThan(0);
    expect(page.body.entries.every((e: { process: string }) => e.process === 'simulation-cpu1')).toBe(true);

    const file = join(folder.path, 'worker-simulation-cpu0.log');
    await waitFor('the worker\'s log file', () => existsSync(file) && readFileSync(file, 'utf8').includes('"worker started"'));
    expect(readFileSync(join(folder.path, 'simulation-cpu0.log'), 'utf8')).toMatch(/simulated service listening on/);
  });

  it('restarts a worker killed with SIGKILL; the machine announces it, shows it, and stays registered', async () => {
    const before = await processOf('worker-simulation-cpu0');
    process.kill(before.pid!, 'SIGKILL');

    const after = await waitFor('the worker to run again', async () => {
      const p = await processOf('worker-simulation-cpu0');
      return p.state === 'running' && p.pid !== before.pid && p.worker?.ready ? p : undefined;
    }, 30_000);
    expect(after.restarts).toBe(before.restarts + 1);
    expect(after.last_exit).toMatchObject({ code: null, signal: 'SIGKILL' });

    const transitions = (await machineEvents(broker, 'machine.process')).filter((e) => e.process === 'worker-simulation-cpu0');
    expect(transitions.slice(-3)).toEqual([
      expect.objectContaining({ state: 'exited', signal: 'SIGKILL', exit_code: '' }),
      expect.objectContaining({ state: 'restarting', delay_ms: '50' }),
      expect.objectContaining({ state: 'started', pid: String(after.pid), restarts: String(after.restarts) }),
    ]);
    await waitFor('the machine to be ready again', async () => (await machineRecord(broker)).state === 'ready');
    const record = await machineRecord(broker);
    expect(JSON.parse(record.processes!)).toContainEqual(expect.objectContaining({ name: 'worker-simulation-cpu0', pid: after.pid, restarts: after.restarts, last_exit: 'killed by SIGKILL' }));
    expect(await broker.machines(POOL)).toHaveLength(1);
  });

  it('restarts exactly the service an operator names through the API, and acknowledges it', async () => {
    const before = await pids();
    const answer = await http('POST', '/v1/machines/m1/restart', { service: 'sidecar', reason: 'stuck' });
    expect(answer.status).toBe(202);

    const done = await acknowledged(answer.body.command_id);
    expect(done).toMatchObject({ action: 'restart', service: 'sidecar', outcome: 'ok', message: 'restarted sidecar-cpu0, sidecar-cpu1' });
    const after = await pids();
    for (const name of ['sidecar-cpu0', 'sidecar-cpu1']) {
      expect(after[name]).toBeDefined();
      expect(after[name]).not.toBe(before[name]);
      expect(alive(before[name]!)).toBe(false);
    }
    for (const name of ['simulation-cpu0', 'simulation-cpu1', 'worker-simulation-cpu0', 'worker-simulation-cpu1']) expect(after[name]).toBe(before[name]);
    expect(await machineRecord(broker)).toMatchObject({ last_command_handled: answer.body.command_id, last_command_outcome: 'ok' });

    const unknown = await http('POST', '/v1/machines/m1/restart', { service: 'comfyui' });
    expect(await acknowledged(unknown.body.command_id)).toMatchObject({
      outcome: 'failed',
      message: expect.stringMatching(/^no service or process named comfyui on this machine \(services: simulation, sidecar; processes: /),
    });
  });

  it('drains on command (jobs stay queued, workers offline) and a restart of the whole machine resumes', async () => {
    const drain = await http('POST', '/v1/machines/m1/drain', { reason: 'maintenance' });
    expect(await acknowledged(drain.body.command_id)).toMatchObject({ outcome: 'ok' });
    expect((await machineRecord(broker)).state).toBe('draining');
    expect((await fetch(`${agent.url}/ready`)).status).toBe(503);
    expect((await broker.workers(POOL)).map((w) => w.state)).toEqual(['offline', 'offline']);
    const workers = (await status()).processes.filter((p) => p.kind === 'worker');
    expect(workers.map((p) => p.state)).toEqual(['stopped', 'stopped']);
    const metrics = await (await fetch(`${agent.url}/metrics`)).text();
    expect(metrics).toMatch(/^emp_machine_drains_total\{reason="drain_command"\} 1$/m);
    expect(metrics).toMatch(/^emp_machine_drains_total\{reason="sigterm"\} 0$/m);
    expect(metrics).toMatch(/^emp_machine_draining 1$/m);

    const { id } = await broker.submit({ service: 'simulation' });
    const refused = await http('POST', '/v1/machines/m1/drain', { service: 'simulation' });
    expect(await acknowledged(refused.body.command_id)).toMatchObject({ outcome: 'failed', message: expect.stringMatching(/^drain applies to the whole machine/) });
    expect((await broker.getJob(id))?.state).toBe('queued');

    const restart = await http('POST', '/v1/machines/m1/restart');
    expect(await acknowledged(restart.body.command_id)).toMatchObject({ outcome: 'ok' });
    await waitFor('the job to run after the restart', async () => (await broker.getJob(id))?.state === 'succeeded', 30_000);
    await waitFor('the machine to be ready again', async () => (await machineRecord(broker)).state === 'ready', 30_000);
  });

  it('shuts down on command: drains, stops every process and goes offline, still listed', async () => {
    const running = Object.values(await pids()) as number[];
    const answer = await http('POST', '/v1/machines/m1/shutdown', { reason: 'scale down' });
    expect(await agent.done).toBe('shutdown command');
    expect(await acknowledged(answer.body.command_id)).toMatchObject({ action: 'shutdown', outcome: 'ok' });
    expect(await machineRecord(broker)).toMatchObject({ state: 'offline', last_command_outcome: 'ok' });
    const states = (await machineEvents(broker, 'machine.draining')).length + (await machineEvents(broker, 'machine.offline')).length;
    expect(states).toBeGreaterThanOrEqual(2);
    for (const pid of running) expect(alive(pid)).toBe(false);
    expect((await broker.machines(POOL)).map((m) => [m.id, m.state])).toEqual([['m1', 'offline']]);
  });
});
