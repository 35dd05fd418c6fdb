import type { Broker, BrokerEvent, EventView, Job } from '@emp/core';
import { eventView } from '../job-view';

const TERMINAL_EVENTS = new Set(['job.succeeded', 'job.failed', 'job.canceled', 'job.expired']);

/** A job event as its subscribers get it: a terminal one carries the result or the classified error. */
export async function enrichedJobEvent(broker: Broker, event: BrokerEvent): Promise<EventView> {
  const view = eventView(event);
  if (!TERMINAL_EVENTS.has(event.type) || !event.fields.job) return view;
  const job = await broker.getJob(event.fields.job);
  if (job?.result !== undefined) view.result = job.result;
  if (job?.error !== undefined && event.type !== 'job.succeeded') view.error = job.error;
  return view;
}

export function isTerminalEvent(event: { type: string }): boolean {
  return TERMINAL_EVENTS.has(event.type);
}

/** The cursor for "every event of this job": just before its submission (stream ids start with a ms timestamp). */
export function jobStartCursor(job: Job): string {
  return `${Math.max(0, job.timestamps.submitted_at - 1)}-0`;
}
