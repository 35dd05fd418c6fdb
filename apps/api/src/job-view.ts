import { type Job, type JobView, TERMINAL_STATES, jobView } from '@emp/core';
import type { QueueEta } from './queue-eta';

/** The job view with, while the job is queued, the estimate of when a worker takes it. */
export async function jobAnswer(eta: QueueEta, job: Job, options: { payload?: boolean } = { payload: true }): Promise<JobView> {
  const view = jobView(job, options);
  const ms = await eta.etaMs(job);
  if (ms !== undefined) view.eta_ms = ms;
  return view;
}

export function isTerminal(state: string | undefined): boolean {
  return TERMINAL_STATES.includes(state as Job['state']);
}

/** The JSON value of a text, or the text itself when it is not JSON. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}
