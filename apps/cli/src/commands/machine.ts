import { resolve } from 'node:path';
import type { StopReason } from '@emp/core';
import type { Command } from 'commander';
import { resolveRedisTarget } from '../connection';
import { CommandError } from '../errors';
import { redisFlag } from '../flags';
import { createLogger } from '../logger';

/**
 * `emp machine --config machine.json`: the machine agent of a (GPU) machine, the
 * one process its container starts. SIGTERM (a spot preemption notice) or
 * Ctrl-C drains it: workers hand their jobs back at once, the machine goes
 * offline, and the process exits 0; so does a `shutdown` command.
 */
export function registerMachine(program: Command): void {
  program
    .command('machine')
    .description('run this machine\'s agent: a worker (+ services) per GPU, supervised, registered, remote-controlled (see docs/machine.md)')
    .requiredOption('--config <file>', 'machine config (JSON, ${VAR} expanded from the environment)')
    .action(async (options: { config: string }, command: Command) => {
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
}
