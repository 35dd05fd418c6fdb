import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ValidationError, type ValidationIssue } from './errors';
import { type StreamEvent, isJobEvent, isWorkflowEvent } from './events';
import { DEFAULT_TENANT, JobId, JobState, SubmitJobInput } from './job';
import { PoolName, TenantId } from './requirements';

/**
 * Workflows (docs/workflows.md): named steps, each a job definition, that run in
 * the order their `needs` give, a step's payload taking fields of earlier
 * steps' results through references resolved when the step becomes ready.
 * This file is the contract: the submission's schema, its validation (a DAG of
 * bounded size whose references name steps it waits for), the compiled form the
 * Lua side (functions/includes/65-workflows.lua) stores, and the view clients read.
 */

export const WORKFLOW_LIMITS = {
  /** steps in one workflow */
  steps: 50,
  /** items a for_each may fan out to (checked when the step becomes ready: the list comes from a result) */
  items: 100,
  /** references in one step's payload */
  references: 100,
} as const;

export const StepName = z
  .string()
  .regex(/^[a-z][a-z0-9_-]{0,39}$/, 'a step name is a lowercase letter, then up to 39 lowercase letters, digits, _ or -');

/** A step: a job definition (its tenant and priority are the workflow's) with what it needs and whether it may fail. */
export const WorkflowStepInput = SubmitJobInput.omit({ tenant: true, priority: true, idempotency_key: true, delay_ms: true, workflow_id: true, step: true })
  .extend({
    /** the steps that must end before this one starts (and whose results it may reference) */
    needs: z.array(StepName).max(WORKFLOW_LIMITS.steps).default([]),
    /** a failure of this step does not fail the workflow; references to its result give null */
    optional: z.boolean().default(false),
    /** {"$from": "<step>.<path>"} naming an array: one job per item (at most 100), each payload may use {"$item": "<path>"} */
    for_each: z.unknown().optional(),
  })
  .strict();
export type WorkflowStepInput = z.input<typeof WorkflowStepInput>;

export const SubmitWorkflowInput = z
  .object({
    tenant: TenantId.default(DEFAULT_TENANT),
    /** -1000..1000: every step is queued at this priority */
    priority: z.number().int().min(-1000).max(1000).default(0),
    /** the pool every step runs in (default: the pool the first step routes to) */
    pool: PoolName.optional(),
    /**
     * a repeat of the same workflow with the same key, within the idempotency TTL, answers the
     * first one (duplicate) instead of starting another; the same key with other content is refused
     * (IDEMPOTENCY_CONFLICT). Per tenant, kept in the workflow's pool (docs/workflows.md).
     */
    idempotency_key: z.string().min(1).max(255).optional(),
    /** the steps by name, in the order they are listed */
    steps: z
      .record(StepName, WorkflowStepInput)
      .refine((steps) => Object.keys(steps).length >= 1, 'a workflow has at least one step')
      .refine((steps) => Object.keys(steps).length <= WORKFLOW_LIMITS.steps, `a workflow has at most ${WORKFLOW_LIMITS.steps} steps`),
  })
  .strict();
export type SubmitWorkflowInput = z.input<typeof SubmitWorkflowInput>;
export type SubmitWorkflow = z.output<typeof SubmitWorkflowInput>;

export const WORKFLOW_STATES = ['running', 'succeeded', 'failed', 'canceled'] as const;
export const WorkflowState = z.enum(WORKFLOW_STATES);
export type WorkflowState = z.infer<typeof WorkflowState>;

/** A step's state: pending (waiting for its needs), then its job's state while it runs, then how it ended. */
export const WORKFLOW_STEP_STATES = ['pending', 'queued', 'starting', 'running', 'retrying', 'succeeded', 'failed', 'canceled'] as const;
export const WorkflowStepState = z.enum(WORKFLOW_STEP_STATES);
export type WorkflowStepState = z.infer<typeof WorkflowStepState>;

const Ms = z.number().int().nonnegative();

export const WorkflowStepView = z
  .object({
    name: StepName,
    state: WorkflowStepState,
    needs: z.array(StepName),
    optional: z.boolean(),
    service: z.string(),
    /** the for_each reference of a fan-out step */
    for_each: z.string().optional(),
    /** the step's jobs (a fan-out's: one per item), with their states */
    jobs: z.array(z.object({ id: JobId, state: JobState }).strict()),
    /** when its needs had all ended, when its first job started running, when it ended (ms) */
    ready_at: Ms.optional(),
    started_at: Ms.optional(),
    ended_at: Ms.optional(),
    error: z.string().optional(),
    /** its result (a fan-out's: the list of its items' results), once it succeeded */
    output: z.unknown().optional(),
  })
  .strict();
export type WorkflowStepView = z.infer<typeof WorkflowStepView>;

export const Workflow = z
  .object({
    id: JobId,
    pool: PoolName,
    tenant: TenantId,
    state: WorkflowState,
    priority: z.number().int(),
    submitted_at: Ms,
    finished_at: Ms.optional(),
    error: z.string().optional(),
    failed_step: StepName.optional(),
    cancel_reason: z.string().optional(),
    /** steps ended (succeeded, failed or canceled) of all steps */
    progress: z.object({ ended: z.number().int(), total: z.number().int() }).strict(),
    steps: z.array(WorkflowStepView),
  })
  .strict()
  .meta({ id: 'Workflow', description: 'A workflow: its state, and every step\'s state, jobs, timings and output' });
export type Workflow = z.infer<typeof Workflow>;

/** The answer to a submit: the workflow, and whether it is an idempotent repeat's (the first submit's workflow). */
export const SubmittedWorkflow = Workflow.extend({ duplicate: z.boolean() })
  .strict()
  .meta({ id: 'SubmittedWorkflow', description: 'The submitted workflow; duplicate: true when an idempotency key named one submitted before' });
export type SubmittedWorkflow = z.infer<typeof SubmittedWorkflow>;

// ---------------------------------------------------------------- references

/** A parsed reference: the step it names (none for $item) and the path into its result (keys and indexes). */
export interface Reference {
  /** the reference as written, for messages: {"$from": "generate.images[0]"} */
  text: string;
  step?: string;
  path: Array<string | number>;
}

const PATH_PART = /\.([A-Za-z_$][A-Za-z0-9_$-]*)|\[(\d{1,6})\]/y;

/** `step.field[0].x` (from: true) or `field[0].x` / `[0]` / '' ($item): the parts, or a message. */
export function parseReferencePath(path: string, from: boolean): { step?: string; path: Array<string | number> } | string {
  let at = 0;
  let step: string | undefined;
  const parts: Array<string | number> = [];
  if (from) {
    const head = /^[a-z][a-z0-9_-]{0,39}/.exec(path);
    if (!head) return `'${path}' does not start with a step name`;
    step = head[0];
    at = head[0].length;
  } else {
    const head = /^[A-Za-z_$][A-Za-z0-9_$-]*/.exec(path);
    if (head) {
      parts.push(head[0]);
      at = head[0].length;
    }
  }
  while (at < path.length) {
    PATH_PART.lastIndex = at;
    const match = PATH_PART.exec(path);
    if (!match) return `'${path}' is not a path: expected .field or [index] at '${path.slice(at)}'`;
    parts.push(match[1] !== undefined ? match[1] : Number(match[2]));
    at = PATH_PART.lastIndex;
  }
  return { step, path: parts };
}

const REFERENCE_KEYS = ['$from', '$item'] as const;

/** A reference object's parse, null when `value` is no reference, or a message when it is a malformed one. */
function asReference(value: unknown): Reference | null | string {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const keys = Object.keys(value);
  const key = REFERENCE_KEYS.find((k) => keys.includes(k));
  if (!key) return null;
  const text = JSON.stringify(value);
  if (keys.length !== 1) return `${text}: a reference is an object with ${key} alone`;
  const path = (value as Record<string, unknown>)[key];
  if (typeof path !== 'string') return `${text}: ${key} takes a path as a string`;
  const parsed = parseReferencePath(path, key === '$from');
  if (typeof parsed === 'string') return `${text}: ${parsed}`;
  return { text, ...parsed };
}

// ---------------------------------------------------------------- validation and compilation

/** One part of a compiled payload: JSON text as is, or a reference the Lua side fills in. */
export type TemplatePart = string | { r: string; s?: string; p: Array<string | number> };

export interface CompiledStep {
  name: string;
  index: number;
  step: z.output<typeof WorkflowStepInput>;
  needs: string[];
  dependents: string[];
  template: TemplatePart[];
  forEach?: { r: string; s: string; p: Array<string | number> };
}

/**
 * Checks a parsed workflow (a DAG: known needs, no cycle; references that name
 * a step the step waits for, directly or through its needs; $item only under
 * for_each) and compiles each step's payload into text and references. Throws
 * a ValidationError that names each problem's step and field.
 */
export function compileWorkflow(workflow: SubmitWorkflow): CompiledStep[] {
  const names = Object.keys(workflow.steps);
  const issues: ValidationIssue[] = [];
  const known = new Set(names);
  for (const name of names) {
    const step = workflow.steps[name]!;
    step.needs.forEach((need, i) => {
      if (need === name) issues.push({ path: `steps.${name}.needs.${i}`, message: 'a step cannot need itself' });
      else if (!known.has(need)) issues.push({ path: `steps.${name}.needs.${i}`, message: `'${need}' is not a step of this workflow (its steps: ${names.join(', ')})` });
    });
    if (new Set(step.needs).size !== step.needs.length) issues.push({ path: `steps.${name}.needs`, message: 'a step is named twice' });
  }
  if (issues.length) throw new ValidationError('workflow', issues);
  const cycle = findCycle(names, (name) => workflow.steps[name]!.needs);
  if (cycle) throw new ValidationError('workflow', [{ path: 'steps', message: `the steps' needs form a cycle: ${cycle.join(' -> ')}` }]);

  const ancestors = new Map<string, Set<string>>();
  const ancestorsOf = (name: string): Set<string> => {
    let found = ancestors.get(name);
    if (found) return found;
    found = new Set();
    for (const need of workflow.steps[name]!.needs) {
      found.add(need);
      for (const a of ancestorsOf(need)) found.add(a);
    }
    ancestors.set(name, found);
    return found;
  };

  const compiled = names.map((name, index): CompiledStep => {
    const step = workflow.steps[name]!;
    const before = ancestorsOf(name);
    const checkStep = (ref: Reference, path: string) => {
      if (ref.step === undefined) return;
      if (!known.has(ref.step)) issues.push({ path, message: `${ref.text} names '${ref.step}', which is not a step of this workflow (its steps: ${names.join(', ')})` });
      else if (!before.has(ref.step)) issues.push({ path, message: `${ref.text} names '${ref.step}', which this step does not need (add it to needs)` });
    };
    let forEach: CompiledStep['forEach'];
    if (step.for_each !== undefined) {
      const ref = asReference(step.for_each);
      if (typeof ref === 'string') issues.push({ path: `steps.${name}.for_each`, message: ref });
      else if (!ref || ref.step === undefined) issues.push({ path: `steps.${name}.for_each`, message: 'for_each takes a reference to a list in an earlier result: {"$from": "<step>.<path>"}' });
      else {
        checkStep(ref, `steps.${name}.for_each`);
        forEach = { r: ref.text, s: ref.step, p: ref.path };
      }
    }
    const template = compileTemplate(step.payload, `steps.${name}.payload`, (ref, path) => {
      if (ref.step === undefined && step.for_each === undefined) issues.push({ path, message: `${ref.text}: $item is only meaningful in a step with for_each` });
      checkStep(ref, path);
    }, issues);
    return { name, index, step, needs: step.needs, dependents: names.filter((other) => workflow.steps[other]!.needs.includes(name)), template, forEach };
  });
  if (issues.length) throw new ValidationError('workflow', issues);
  return compiled;
}

/** The step whose needs close a cycle, as the path around it; undefined when there is none. */
function findCycle(names: string[], needsOf: (name: string) => string[]): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (name: string): string[] | undefined => {
    if (state.get(name) === 'done') return undefined;
    if (state.get(name) === 'open') return [...stack.slice(stack.indexOf(name)), name];
    state.set(name, 'open');
    stack.push(name);
    for (const need of needsOf(name)) {
      const cycle = visit(need);
      if (cycle) return cycle;
    }
    stack.pop();
    state.set(name, 'done');
    return undefined;
  };
  for (const name of names) {
    const cycle = visit(name);
    if (cycle) return cycle.reverse();
  }
  return undefined;
}

/** The payload as JSON text cut around its references (each checked by `check`). */
function compileTemplate(payload: unknown, at: string, check: (ref: Reference, path: string) => void, issues: ValidationIssue[]): TemplatePart[] {
  const marker = `__emp_ref_${randomBytes(6).toString('hex')}_`;
  const refs: Reference[] = [];
  const walk = (value: unknown, path: string): unknown => {
    const ref = asReference(value);
    if (typeof ref === 'string') {
      issues.push({ path, message: ref });
      return null;
    }
    if (ref) {
      if (refs.length >= WORKFLOW_LIMITS.references) {
        issues.push({ path, message: `a step's payload holds at most ${WORKFLOW_LIMITS.references} references` });
        return null;
      }
      check(ref, path);
      refs.push(ref);
      return `${marker}${refs.length - 1}`;
    }
    if (Array.isArray(value)) return value.map((item, i) => walk(item, `${path}.${i}`));
    if (value !== null && typeof value === 'object') {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v, `${path}.${k}`)]));
    }
    return value;
  };
  const text = JSON.stringify(walk(payload, at)) ?? 'null';
  const parts: TemplatePart[] = [];
  const pattern = new RegExp(`"${marker}(\\d+)"`, 'g');
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    parts.push(text.slice(last, match.index));
    const ref = refs[Number(match[1])]!;
    parts.push(ref.step === undefined ? { r: ref.text, p: ref.path } : { r: ref.text, s: ref.step, p: ref.path });
    last = match.index + match[0].length;
  }
  parts.push(text.slice(last));
  return parts.filter((part) => part !== '');
}

/** The id of a step's job: the workflow's id, 's', the step's and the item's index in two base-36 digits each (as 65-workflows.lua). */
export function stepJobId(workflowId: string, stepIndex: number, item: number): string {
  const two = (n: number) => n.toString(36).padStart(2, '0');
  return `${workflowId}s${two(stepIndex)}${two(item)}`;
}

/** Whether an event is one of a workflow's feed: its own workflow.* events and its steps' job events. */
export function isEventOfWorkflow(workflowId: string, event: StreamEvent): boolean {
  if (isWorkflowEvent(event)) return event.workflow === workflowId;
  // a step's job id: the workflow's, then 's' and four base-36 digits (stepJobId)
  return isJobEvent(event) && event.job.length === workflowId.length + 5 && event.job.startsWith(`${workflowId}s`);
}
