import { resolve } from 'node:path';
import type { Command } from 'commander';
import { brokerConfigFromEnv } from '@emp/core';
import { z } from 'zod';
import { STATE_DIR, type RedisTarget } from '../connection';
import { UsageError } from '../errors';
import { intFlag, parseFlags, redisFlag } from '../flags';
import { createLogger } from '../logger';
import type { LocalStack } from '../stack';

const DurationRange = z
  .string()
  .regex(/^\d+(-\d+)?$/, "expected milliseconds ('3000') or a range ('1000-5000')")
  .transform((text) => {
    const [min, max] = text.split('-').map(Number) as [number, number | undefined];
    return max === undefined ? min : { min: Math.min(min, max), max: Math.max(min, max) };
  });

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

const StartFlags = z.object({
  redisPort: intFlag(z.number().int().min(1).max(65_535)),
  apiPort: intFlag(z.number().int().min(0).max(65_535)),
  apiHost: z.string().min(1).max(255),
  monitorPort: intFlag(z.number().int().min(0).max(65_535)),
  monitor: z.boolean().default(true),
  webhooksPort: intFlag(z.number().int().min(0).max(65_535)),
  webhooks: z.boolean().default(true),
  planner: z.boolean().default(true),
  auth: z.boolean().default(false),
  strictWebhooks: z.boolean().default(false),
  stateDir: z.string().min(1),
  workers: intFlag(z.number().int().min(1).max(64)),
  simDurationMs: DurationRange,
});

export function registerStart(program: Command): void {
  program
    .command('start')
    .description('run the local stack: Redis (embedded unless REDIS_URL or --redis), scheduler, API, webhook delivery, monitor, and a machine agent with workers and simulated services')
    .option('--redis-port <port>', 'port of the embedded Redis (a free one if taken)', '6390')
    .option('--state-dir <dir>', 'folder for the embedded Redis data and URL', STATE_DIR)
    .option('--workers <n>', 'workers on the local machine (each with a simulated service)', '2')
    .option('--api-port <port>', 'port of the HTTP + WebSocket API (a free one if taken)', '3331')
    .option('--api-host <address>', 'address the API listens on; anything but loopback needs --auth', '127.0.0.1')
    .option('--monitor-port <port>', 'port of the monitor web page (a free one if taken)', '3333')
    .option('--no-monitor', 'do not serve the monitor page')
    .option('--webhooks-port <port>', 'port of the webhook delivery service (/health, /metrics; a free one if taken)', '3332')
    .option('--no-webhooks', 'do not run the webhook delivery service')
    .option('--no-planner', 'do not run the planner (model prefetch / evict and capacity hints)')
    .option('--auth', 'require API keys (create one with `emp keys create --role operator`)')
    .option('--strict-webhooks', 'refuse webhook URLs on localhost and private addresses, as a deployed API does (allowed by default while the API is on loopback)')
    .option('--sim-duration-ms <ms>', "how long a simulated job runs: '3000' or a range '1000-5000' (a job's payload may set duration_ms)", '2000-5000')
    .action(async (options: Record<string, unknown>, command: Command) => {
      const flags = parseFlags(StartFlags, options);
      if (!flags.auth && !LOOPBACK.has(flags.apiHost)) {
        throw new UsageError(`the API would be open to anyone on ${flags.apiHost}: pass --auth (and create keys with \`emp keys create\`), or keep it on 127.0.0.1`);
      }
      const logger = createLogger('emp');
      const url = redisFlag(command) ?? process.env.REDIS_URL;
      const redis: RedisTarget | undefined = url ? { url, source: redisFlag(command) ? 'flag' : 'env' } : undefined;
      // listening from the start: a Ctrl-C while starting stops the stack once it is up, instead of
      // killing this process and leaving the embedded redis-server (in its own process group) behind
      const signaled = untilSignal();
      // loaded when the command runs, so that other commands start without the API, monitor and agent
      const { startLocalStack } = await import('../stack');
      const stack = await startLocalStack({
        redis,
        stateDir: flags.stateDir,
        redisPort: flags.redisPort,
        workers: flags.workers,
        jobDurationMs: flags.simDurationMs,
        api: { host: flags.apiHost, port: flags.apiPort, auth: flags.auth, ...webhookSetting(flags) },
        monitor: flags.monitor ? { port: flags.monitorPort } : false,
        webhooks: flags.webhooks ? { port: flags.webhooksPort } : false,
        planner: flags.planner ? {} : false,
        // the pools jobs are routed to (docs/pools.md); the machine's workers read the same variables
        broker: brokerConfigFromEnv(process.env),
        logger,
      });
      // other commands find the embedded Redis through .emp/redis.url under the working folder
      const discoverable = stack.redisDir !== undefined && resolve(flags.stateDir) === resolve(STATE_DIR);
      process.stdout.write(banner(stack, discoverable));
      await signaled;
      process.stdout.write('stopping: letting running jobs finish (Ctrl-C again to force)\n');
      const stoppingSince = Date.now();
      const force = () => {
        // npm and tsx relay the terminal's signal too: a copy arriving right away is not a second Ctrl-C
        if (Date.now() - stoppingSince < 1_000) return;
        logger.warn('forced exit');
        process.exit(1);
      };
      process.on('SIGINT', force);
      process.on('SIGTERM', force);
      await stack.stop();
      logger.info('stopped');
      process.stdout.write('stopped\n');
      // everything is closed; should a stray handle still hold the event loop, do not hang on it
      setTimeout(() => process.exit(process.exitCode ?? 0), 2_000).unref();
    });
}

/**
 * A developer's stack on loopback may send webhooks to localhost; one reachable
 * from elsewhere leaves it to EMP_WEBHOOK_ALLOW_PRIVATE (off unless set), and
 * --strict-webhooks refuses them everywhere.
 */
function webhookSetting(flags: { strictWebhooks: boolean; apiHost: string }): { webhookAllowPrivate?: boolean } {
  if (flags.strictWebhooks) return { webhookAllowPrivate: false };
  return LOOPBACK.has(flags.apiHost) ? { webhookAllowPrivate: true } : {};
}

function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(signal);
    };
    process.once('SIGINT', on);
    process.once('SIGTERM', on);
  });
}

function banner(stack: LocalStack, discoverable: boolean): string {
  const env = discoverable ? '' : `REDIS_URL=${stack.redisUrl} `;
  const emp = (args: string) => `  ${env}npm run emp -- ${args}`;
  return [
    '',
    'EMP Job Queue: local stack running',
    `  redis      ${stack.redisUrl}${stack.redisDir ? `  (embedded, AOF data in ${stack.redisDir})` : '  (from REDIS_URL / --redis)'}`,
    '  scheduler  running (retries, lease reaping, deadlines, offline detection)',
    `  machine    ${stack.machine.machineId} in pool ${stack.machine.pool}: agent with workers ${stack.machine.workerIds.join(', ')} (service simulation)${stack.machine.ready ? '' : ', still starting'}`,
    `             processes ${stack.machine.processes.join(', ')}; logs in ${stack.machine.logsDir}`,
    `             health ${stack.machine.healthUrl}/status  (also /ready, /metrics)`,
    `  api        ${stack.api.url}  (docs ${stack.api.url}/docs, metrics ${stack.api.url}/metrics, live ${stack.api.url.replace(/^http/, 'ws')}/v1/live)`,
    stack.api.auth
      ? '             API keys required: create one with `npm run emp -- keys create --role operator`'
      : '             auth OFF (local development): restart with `npm start -- --auth` and create keys with `npm run emp -- keys create --role client --tenant <t>`',
    ...(stack.api.webhookAllowPrivate ? ['             webhooks may target localhost and private addresses (local development; --strict-webhooks refuses them)'] : []),
    stack.monitor
      ? `  monitor    ${stack.monitor.url}  (the operator's live page${stack.api.auth ? '; it asks for an operator key' : ''})`
      : '  monitor    not started (--no-monitor)',
    stack.webhooks
      ? `  webhooks   ${stack.webhooks.url}  (delivers jobs' webhooks, signed: secret at ${stack.api.url}/v1/webhooks/secret; health /health, metrics /metrics)`
      : '  webhooks   not started (--no-webhooks)',
    stack.planner
      ? `  planner    every ${stack.planner.intervalMs / 1_000} s: model prefetch / evict per pool and capacity hints (\`npm run emp -- planner\`, docs/planner.md)`
      : '  planner    not started (--no-planner)',
    '',
    'Over HTTP:',
    `  curl -s -X POST '${stack.api.url}/v1/jobs?wait=30' -H 'content-type: application/json' -d '{"service":"simulation"}'${stack.api.auth ? " -H 'authorization: Bearer <key>'" : ''}`,
    `  curl -s '${stack.api.url}/v1/jobs?state=succeeded&limit=5'${stack.api.auth ? " -H 'authorization: Bearer <key>'" : ''}`,
    '',
    'In another terminal:',
    emp('submit --service simulation --wait      # submit a job and follow it'),
    emp('workflow submit docs/examples/workflow.json --watch   # three steps, each fed by the one before (docs/workflows.md)'),
    emp('queues                                  # depth per requirement class'),
    emp('workers                                 # workers and their state'),
    emp('watch                                   # live events'),
    emp('job <id>                                # one job in detail'),
    emp('jobs --state queued,running             # recent jobs, newest first'),
    emp('machines                                # machines and their last command'),
    `  curl -s -X POST '${stack.api.url}/v1/machines/${stack.machine.machineId}/restart' -H 'content-type: application/json' -d '{"service":"simulation"}'${stack.api.auth ? " -H 'authorization: Bearer <key>'" : ''}`,
    `  curl -sN '${stack.api.url}/v1/machines/${stack.machine.machineId}/logs?follow=1'${stack.api.auth ? " -H 'authorization: Bearer <key>'" : ''}   # its processes' output, live`,
    '',
    'Ctrl-C stops everything; queued jobs stay in Redis.',
    '',
  ].join('\n');
}
