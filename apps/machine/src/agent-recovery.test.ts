import { Broker } from '@emp/core';
import { waitFor } from '@emp/testkit';
import { POOL, machineEvents, machineRecord, testMachineConfig, useTestAgents } from '@emp/testkit/machine';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { MachineAgent } from './agent';
import type { MachineStatus } from './status';

const db = usePrivateRedis();
const silent = pino({ level: 'silent' });
const agents = useTestAgents(db.url);

async function startAgent(overrides: Record<string, unknown>): Promise<MachineAgent> {
  return agents.start(testMachineConfig(await agents.folder(), overrides));
}

const status = async (agent: MachineAgent): Promise<MachineStatus> => (await fetch(`${agent.url}/status`)).json() as Promise<MachineStatus>;

describe('a crash-looping service', () => {
  it('is restarted with backoff, then marked failed and left alone; the machine is degraded and says why; a restart command tries again', async () => {
    const broker = await Broker.connect({ redis: db.redis });
    // a tiny script that exits at once; the worker does not drive it, so it still works
    const agent = await startAgent({ services: [{ name: 'flaky', command: 'sh', args: ['-c', 'echo "boom on port $PORT" >&2; exit 3'], port_base: 39_000 }] });

    const failed = await waitFor('the service to be marked failed', async () => {
      const p = (await status(agent)).processes.find((x) => x.name === 'flaky-cpu0');
      return p?.state === 'failed' ? p : undefined;
    }, 30_000);
    expect(failed).toMatchObject({ restarts: 3, last_exit: { code: 3, signal: null }, reason: expect.stringMatching(/^exited 4 times within 60000 ms \(last: exit code 3\)/) });
    expect(failed.next_restart_at).toBeUndefined();

    const transitions = (await machineEvents(broker, 'machine.process')).filter((e) => e.process === 'flaky-cpu0');
    expect(transitions.map((t) => t.state)).toEqual([
      'started', 'exited', 'restarting', 'started', 'exited', 'restarting', 'started', 'exited', 'restarting', 'started', 'exited', 'failed',
    ]);
    // backoff doubles: 50, 100, 200 ms
    expect(transitions.filter((t) => t.state === 'restarting').map((t) => t.delay_ms)).toEqual(['50', '100', '200']);
    expect(transitions.at(-2)).toMatchObject({ exit_code: '3', signal: '', exit: 'exit code 3' });

    await waitFor('the machine to be degraded in Redis', async () => (await machineRecord(broker)).state === 'degraded');
    const shown = JSON.parse((await machineRecord(broker)).processes!) as Array<Record<string, unknown>>;
    expect(shown.find((p) => p.name === 'flaky-cpu0')).toMatchObject({ state: 'failed', restarts: 3, last_exit: 'exit code 3' });
    const lines = (await broker.readMachineLogs(POOL, 'm1', '0', { process: 'flaky-cpu0' })).entries;
    expect(lines[0]).toMatchObject({ stream: 'stderr', line: 'boom on port 39000' });

    // the worker of the slot is not affected
    const { id } = await broker.submit({ service: 'simulation' });
    await waitFor('a job to run beside the failed service', async () => (await broker.getJob(id))?.state === 'succeeded', 30_000);

    // a restart command gives it a fresh crash-loop budget
    const command = await broker.machineCommand(POOL, 'm1', 'restart', { service: 'flaky' });
    await waitFor('the command to be acknowledged', async () => (await machineRecord(broker)).last_command_handled === command);
    await waitFor('it to fail again after four more exits', async () => {
      const p = (await status(agent)).processes.find((x) => x.name === 'flaky-cpu0');
      return p?.state === 'failed' && p.restarts === 7 ? p : undefined;
    }, 30_000);
  });
});

describe('commands across agent restarts', () => {
  it('a new agent resumes after the last command handled, and refuses commands that waited too long', async () => {
    const broker = await Broker.connect({ redis: db.redis });
    const first = await startAgent({ services: [] });
    const handled = await broker.machineCommand(POOL, 'm1', 'restart', { service: 'worker-simulation-cpu0' });
    await waitFor('the first agent to handle the command', async () => (await machineRecord(broker)).last_command_handled === handled);
    await first.stop();
    expect((await machineRecord(broker)).state).toBe('offline');

    // issued while no agent runs
    const stale = await broker.machineCommand(POOL, 'm1', 'shutdown', { reason: 'long ago' });
    await startAgent({ services: [], command_max_age_ms: 0 });
    await waitFor('the stale command to be refused', async () => (await machineRecord(broker)).last_command_handled === stale);
    const done = await machineEvents(broker, 'machine.command.done');
    expect(done.map((d) => [d.command, d.outcome])).toEqual([
      [handled, 'ok'],
      [stale, 'failed'],
    ]);
    expect(done[1]!.message).toMatch(/^not executed: issued \d+ s ago, before this agent started/);
    // the second agent did not redo the first command (no second acknowledgement above), nor shut down
    await waitFor('the second agent to be ready', async () => (await machineRecord(broker)).state === 'ready', 30_000);
  });
});

describe('a machine agent without Redis', () => {
  it('says what to set', () => {
    expect(() => new MachineAgent({ config: testMachineConfig('/tmp', {}), logger: silent })).toThrow(
      'machine m1: no Redis to use: set redis_url in the machine config, or REDIS_URL',
    );
  });
});
