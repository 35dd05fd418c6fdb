import {
  type Broker,
  type Job,
  type JobProgressView,
  type JobState,
  NotFoundError,
  TERMINAL_STATES,
  isJobEvent,
  poolOfJobId,
} from '@emp/core';
import { CommandError } from './errors';
import { duration } from './format';

export interface JobUpdate {
  state: JobState;
  progress?: JobProgressView;
}

export interface FollowOptions {
  /** called on every state change and progress report */
  onUpdate?: (update: JobUpdate) => void;
  /** give up (CommandError) when the job has not finished by then */
  timeoutMs?: number;
  /** how often the job itself is re-read, in case its events were trimmed away (ms) */
  resyncMs?: number;
  /**
   * Stream cursor taken before the job was submitted: every event of the job
   * comes after it. Without it, the cursor is taken before the job is first
   * read, and events older than that read are skipped.
   */
  cursor?: string;
}

const isTerminal = (state: string): boolean => (TERMINAL_STATES as readonly string[]).includes(state);

/**
 * Follows a job through its pool's event stream until it reaches a terminal
 * state, and returns it as it ended. Nothing falls between two reads: either
 * the caller took the cursor before submitting, or the cursor is taken here
 * before the job is first read (and events that read already reflects are
 * skipped). The job is re-read now and then in case its events were trimmed.
 */
export async function followJob(broker: Broker, id: string, options: FollowOptions = {}): Promise<Job> {
  const pool = poolOfJobId(id);
  const resyncMs = options.resyncMs ?? 5_000;
  const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
  let last: JobUpdate | undefined;
  const report = (update: JobUpdate) => {
    last = update;
    options.onUpdate?.(update);
  };

  let cursor = options.cursor;
  let seenUntil = 0;
  if (cursor === undefined) {
    cursor = await broker.latestEventId(pool);
    const job = await read(broker, id);
    seenUntil = job.timestamps.updated_at; // same clock as event timestamps: Redis TIME
    report(updateOf(job));
    if (isTerminal(job.state)) return job;
  }

  const connection = broker.blockingConnection();
  try {
    let lastSync = Date.now();
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new CommandError(
          `job ${id} is still ${last?.state ?? 'queued'} after ${duration(options.timeoutMs ?? 0)}; it keeps going (see \`emp job ${id}\`)`,
        );
      }
      const events = await broker.readEvents(pool, cursor, {
        blockMs: Math.max(1, Math.min(resyncMs, left)),
        count: 1_000,
        connection,
      });
      for (const event of events) {
        cursor = event.id;
        if (!isJobEvent(event) || event.job !== id || event.ts < seenUntil) continue;
        report({ state: event.state as JobState, progress: event.type === 'job.progress' ? event.progress : undefined });
        if (isTerminal(event.state)) return await read(broker, id);
      }
      if (Date.now() - lastSync >= resyncMs) {
        lastSync = Date.now();
        const job = await read(broker, id);
        if (job.state !== last?.state) report(updateOf(job));
        if (isTerminal(job.state)) return job;
      }
    }
  } finally {
    connection.close();
  }
}

function updateOf(job: Job): JobUpdate {
  return { state: job.state, progress: job.progress ?? undefined };
}

async function read(broker: Broker, id: string): Promise<Job> {
  const job = await broker.getJob(id);
  if (!job) throw new NotFoundError(`job ${id} does not exist (or its retention has passed)`);
  return job;
}
