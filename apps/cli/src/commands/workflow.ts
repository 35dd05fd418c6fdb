import { readFile } from 'node:fs/promises';
import { type Broker, PoolName, type StreamEvent, SubmitWorkflowInput, TenantId, type Workflow, isEventOfWorkflow, isJobEvent, isWorkflowEvent, poolOfJobId } from '@emp/core';
import type { Command } from 'commander';
import { z } from 'zod';
import { withBroker } from '../connection';
import { CommandError, EXIT_FAILURE, EXIT_OK, UsageError } from '../errors';
import { tailPool } from '../event-tail';
import { intFlag, parseFlags, redisFlag, secondsFlag } from '../flags';
import { clockTime, duration, json, table } from '../format';

const workflowInput = SubmitWorkflowInput.shape;

const SubmitFlags = z.object({
  tenant: TenantId.optional(),
  priority: intFlag(workflowInput.priority.unwrap()).optional(),
  pool: PoolName.optional(),
  idempotencyKey: workflowInput.idempotency_key,
  watch: z.boolean().default(false),
  timeout: secondsFlag.optional(),
  json: z.boolean().default(false),
});
const WatchFlags = z.object({ timeout: secondsFlag.optional(), json: z.boolean().default(false) });
const ListFlags = z.object({ tenant: TenantId.optional(), limit: intFlag(z.number().int().min(1).max(500)).default(20), json: z.boolean().default(false) });

/** The workflow file: JSON, as POST /v1/workflows takes it (docs/workflows.md). */
async function readWorkflowFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new UsageError(`${path} is not JSON: ${(error as Error).message}`);
  }
}

async function mustRead(broker: Broker, id: string): Promise<Workflow> {
  const workflow = await broker.getWorkflow(id);
  if (!workflow) throw new CommandError(`workflow ${id} does not exist (or its retention has passed)`);
  return workflow;
}

/** The steps as a table: state, jobs, timings, error. */
export function workflowText(workflow: Workflow): string {
  const head = `${workflow.id}  ${workflow.state}  ${workflow.progress.ended}/${workflow.progress.total} steps ended  tenant ${workflow.tenant}  pool ${workflow.pool}  submitted ${clockTime(workflow.submitted_at)}` +
    (workflow.finished_at ? `  took ${duration(workflow.finished_at - workflow.submitted_at)}` : '');
  const rows = workflow.steps.map((step) => [
    step.name,
    step.state + (step.optional ? ' (optional)' : ''),
    step.needs.join(',') || '-',
    step.jobs.length === 1 ? step.jobs[0]!.id : step.jobs.length ? `${step.jobs.length} items` : '-',
    step.started_at && step.ended_at ? duration(step.ended_at - step.started_at) : step.ready_at ? `ready ${clockTime(step.ready_at)}` : '-',
    step.error ?? '',
  ]);
  const lines = [head, table(['STEP', 'STATE', 'NEEDS', 'JOB', 'TIME', 'ERROR'], rows)];
  if (workflow.error) lines.push(`error: ${workflow.error}`);
  return lines.join('\n');
}

/** A line per workflow event (and per step job's state change), with the progress so far. */
function progressLine(workflow: Workflow, event: StreamEvent): string | undefined {
  const at = `[${workflow.progress.ended}/${workflow.progress.total}]`;
  if (isWorkflowEvent(event)) {
    if (event.type === 'workflow.step_succeeded') return `${at} ${event.step} succeeded`;
    if (event.type === 'workflow.step_failed') return `${at} ${event.step} failed${event.optional ? ' (optional: the workflow goes on)' : ''}: ${event.error}`;
    if (event.type === 'workflow.failed') return `${at} workflow failed: ${event.error}`;
    return `${at} ${event.type.replace('workflow.', 'workflow ')}`;
  }
  if (isJobEvent(event) && ['job.queued', 'job.starting', 'job.running', 'job.retrying', 'job.failed', 'job.canceled', 'job.expired'].includes(event.type)) {
    const step = workflow.steps.find((s) => s.jobs.some((j) => j.id === event.job));
    return `${at} ${step?.name ?? event.job} ${event.state}${step && step.jobs.length > 1 ? ` (${event.job})` : ''}`;
  }
  return undefined;
}

/**
 * Follows a workflow on its pool's event stream until it ends, printing a line per
 * change; returns it as it ended. Reads the workflow first: one that has ended returns at once.
 */
async function watchWorkflow(broker: Broker, id: string, options: { timeoutMs?: number; quiet: boolean }): Promise<Workflow> {
  const pool = poolOfJobId(id);
  const cursor = await broker.latestEventId(pool);
  let workflow = await mustRead(broker, id);
  if (!options.quiet) process.stderr.write(`[${workflow.progress.ended}/${workflow.progress.total}] ${workflow.steps.map((s) => `${s.name}: ${s.state}`).join(', ')}\n`);
  if (workflow.state !== 'running') return workflow;
  const controller = new AbortController();
  const timer = options.timeoutMs ? setTimeout(() => controller.abort(), options.timeoutMs) : undefined;
  let chain = Promise.resolve();
  try {
    await tailPool(broker, pool, cursor, (event) => {
      if (!isEventOfWorkflow(id, event)) return;
      chain = chain.then(async () => {
        workflow = await mustRead(broker, id);
        const line = progressLine(workflow, event);
        if (line && !options.quiet) process.stderr.write(`${line}\n`);
        if (workflow.state !== 'running') controller.abort();
      });
    }, controller.signal);
    await chain;
  } finally {
    clearTimeout(timer);
  }
  if (workflow.state === 'running') throw new CommandError(`workflow ${id} has not ended after ${duration(options.timeoutMs ?? 0)}; it keeps running (see \`emp workflow get ${id}\`)`);
  return workflow;
}

/** `emp workflow`: submit, show, watch, cancel and list workflows (docs/workflows.md). */
export function registerWorkflow(program: Command): void {
  const workflow = program.command('workflow').description('multi-step workflows: submit a file of named steps, show, watch, cancel, list');

  workflow
    .command('submit')
    .description('submit a workflow from a JSON file (as POST /v1/workflows takes it) and print its id; with --watch, follow it to the end')
    .argument('<file>', 'the workflow, as JSON: {"steps": {"<name>": {"service": ..., "needs": [...], "payload": {...}}}}')
    .option('--tenant <id>', "the workflow's tenant (overrides the file's)")
    .option('--priority <n>', "-1000..1000 (overrides the file's)")
    .option('--pool <name>', "the pool every step runs in (overrides the file's)")
    .option('--idempotency-key <key>', 'a resubmit with the same key (and the same workflow) returns the first workflow instead of starting another')
    .option('--watch', 'follow it until it ends; exit 0 only if it succeeded')
    .option('--timeout <seconds>', 'with --watch: give up waiting after this long (the workflow keeps running)')
    .option('--json', 'print JSON for scripts')
    .action(async (file: string, options: Record<string, unknown>, command: Command) => {
      const flags = parseFlags(SubmitFlags, options);
      const body = await readWorkflowFile(file);
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new UsageError(`${file}: a workflow is a JSON object with "steps"`);
      const input = {
        ...(body as Record<string, unknown>),
        ...(flags.tenant ? { tenant: flags.tenant } : {}),
        ...(flags.priority !== undefined ? { priority: flags.priority } : {}),
        ...(flags.pool ? { pool: flags.pool } : {}),
        ...(flags.idempotencyKey ? { idempotency_key: flags.idempotencyKey } : {}),
      } as SubmitWorkflowInput;
      process.exitCode = await withBroker(redisFlag(command), async (broker) => {
        const submitted = await broker.submitWorkflow(input);
        if (submitted.duplicate) process.stderr.write(`note: idempotency key matched an earlier workflow; this is that workflow\n`);
        if (!flags.watch) {
          process.stdout.write(flags.json ? `${json(submitted)}\n` : `${submitted.id}\n`);
          return submitted.state === 'failed' ? EXIT_FAILURE : EXIT_OK;
        }
        if (!flags.json) process.stdout.write(`${submitted.id}\n`);
        const final = await watchWorkflow(broker, submitted.id, { timeoutMs: flags.timeout, quiet: flags.json });
        process.stdout.write(flags.json ? `${json(final)}\n` : `${workflowText(final)}\n`);
        return final.state === 'succeeded' ? EXIT_OK : EXIT_FAILURE;
      });
    });

  workflow
    .command('get')
    .alias('show')
    .description("show a workflow: its state and every step's state, job, time and error")
    .argument('<id>', 'workflow id')
    .option('--json', 'print JSON (with every step\'s output) for scripts')
    .action(async (id: string, options: { json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        const found = await mustRead(broker, id);
        process.stdout.write(options.json ? `${json(found)}\n` : `${workflowText(found)}\n`);
      });
    });

  workflow
    .command('watch')
    .description('follow a workflow until it ends, a line per change with its progress; exit 0 only if it succeeded')
    .argument('<id>', 'workflow id')
    .option('--timeout <seconds>', 'give up waiting after this long (the workflow keeps running)')
    .option('--json', 'print the ended workflow as JSON')
    .action(async (id: string, options: Record<string, unknown>, command: Command) => {
      const flags = parseFlags(WatchFlags, options);
      process.exitCode = await withBroker(redisFlag(command), async (broker) => {
        const final = await watchWorkflow(broker, id, { timeoutMs: flags.timeout, quiet: flags.json });
        process.stdout.write(flags.json ? `${json(final)}\n` : `${workflowText(final)}\n`);
        return final.state === 'succeeded' ? EXIT_OK : EXIT_FAILURE;
      });
    });

  workflow
    .command('cancel')
    .description('cancel a workflow and its steps still queued or running; an ended workflow is left as it is')
    .argument('<id>', 'workflow id')
    .option('--reason <text>', 'why, kept on the workflow')
    .option('--json', 'print JSON for scripts')
    .action(async (id: string, options: { reason?: string; json?: boolean }, command: Command) => {
      await withBroker(redisFlag(command), async (broker) => {
        await mustRead(broker, id);
        const outcome = await broker.cancelWorkflow(id, options.reason ?? '');
        if (options.json) process.stdout.write(`${json({ id, ...outcome })}\n`);
        else process.stdout.write(outcome.changed ? `${id} canceled\n` : `${id} is already ${outcome.state}; unchanged\n`);
      });
    });

  workflow
    .command('list')
    .description('the newest workflows, with their state and progress')
    .option('--tenant <id>', "one tenant's only")
    .option('--limit <n>', 'at most this many (default 20)')
    .option('--json', 'print JSON for scripts')
    .action(async (options: Record<string, unknown>, command: Command) => {
      const flags = parseFlags(ListFlags, options);
      await withBroker(redisFlag(command), async (broker) => {
        const items = await broker.listWorkflows({ tenant: flags.tenant, limit: flags.limit });
        const found = (await Promise.all(items.map((item) => broker.getWorkflow(item.id)))).filter((w): w is Workflow => w !== null);
        if (flags.json) process.stdout.write(`${json(found)}\n`);
        else
          process.stdout.write(
            `${table(['ID', 'STATE', 'STEPS', 'TENANT', 'SUBMITTED'], found.map((w) => [w.id, w.state, `${w.progress.ended}/${w.progress.total}`, w.tenant, clockTime(w.submitted_at)]))}\n`,
          );
      });
    });
}
