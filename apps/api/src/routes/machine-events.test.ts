import { MachineEventsPage } from '@emp/core';
import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MACHINE_EVENTS_SCAN_LIMIT } from './machine-events';

let stack: ApiStack;
let reader: string;

beforeAll(async () => {
  stack = await startApiStack({ worker: false, server: { queueSampleMs: false } });
  reader = (await stack.server.app.apiKeys.create({ role: 'worker', tenant: 'acme' })).key;
  await stack.broker.registerMachine('standard', 'gpu-box', 'ready');
  await stack.broker.registerMachine('standard', 'other-box', 'ready');
});
afterAll(async () => {
  await stack?.stop();
});

const page = async (path: string) => {
  const answer = await call(stack.url, 'GET', path, { key: reader });
  expect(answer.status).toBe(200);
  return MachineEventsPage.parse(answer.body);
};

describe('machine events', () => {
  it("answers the machine's newest process transitions and commands, oldest first, and nothing of other machines or jobs", async () => {
    const { broker } = stack;
    await broker.machineProcessEvent('standard', 'gpu-box', 'worker-simulation-cpu0', 'running', { restarts: 0, pid: 10 });
    await broker.submit({ service: 'simulation' });
    await broker.machineProcessEvent('standard', 'other-box', 'worker-simulation-cpu0', 'exited', { restarts: 0, exit_code: 1 });
    await broker.machineProcessEvent('standard', 'gpu-box', 'worker-simulation-cpu0', 'exited', { restarts: 0, exit_code: 137, signal: 'SIGKILL' });
    await broker.machineProcessEvent('standard', 'gpu-box', 'worker-simulation-cpu0', 'running', { restarts: 1, pid: 11 });
    const command = await broker.machineCommand('standard', 'gpu-box', 'restart', { service: 'simulation', by: 'ops' });
    await broker.machineCommandDone('standard', 'gpu-box', command, 'ok', 'restarted 1 process');

    const all = await page('/v1/machines/gpu-box/events');
    expect(all).toMatchObject({ machine: 'gpu-box', pool: 'standard', complete: true });
    expect(all.scanned).toBeGreaterThanOrEqual(7);
    expect(all.events.map((e) => [e.type, e.state ?? e.outcome ?? e.action])).toEqual([
      ['machine.process', 'running'],
      ['machine.process', 'exited'],
      ['machine.process', 'running'],
      ['machine.command', 'restart'],
      ['machine.command.done', 'ok'],
    ]);
    expect(all.events[1]).toMatchObject({ pool: 'standard', machine: 'gpu-box', process: 'worker-simulation-cpu0', restarts: '0', exit_code: '137', signal: 'SIGKILL', ts: expect.any(Number) });
    expect(all.events[4]).toMatchObject({ command, outcome: 'ok' });

    const newest = await page('/v1/machines/gpu-box/events?pool=standard&limit=2');
    expect(newest.events.map((e) => e.type)).toEqual(['machine.command', 'machine.command.done']);
  });

  it('stops after a bounded number of stream entries and says the answer may be incomplete', async () => {
    const pipeline = stack.connection.pipeline();
    for (let i = 0; i < MACHINE_EVENTS_SCAN_LIMIT; i++) pipeline.xadd(stack.broker.keys.events('standard'), '*', 'type', 'job.progress', 'job', 'standard.noise0000000000', 'ts', '1');
    await pipeline.exec();
    const bounded = await page('/v1/machines/gpu-box/events');
    expect(bounded).toMatchObject({ events: [], scanned: MACHINE_EVENTS_SCAN_LIMIT, complete: false });
  });

  it('is for fleet keys, and names a machine that is not there or a bad limit', async () => {
    const client = (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' })).key;
    expect((await call(stack.url, 'GET', '/v1/machines/gpu-box/events', { key: client })).status).toBe(403);
    const missing = await call(stack.url, 'GET', '/v1/machines/nowhere/events', { key: reader });
    expect(missing.status).toBe(404);
    expect(missing.body.error.message).toBe('machine nowhere is not registered in any pool');
    const bad = await call(stack.url, 'GET', '/v1/machines/gpu-box/events?limit=0', { key: reader });
    expect(bad.status).toBe(400);
    expect(bad.body.error.issues).toEqual([{ path: 'query.limit', message: expect.any(String) }]);
  });
});
