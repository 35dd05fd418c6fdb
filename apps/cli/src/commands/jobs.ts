import { type Job, JobListFilter, JobState, ServiceName } from '@emp/core';
import type { Command } from 'commander';
import { z } from 'zod';
import { withBroker } from '../connection';
import { TIME_FORMS, instantFlag, intFlag, parseFlags, redisFlag } from '../flags';
import { duration, json, progressText, table } from '../format';
import { endedText, isFinished } from '../job-view';

const filter = JobListFilter.shape;
const list = <T extends z.ZodType<string, string>>(item: T) =>
  z
    .string()
    .transform((text) => text.split(',').map((part) => part.trim()).filter(Boolean))
    .pipe(z.array(item).min(1));
const JobsFlags = z.object({
  state: list(JobState).optional(),
  service: list(ServiceName).optional(),
  tenant: filter.tenant,
  pool: filter.pool,
  since: instantFlag.optional(),
  until: instantFlag.optional(),
  limit: intFlag(z.number().int().min(1).max(500)).default(20),
  cursor: filter.cursor,
  json: z.boolean().default(false),
});

export function registerJobs(program: Command): void {
  program
    .command('jobs')
    .description('recent jobs, newest first, by state, service, tenant, pool and submission time')
    .option('--state <states>', 'comma-separated: queued,starting,running,retrying,succeeded,failed,canceled,expired')
    .option('--service <services>', 'comma-separated services')
    .option('--tenant <id>', 'only this tenant')
    .option('--pool <name>', 'only this pool')
    .option('--since <time>', `submitted at or after: ${TIME_FORMS}`)
    .option('--until <time>', 'submitted at or before (same forms)')
    .option('--limit <n>', 'jobs per page (default 20)')
    .option('--cursor <cursor>', 'the next page: the cursor a previous page printed')
    .option('--json', 'print JSON for scripts')
    .action(async (options: Record<string, unknown>, command: Command) => {
      const flags = parseFlags(JobsFlags, options);
      await withBroker(redisFlag(command), async (broker) => {
        const page = await broker.listJobs({
          states: flags.state,
          services: flags.service,
          tenant: flags.tenant,
          pool: flags.pool,
          since: flags.since,
          until: flags.until,
          cursor: flags.cursor || undefined, // --cursor '': the first page
          limit: flags.limit,
        });
        const [now, found] = await Promise.all([broker.serverTime(), Promise.all(page.jobs.map((item) => broker.getJob(item.id)))]);
        const jobs = found.filter((job): job is Job => job !== null);
        if (flags.json) {
          process.stdout.write(`${json({ jobs, next_cursor: page.next_cursor })}\n`);
          return;
        }
        process.stdout.write(`${jobs.length ? table(['ID', 'STATE', 'SERVICE', 'TENANT', 'SUBMITTED', 'ATTEMPTS', 'WORKER', 'DETAIL'], jobs.map((job) => row(job, now))) : 'no jobs match'}\n`);
        if (page.next_cursor) process.stdout.write(`more: --cursor ${page.next_cursor}\n`);
      });
    });
}

function row(job: Job, now: number): string[] {
  const problem = job.error && job.state !== 'succeeded' ? `${job.error.kind}: ${job.error.message}` : undefined;
  const detail = isFinished(job)
    ? [endedText(job), problem ?? job.cancel_reason ?? job.expire_reason].filter(Boolean).join(': ')
    : job.state === 'queued' && job.position !== undefined
      ? `position ${job.position}`
      : problem ?? progressText(job.progress, job.state);
  return [
    job.id,
    job.state,
    job.service,
    job.tenant,
    `${duration(now - job.timestamps.submitted_at)} ago`,
    String(job.attempts),
    job.worker ?? '-',
    detail.length > 60 ? `${detail.slice(0, 57)}...` : detail,
  ];
}
