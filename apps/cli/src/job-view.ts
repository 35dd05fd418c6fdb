import { type Job, TERMINAL_STATES } from '@emp/core';
import { duration, fields, json, progressText, shortId, timestamp } from './format';

/** One job for humans: what it is, where it stands, its timings, and its result or error. */
export function describeJob(job: Job, now: number): string {
  const t = job.timestamps;
  const lines = fields([
    ['id', job.id],
    ['state', isFinished(job) ? endedText(job) : job.state + (job.position !== undefined ? ` (position ${job.position})` : '')],
    ['service', job.service],
    ['tenant', job.tenant],
    ['pool', job.pool],
    ['routing', job.routing ? `${job.routing.source}: ${job.routing.reason}` : undefined],
    ['class', `${shortId(job.requirement_class)}${job.routable ? '' : '  (unroutable: no registered worker can run it)'}`],
    ['requirements', hasRequirements(job) ? JSON.stringify(withoutPool(job.requirements)) : undefined],
    ['priority', String(job.priority)],
    ['attempts', attemptsText(job)],
    ['manual retries', job.manual_retries ? String(job.manual_retries) : undefined],
    ['worker', job.worker ? `${job.worker}${job.machine ? ` on ${job.machine}` : ''}` : undefined],
    ['idempotency key', job.idempotency_key],
    ['workflow', job.workflow_id ? `${job.workflow_id}${job.step !== undefined ? ` step ${job.step}` : ''}` : undefined],
    ['submitted', timestamp(t.submitted_at, now)],
    ['started', t.started_at ? timestamp(t.started_at, now) : undefined],
    ['finished', t.finished_at ? timestamp(t.finished_at, now) : undefined],
    ['retry at', t.retry_at ? timestamp(t.retry_at, now) : undefined],
    ['run at', t.run_at ? timestamp(t.run_at, now) : undefined],
    ['waited', waited(job, now)],
    ['ran', ran(job, now)],
    ['progress', job.progress && !isFinished(job) ? progressText(job.progress) : undefined],
    ['canceled', job.cancel_reason],
    ['expired', job.expire_reason],
  ]);
  const tail: string[] = [];
  if (job.error) {
    // a job that recovered keeps the error of its last failed attempt
    const label = job.state === 'failed' ? 'error' : 'last error';
    tail.push(`${label}: ${job.error.kind}${job.error.type ? ` (${job.error.type})` : ''}: ${job.error.message}`);
  }
  if (job.result !== undefined) tail.push(`result:\n${indent(json(job.result))}`);
  tail.push(`payload:\n${indent(json(job.payload))}`);
  return [lines, ...tail].join('\n');
}

export function isFinished(job: Job): boolean {
  return TERMINAL_STATES.includes(job.state);
}

/** `succeeded in 4.2s`: how a finished job ended and how long it took from submission. */
export function endedText(job: Job): string {
  const t = job.timestamps;
  return `${job.state}${t.finished_at ? ` in ${duration(t.finished_at - t.submitted_at)}` : ''}`;
}

/** `succeeded in 3.2s (waited 12ms)` or `failed: retryable: boom` */
export function outcomeLine(job: Job): string {
  const t = job.timestamps;
  const wait = waited(job, t.finished_at ?? t.updated_at);
  const summary = `${job.id} ${endedText(job)}${wait ? ` (waited ${wait})` : ''}`;
  if (job.error && job.state !== 'succeeded') return `${summary}: ${job.error.kind}: ${job.error.message}`;
  if (job.cancel_reason) return `${summary}: ${job.cancel_reason}`;
  if (job.expire_reason) return `${summary}: ${job.expire_reason}`;
  return summary;
}

/** `2 (failures 0 of 3 allowed, infrastructure 1 of 10)`: only failures count against the budgets. */
function attemptsText(job: Job): string {
  const infra = job.infra_failures ? `, infrastructure ${job.infra_failures} of ${job.max_infra_attempts}` : '';
  return `${job.attempts} (failures ${job.failures} of ${job.max_attempts} allowed${infra})`;
}

function waited(job: Job, now: number): string | undefined {
  const t = job.timestamps;
  const until = t.started_at ?? (job.state === 'queued' ? now : undefined);
  return until === undefined ? undefined : duration(until - t.submitted_at);
}

function ran(job: Job, now: number): string | undefined {
  const t = job.timestamps;
  if (!t.started_at) return undefined;
  return duration((t.finished_at ?? (job.state === 'running' ? now : t.updated_at)) - t.started_at);
}

function withoutPool(requirements: Job['requirements']): Record<string, unknown> {
  const { pool: _pool, ...rest } = requirements;
  return rest;
}

function hasRequirements(job: Job): boolean {
  return Object.keys(withoutPool(job.requirements)).length > 0;
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n');
}
