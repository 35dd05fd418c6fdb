import { type Broker, type BrokerEvent, type Job, poolOfJobId } from '@emp/core';
import { type EventFeed, isAfter } from './event-feed';

export type JobFeedItem = { kind: 'snapshot'; job: Job } | { kind: 'event'; event: BrokerEvent };

/**
 * Follows a pool's events that `accept` lets through: with a cursor, every
 * such event after it that the stream still holds, then the live ones, each
 * once and in order; without one, only what comes from now on, after
 * `beforeLive` has run (a snapshot, say; returning false gives up).
 * Returns the unsubscribe, or null when `beforeLive` gave up.
 */
export async function followPool(options: {
  feed: EventFeed;
  pool: string;
  after?: string | undefined;
  accept: (event: BrokerEvent) => boolean;
  send: (event: BrokerEvent) => void;
  beforeLive?: () => Promise<boolean>;
}): Promise<(() => void) | null> {
  const { feed, pool, accept, send } = options;
  let last: string | undefined = options.after;
  let ready = false;
  const early: BrokerEvent[] = [];
  const deliver = (event: BrokerEvent): void => {
    if (!accept(event) || (last !== undefined && !isAfter(event.id, last))) return;
    last = event.id;
    send(event);
  };
  // live first, held back until the past is sent, so nothing falls between the two
  const unsubscribe = feed.subscribe(pool, (event) => (ready ? deliver(event) : early.push(event)));
  try {
    if (options.after !== undefined) {
      await feed.replay(pool, options.after, deliver);
    } else {
      last = await feed.latestId(pool);
      if (options.beforeLive && !(await options.beforeLive())) {
        unsubscribe();
        return null;
      }
    }
  } catch (error) {
    unsubscribe();
    throw error;
  }
  ready = true;
  for (const event of early.splice(0)) deliver(event);
  return unsubscribe;
}

/**
 * Follows one job: with `after`, every event since (a resume); without, a
 * snapshot of the job as it is now and then its events. Null when the job does
 * not exist.
 */
export function followJob(options: {
  feed: EventFeed;
  broker: Broker;
  jobId: string;
  after?: string | undefined;
  send: (item: JobFeedItem) => void;
}): Promise<(() => void) | null> {
  const { broker, jobId, send } = options;
  return followPool({
    feed: options.feed,
    pool: poolOfJobId(jobId),
    after: options.after,
    accept: (event) => event.fields.job === jobId,
    send: (event) => send({ kind: 'event', event }),
    beforeLive: async () => {
      const job = await broker.getJob(jobId);
      if (job) send({ kind: 'snapshot', job });
      return job !== null;
    },
  });
}
