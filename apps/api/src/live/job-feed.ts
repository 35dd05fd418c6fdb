import { type Broker, type EventView, type Job, type StreamEvent, eventView, isTerminalEvent } from '@emp/core';

/** A job event as its subscribers get it: a terminal one carries the result or the classified error. */
export async function enrichedJobEvent(broker: Broker, event: StreamEvent): Promise<EventView> {
  const view = eventView(event);
  if (!isTerminalEvent(event)) return view;
  const job = await broker.getJob(event.job);
  if (job?.result !== undefined) view.result = job.result;
  if (job?.error !== undefined && event.type !== 'job.succeeded') view.error = job.error;
  return view;
}

/** The cursor for "every event of this job": just before its submission (stream ids start with a ms timestamp). */
export function jobStartCursor(job: Job): string {
  return `${Math.max(0, job.timestamps.submitted_at - 1)}-0`;
}
