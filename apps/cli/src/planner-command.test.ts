import { encodeMachineStatus } from '@emp/core';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runEmp } from './testing/emp-process';

const GB = 1024 ** 3;

describe('emp planner (through the API)', () => {
  let stack: ApiStack;
  let operator: Record<string, string>;
  beforeAll(async () => {
    stack = await startApiStack({ worker: false });
    operator = { EMP_API_URL: stack.url, EMP_API_KEY: (await stack.server.app.apiKeys.create({ role: 'operator' })).key };
    const { broker } = stack;
    await broker.registerMachine('standard', 'm1', 'ready', encodeMachineStatus({
      models: [{ name: 'sdxl', size_bytes: 7 * GB, loaded: true }, { name: 'old', size_bytes: 20 * GB }],
      model_cache_budget_bytes: 30 * GB,
      model_cache_used_bytes: 27 * GB,
    }));
    await broker.recordPlannerRound('standard', {
      forecast: [{ model: 'flux', rate: 3.4, current: 0, lastHour: 2, method: 'holt+seasonal', explanation: 'yesterday 6.7/bucket' }],
      capacity: { machines: 4, servers: 4, offeredLoad: 2.1, waitExceedsTarget: 0.04, explanation: 'M/M/c: 4 slots', readyMachines: 1 },
      waitTargetMs: 10_000,
      decisions: [
        { machine: 'm1', action: 'evict', model: 'old', reason: 'make room for flux', forecast: 0 },
        { machine: 'm1', action: 'prefetch', model: 'flux', reason: 'forecast 3.4/bucket', forecast: 3.4 },
      ],
    });
  });
  afterAll(async () => stack?.stop());

  it('prints the capacity hint, the forecast, the placement matrix and the last decisions; --json the API answer', async () => {
    const text = await runEmp(['planner', '--pool', 'standard'], operator);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('capacity hint: 4 machines (wait target 10.0 s; ready now: 1)');
    expect(text.stdout).toMatch(/flux\s+3\.40\s+0\s+2\s+holt\+seasonal/);
    // columns: the forecast's models first, then the others on disk
    expect(text.stdout).toMatch(/MACHINE\s+STATE\s+CACHE\s+flux\s+old\s+sdxl/);
    expect(text.stdout).toMatch(/m1\s+ready\s+27\.0\/30\.0 GB\s+p\s+x\s+L/);
    expect(text.stdout).toMatch(/m1\s+prefetch\s+flux\s+forecast 3\.4\/bucket/);

    const json = await runEmp(['planner', '--json'], operator);
    const report = JSON.parse(json.stdout) as { pools: Array<{ pool: string; decisions: unknown[] }> };
    expect(report.pools.find((p) => p.pool === 'standard')!.decisions).toHaveLength(2);
  });

  it('is refused without an operator key', async () => {
    const client = { EMP_API_URL: stack.url, EMP_API_KEY: (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' })).key };
    const refused = await runEmp(['planner'], client);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/403/);
  });
});
