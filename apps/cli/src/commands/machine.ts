import { resolve } from 'node:path';
import type { Broker, ModelAction, StopReason } from '@emp/core';
import type { Command } from 'commander';
import { z } from 'zod';
import { resolveRedisTarget, withBroker } from '../connection';
import { CommandError, EXIT_FAILURE, UsageError } from '../errors';
import { parseFlags, redisFlag, secondsFlag } from '../flags';
import { json } from '../format';
import { createLogger } from '../logger';

/**
 * `emp machine --config machine.json`: the machine agent of a (GPU) machine, the
 * one process its container starts. SIGTERM (a spot preemption notice) or
 * Ctrl-C drains it: workers hand their jobs back at once, the machine goes
 * offline, and the process exits 0; so does a `shutdown` command.
 *
 * `emp machine prefetch|evict|load <machine> <model>`: an operator's command for a
 * machine's models (its cache on disk; load: into an idle GPU), appended to its command stream for its agent (which
 * reports the outcome on the machine and as a machine.command.done event).
 */
export function registerMachine(program: Command): void {
  const machine = program
    .command('machine')
    .description(MACHINE_DESCRIPTION)
    // not requiredOption: commander would ask for it of the subcommands too
    .option('--config <file>', 'machine config (JSON, ${VAR} expanded from the environment)')
    .action(async (options: { config?: string }, command: Command) => {
      if (options.config === undefined) throw new UsageError("required option '--config <file>' not specified (or name a subcommand: prefetch, evict, load)");
      // loaded when the command runs, so that other commands start without the agent's code and packages
      const { MachineAgent, loadMachineConfig } = await import('@emp/machine');
      const config = await loadMachineConfig(resolve(options.config));
      // --redis, else the config's redis_url, else REDIS_URL or the local stack's .emp/redis.url
      const redisUrl = redisFlag(command) ?? config.redis_url ?? resolveRedisTarget(undefined).url;
      const agent = new MachineAgent({ config, redisUrl, logger: createLogger('emp-machine') });
      const stopOn = (signal: StopReason) => () => void agent.stop(signal);
      process.once('SIGTERM', stopOn('SIGTERM'));
      process.once('SIGINT', stopOn('SIGINT'));
      try {
        await agent.start();
      } catch (error) {
        throw new CommandError(`machine ${config.machine_id} could not start: ${(error as Error).message}`);
      }
      process.stdout.write(`machine ${config.machine_id} in pool ${config.pool}: agent running, health ${agent.url}/status\n`);
      const reason = await agent.done;
      process.stdout.write(`machine ${config.machine_id} stopped (${reason})\n`);
    });

  for (const [action, description] of MODEL_COMMANDS) {
    machine
      .command(action)
      .description(description)
      .argument('<machine>', 'machine id')
      .argument('<model>', "model name, as in the machine's catalog (its config's `models`)")
      .option('--pool <name>', "the machine's pool; found by looking when left out")
      .option('--reason <text>', 'why, kept with the command')
      .option('--wait <seconds>', "wait up to this long for the agent's outcome; exit 0 only if it is ok")
      .option('--json', 'print JSON for scripts')
      .action(async (machineId: string, model: string, options: { pool?: string; reason?: string; wait?: string; json?: boolean }, command: Command) => {
        const { wait } = parseFlags(z.object({ wait: secondsFlag.optional() }), { wait: options.wait });
        await withBroker(redisFlag(command), async (broker) => {
          const pool = await poolOfMachine(broker, machineId, options.pool);
          // the outcome is a machine.command.done event after the newest one now
          const cursor = wait === undefined ? '' : await broker.latestEventId(pool);
          const id = await broker.machineCommand(pool, machineId, { action, model, by: 'cli', reason: options.reason });
          const sent = { command_id: id, machine: machineId, pool, action, model };
          if (wait === undefined) {
            if (options.json) process.stdout.write(`${json(sent)}\n`);
            else process.stdout.write(`${action} ${model} sent to machine ${machineId} (pool ${pool}) as command ${id}; its agent reports the outcome (emp machines)\n`);
            return;
          }
          const done = await commandOutcome(broker, pool, id, cursor, wait);
          if (options.json) process.stdout.write(`${json({ ...sent, outcome: done?.outcome ?? 'pending', message: done?.message })}\n`);
          else if (done) process.stdout.write(`machine ${machineId}: ${done.outcome}: ${done.message ?? ''}\n`);
          if (!done) throw new CommandError(`machine ${machineId} reported no outcome of command ${id} within ${wait / 1_000} s (is its agent running?)`);
          if (done.outcome !== 'ok') process.exitCode = EXIT_FAILURE;
        });
      });
  }
}

const MACHINE_DESCRIPTION =
  "run this machine's agent: a worker (+ services) per GPU, supervised, registered, remote-controlled (see docs/machine.md); prefetch, evict or load a model on a machine";

const MODEL_COMMANDS: ReadonlyArray<[ModelAction, string]> = [
  ['prefetch', "download a model into a machine's model cache ahead of demand (not pinned: evictable later; failed if it cannot fit without evicting models in use)"],
  ['evict', "delete a model from a machine's model cache (failed while a job holds it or it is downloading)"],
  ['load', "load a model the machine holds on disk into an idle GPU's memory, so its next job starts without a load (failed while a job runs there, or where the service cannot load without a job: ComfyUI)"],
];

/** The machine.command.done event of `commandId`, read from the pool's events after `cursor`; undefined after `waitMs`. */
async function commandOutcome(broker: Broker, pool: string, commandId: string, cursor: string, waitMs: number): Promise<{ outcome: string; message?: string } | undefined> {
  const deadline = Date.now() + waitMs;
  let after = cursor;
  while (Date.now() < deadline) {
    const events = await broker.readEvents(pool, after, { count: 1_000 });
    for (const event of events) {
      if (event.type === 'machine.command.done' && event.command === commandId) return event;
    }
    if (events.length > 0) after = events[events.length - 1]!.id;
    else await new Promise((resolve) => setTimeout(resolve, Math.min(250, Math.max(0, deadline - Date.now()))));
  }
  return undefined;
}

/** The pool the machine is registered in: the one named, or the first pool that has it. */
async function poolOfMachine(broker: Broker, machineId: string, pool: string | undefined): Promise<string> {
  for (const candidate of pool ? [pool] : await broker.pools()) {
    if (await broker.isMachineRegistered(candidate, machineId)) return candidate;
  }
  throw new CommandError(`machine ${machineId} is not registered in ${pool ? `pool ${pool}` : 'any pool'}`);
}
