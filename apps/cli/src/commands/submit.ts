import { JobRequirements, SubmitJobInput, poolOfJobId } from '@emp/core';
import type { Command } from 'commander';
import { z } from 'zod';
import { withBroker } from '../connection';
import { EXIT_FAILURE, EXIT_OK } from '../errors';
import { intFlag, jsonFlag, parseFlags, redisFlag, secondsFlag } from '../flags';
import { followJob } from '../follow-job';
import { json } from '../format';
import { outcomeLine } from '../job-view';
import { ProgressDisplay } from '../progress-display';

const job = SubmitJobInput.shape;

const SubmitFlags = z.object({
  service: job.service,
  payload: jsonFlag(z.unknown()).optional(),
  requirements: jsonFlag(JobRequirements).optional(),
  tenant: job.tenant.optional(),
  priority: intFlag(job.priority).optional(),
  maxAttempts: intFlag(job.max_attempts).optional(),
  idempotencyKey: job.idempotency_key,
  expectedDuration: z.string().transform((text) => (text.trim() === '' ? Number.NaN : Number(text))).pipe(job.expected_duration_s.unwrap()).optional(),
  wait: z.boolean().default(false),
  durable: z.boolean().default(false),
  timeout: secondsFlag.optional(),
  json: z.boolean().default(false),
});

export function registerSubmit(program: Command): void {
  program
    .command('submit')
    .description('submit a job and print its id; with --wait, follow it to the end')
    .requiredOption('--service <name>', 'service that runs the job (simulation, comfyui, ollama, ...)')
    .option('--payload <json>', 'what the service gets, as JSON (default {})')
    .option('--requirements <json>', 'what the worker must have, as JSON, e.g. \'{"pool":"fast-lane","models":["sdxl"]}\'')
    .option('--tenant <id>', 'tenant the job belongs to (default "default")')
    .option('--priority <n>', '-1000..1000, higher runs first (default 0)')
    .option('--max-attempts <n>', 'attempts before the job fails (default 3)')
    .option('--idempotency-key <key>', 'a resubmit with the same key returns the same job')
    .option('--expected-duration <seconds>', 'how long the job should run: routes it to the pool of that duration (docs/pools.md)')
    .option('--durable', 'answer only once a Redis replica has the job, so that a failover cannot lose it (docs/scale-out.md); fails with NOT_REPLICATED if none acknowledges in time')
    .option('--wait', 'follow the job until it ends; exit 0 only if it succeeded')
    .option('--timeout <seconds>', 'with --wait: give up waiting after this long (the job keeps running)')
    .option('--json', 'print JSON for scripts')
    .action(async (options: Record<string, unknown>, command: Command) => {
      const flags = parseFlags(SubmitFlags, options);
      process.exitCode = await withBroker(redisFlag(command), async (broker) => {
        const input: SubmitJobInput = {
          service: flags.service,
          payload: flags.payload,
          requirements: flags.requirements,
          tenant: flags.tenant,
          priority: flags.priority,
          max_attempts: flags.maxAttempts,
          idempotency_key: flags.idempotencyKey,
          expected_duration_s: flags.expectedDuration,
        };
        // taken before the submit, so that following the job misses none of its events
        const cursorPool = flags.requirements?.pool ?? broker.config.defaultPool;
        const cursor = flags.wait ? await broker.latestEventId(cursorPool) : undefined;
        // without --durable, the broker's EMP_DURABLE_SUBMIT decides
        const submitted = await broker.submit(input, flags.durable ? { durable: true } : {});
        if (!submitted.routable) {
          process.stderr.write(`warning: no worker that has registered in pool ${submitted.pool} can run this job; it waits until one does\n`);
        }
        if (submitted.duplicate) process.stderr.write(`note: idempotency key matched an earlier job; this is that job\n`);
        if (!flags.wait) {
          process.stdout.write(flags.json ? `${json(submitted)}\n` : `${submitted.id}\n`);
          return EXIT_OK;
        }

        if (!flags.json) process.stdout.write(`${submitted.id}\n`);
        const display = new ProgressDisplay(process.stderr, submitted.id);
        const interrupted = () => {
          display.finish();
          process.stderr.write(`stopped following ${submitted.id}; it keeps going (see \`emp job ${submitted.id}\`)\n`);
          process.exit(130);
        };
        process.once('SIGINT', interrupted);
        try {
          const final = await followJob(broker, submitted.id, {
            onUpdate: (update) => display.update(update),
            // routing (or a sharded pool's placement) may have put the job in another stream than the cursor's: then followJob reads the job before its events
            cursor: poolOfJobId(submitted.id) === cursorPool ? cursor : undefined,
            timeoutMs: flags.timeout || undefined, // --timeout 0: no limit
          });
          display.finish();
          if (flags.json) {
            process.stdout.write(`${json(final)}\n`);
          } else {
            process.stdout.write(`${outcomeLine(final)}\n`);
            if (final.result !== undefined) process.stdout.write(`${json(final.result)}\n`);
          }
          return final.state === 'succeeded' ? EXIT_OK : EXIT_FAILURE;
        } finally {
          display.finish();
          process.off('SIGINT', interrupted);
        }
      });
    });
}
