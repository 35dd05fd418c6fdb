import { idempotencyFingerprint } from '../canonical';
import { NotFoundError, PayloadTooLargeError, UnknownServiceError, ValidationError } from '../errors';
import { type Job, type JobState, JobId, SubmitJobInput } from '../job';
import { poolOfShard } from '../pool-shards';
import { durationClass } from '../routing';
import { parseWith } from '../validation';
import {
  type CompiledStep,
  SubmitWorkflowInput,
  type Workflow,
  type WorkflowStepState,
  type WorkflowStepView,
  compileWorkflow,
  stepJobId,
} from '../workflow';
import type { BrokerContext } from './context';
import { FUNCTIONS } from './functions';
import { getJobsSettled, idempotencyPlacement, newJobId, submitArgs } from './jobs';

export interface WorkflowSubmitResult {
  id: string;
  pool: string;
  /** 'running', or 'failed' when a first step could not be queued (a duplicate: the first workflow's state now) */
  state: Workflow['state'];
  /** an idempotent repeat: `id` is the workflow its key first submitted, nothing new was started */
  duplicate: boolean;
}

/**
 * Submits a workflow: validates it (a DAG of known steps whose references name
 * steps they wait for), prepares every step's submit, and hands the whole to
 * one atomic call that stores it and queues the steps that need nothing.
 *
 * The pool rule (docs/workflows.md): a workflow and all its steps live in one
 * pool shard, so that a step's end queues the next steps in the same call: the
 * workflow's `pool`, or the pool its first step routes to. A step whose
 * requirements name another pool is refused.
 */
export async function submitWorkflow(ctx: BrokerContext, input: SubmitWorkflowInput): Promise<WorkflowSubmitResult> {
  const workflow = parseWith(SubmitWorkflowInput, input, 'workflow');
  const steps = compileWorkflow(workflow);
  for (const { name, step } of steps) {
    if (!ctx.services.has(step.service)) {
      throw new UnknownServiceError(`step ${name}: unknown service '${step.service}'; known services: ${[...ctx.services].sort().join(', ')}`);
    }
  }
  const jobOf = (compiled: CompiledStep, id: string) =>
    parseWith(
      SubmitJobInput,
      { ...withoutWorkflowFields(compiled.step), tenant: workflow.tenant, priority: workflow.priority, workflow_id: id, step: compiled.index },
      `workflow step ${compiled.name}`,
    );
  const first = steps[0]!;
  let pool = workflow.pool;
  let firstFields: Array<string | number> = [];
  if (!pool) {
    const probe = jobOf(first, 'probe');
    const route = await ctx.router.route(probe, durationClass(probe.service, probe.requirements.models));
    pool = route.pool;
    firstFields = route.fields;
  }
  const misplaced = steps.filter(({ step }) => step.requirements.pool !== undefined && step.requirements.pool !== pool);
  if (misplaced.length) {
    throw new ValidationError(
      'workflow',
      misplaced.map(({ name, step }) => ({
        path: `steps.${name}.requirements.pool`,
        message: `names pool ${step.requirements.pool}, but every step of a workflow runs in the workflow's pool (${pool}); set the workflow's pool instead`,
      })),
    );
  }
  // the workflow and every step job in one shard of the pool, placed as a job is
  const shard = await ctx.placeJob(pool, idempotencyPlacement(workflow), 'workflow');
  const id = newJobId(shard);
  const definition = JSON.stringify({
    max_payload: String(ctx.config.maxPayloadBytes),
    steps: steps.map((compiled) => {
      const job = jobOf(compiled, id);
      const template = compiled.template.filter((part) => typeof part === 'string').join('');
      if (Buffer.byteLength(template) > ctx.config.maxPayloadBytes) {
        throw new PayloadTooLargeError(`step ${compiled.name}: payload is ${Buffer.byteLength(template)} bytes, over the ${ctx.config.maxPayloadBytes}-byte limit`);
      }
      // how its pool was chosen: the first step's route, or named by the workflow
      const fields = compiled === first && !workflow.pool ? firstFields : ['route_source', 'named'];
      const args = submitArgs(ctx, job, '', '', durationClass(job.service, job.requirements.models), fields).map(String);
      return {
        n: compiled.name,
        needs: compiled.needs,
        dn: compiled.dependents,
        opt: compiled.step.optional,
        a: args,
        t: compiled.template,
        ...(compiled.forEach ? { e: compiled.forEach } : {}),
      };
    }),
  });
  await ctx.rememberPool(shard);
  const idempotencyKey = workflow.idempotency_key;
  const fingerprint = idempotencyFingerprint(workflow);
  const [state, submittedId, duplicate] = await ctx.calls.call(FUNCTIONS.workflowSubmit, shard, [
    id,
    workflow.tenant,
    workflow.priority,
    definition,
    idempotencyKey ? `${workflow.tenant}:${idempotencyKey}` : '',
    fingerprint,
    ctx.config.idempotencyTtlMs,
  ]);
  return { id: submittedId, pool, state: state as Workflow['state'], duplicate: duplicate === 1 };
}

function withoutWorkflowFields(step: CompiledStep['step']): Record<string, unknown> {
  const { needs: _needs, optional: _optional, for_each: _forEach, ...job } = step;
  return job;
}

/** Cancels a running workflow and its step jobs still waiting or running; idempotent. */
export async function cancelWorkflow(ctx: BrokerContext, id: string, reason: string): Promise<{ state: Workflow['state']; changed: boolean }> {
  const [state, changed] = await ctx.calls.call(FUNCTIONS.workflowCancel, poolOfWorkflow(ctx, id), [id, reason.slice(0, 500)]);
  return { state: state as Workflow['state'], changed: changed === 1 };
}

function poolOfWorkflow(ctx: BrokerContext, id: string): string {
  parseWith(JobId, id, 'workflow id');
  return ctx.poolOf(id);
}

interface StoredStep {
  n: string;
  needs: string[];
  opt: boolean;
  a: string[];
  e?: { r: string };
}

const ACTIVE_ORDER: JobState[] = ['running', 'starting', 'retrying', 'queued'];

/** A workflow with every step's state, timings and output (null: none, or its retention has passed). */
export async function getWorkflow(ctx: BrokerContext, id: string): Promise<Workflow | null> {
  const pool = poolOfWorkflow(ctx, id);
  const [record, outputs] = await Promise.all([ctx.redis.hgetall(ctx.keys.workflow(pool, id)), ctx.redis.hgetall(ctx.keys.workflowOutputs(pool, id))]);
  if (!record.state) return null;
  const def = JSON.parse(record.def!) as { steps: StoredStep[] };
  const jobIds = def.steps.flatMap((step, index) => Array.from({ length: Number(record[`jobs:${step.n}`] ?? 0) }, (_, item) => stepJobId(id, index, item)));
  const reads = await getJobsSettled(ctx, jobIds);
  const jobs = new Map<string, Job>();
  jobIds.forEach((jobId, i) => {
    const read = reads[i]!;
    if (read.status === 'fulfilled' && read.value) jobs.set(jobId, read.value);
  });
  const num = (value: string | undefined) => (value === undefined || value === '' ? undefined : Number(value));
  let ended = 0;
  const steps = def.steps.map((step, index): WorkflowStepView => {
    const stored = record[`st:${step.n}`] ?? 'pending';
    const ids = Array.from({ length: Number(record[`jobs:${step.n}`] ?? 0) }, (_, item) => stepJobId(id, index, item));
    const stepJobs = ids.map((jobId) => ({ id: jobId, state: jobs.get(jobId)?.state ?? ('expired' as JobState) }));
    let state = stored as WorkflowStepState;
    if (stored === 'queued') state = (ACTIVE_ORDER.find((s) => stepJobs.some((j) => j.state === s)) ?? 'queued') as WorkflowStepState;
    if (stored !== 'pending' && stored !== 'queued') ended++;
    const started = ids.map((jobId) => jobs.get(jobId)?.timestamps.started_at).filter((t): t is number => t !== undefined);
    const output = outputs[step.n];
    return {
      name: step.n,
      state,
      needs: step.needs,
      optional: step.opt,
      service: step.a[16] ?? '',
      ...(step.e ? { for_each: step.e.r } : {}),
      jobs: stepJobs,
      ready_at: num(record[`ready_at:${step.n}`]),
      started_at: started.length ? Math.min(...started) : undefined,
      ended_at: num(record[`ended_at:${step.n}`]),
      error: record[`err:${step.n}`] || undefined,
      output: output === undefined ? undefined : JSON.parse(output),
    };
  });
  for (const step of steps) for (const [k, v] of Object.entries(step)) if (v === undefined) delete (step as Record<string, unknown>)[k];
  const view: Workflow = {
    id,
    pool: poolOfShard(pool),
    tenant: record.tenant!,
    state: record.state as Workflow['state'],
    priority: Number(record.priority),
    submitted_at: Number(record.submitted_at),
    finished_at: num(record.finished_at),
    error: record.error || undefined,
    failed_step: record.failed_step || undefined,
    cancel_reason: record.cancel_reason || undefined,
    progress: { ended, total: def.steps.length },
    steps,
  };
  for (const [k, v] of Object.entries(view)) if (v === undefined) delete (view as Record<string, unknown>)[k];
  return view;
}

export interface WorkflowListItem {
  id: string;
  pool: string;
  tenant: string;
  submitted_at: number;
}

/** The newest workflows (of a tenant), across pools: ids and submission times (read each with getWorkflow). */
export async function listWorkflows(ctx: BrokerContext, options: { tenant?: string; limit?: number } = {}): Promise<WorkflowListItem[]> {
  const limit = Math.min(Math.max(options.limit ?? 50, 1), 500);
  const shards = await ctx.shards();
  const lists = await Promise.all(
    shards.map(async (shard) => {
      const pool = poolOfShard(shard);
      const items: WorkflowListItem[] = [];
      if (options.tenant) {
        // the tenant's own index: its workflows however many other tenants submitted since
        const flat = await ctx.redis.zrevrange(ctx.keys.tenantWorkflows(shard, options.tenant), 0, limit - 1, 'WITHSCORES');
        for (let i = 0; i + 1 < flat.length; i += 2) items.push({ id: flat[i]!, pool, tenant: options.tenant, submitted_at: Number(flat[i + 1]) });
        return items;
      }
      const flat = await ctx.redis.zrevrange(ctx.keys.workflows(shard), 0, limit - 1, 'WITHSCORES');
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const [wid, tenant] = flat[i]!.split('|') as [string, string];
        items.push({ id: wid, pool, tenant, submitted_at: Number(flat[i + 1]) });
      }
      return items;
    }),
  );
  return lists
    .flat()
    .sort((a, b) => b.submitted_at - a.submitted_at)
    .slice(0, limit);
}

/** Reads the record of a workflow only to learn that it exists (and whose it is). */
export async function workflowTenant(ctx: BrokerContext, id: string): Promise<string> {
  const tenant = await ctx.redis.hget(ctx.keys.workflow(poolOfWorkflow(ctx, id), id), 'tenant');
  if (tenant === null) throw new NotFoundError(`workflow ${id} does not exist (or its retention has passed)`);
  return tenant;
}
