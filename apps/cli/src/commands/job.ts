import { NotFoundError, WebhookOutbox, eventView } from '@emp/core';
import type { Command } from 'commander';
import { withBroker } from '../connection';
import { redisFlag } from '../flags';
import { json } from '../format';
import { traceJob } from '../job-trace';
import { describeJob } from '../job-view';

export function registerJob(program: Command): void {
  program
    .command('job')
    .description('show one job: state, timings, attempts, result or error')
    .argument('<id>', 'job id, e.g. standard.m3kx9a0b1c2d3e4f')
    .option('--json', 'print the job as JSON')
    .option('--trace', "print the job's timeline: every event and webhook delivery attempt, then the time spent queued, starting, downloading and loading models, running and uploading, and when its webhook was delivered")
    .action(async (id: string, options: { json?: boolean; trace?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const job = await broker.getJob(id);
        if (!job) throw new NotFoundError(`job ${id} does not exist (or its retention has passed)`);
        if (options.trace) {
          const events = (await broker.jobEvents(id)).events;
          const deliveries = await new WebhookOutbox(broker).deliveryLog(id);
          process.stdout.write(options.json ? `${json({ job, events: events.map(eventView), deliveries })}\n` : `${traceJob(job, events, deliveries)}\n`);
          return;
        }
        process.stdout.write(options.json ? `${json(job)}\n` : `${describeJob(job, await broker.serverTime())}\n`);
      });
    });
}
