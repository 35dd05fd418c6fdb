import { type EventView, type LiveServerMessage, STREAM_EVENT_TYPES, type StreamEventType, type StreamEventView } from '@emp/core';

/**
 * The events the monitor reads, typed from core's one union (events.ts): what
 * `eventView()` gives, as the API sends it on the live feed
 * (`{type: 'event', event: <its type>, ...its fields}`, apps/api/src/live/socket.ts)
 * and in its event histories. A type the union does not name (a newer API) is
 * marked unknown at the edge, so the reducer and the views switch over known
 * types only, exhaustively: a type added to the union without a case here is a
 * compile error of `tsc -p apps/monitor/web`.
 */

/** E without its `type`, keeping an open object's index signature (Omit would drop the named fields). */
export type WithoutType<E> = { [K in keyof E as K extends 'type' ? never : K]: E[K] };

/** One event type's view: its fields as eventView gives them. */
export type EventViewOf<T extends StreamEventType> = Extract<StreamEventView, { type: T }>;

/** A known event of the live feed: eventView's fields, its type as `event` (one member per type, so Extract finds `worker.offline`). */
export type KnownLiveEvent = StreamEventView extends infer E ? (E extends { type: infer T } ? (T extends string ? WithoutType<E> & { type: 'event'; event: T } : never) : never) : never;

/** An event of a type this page does not know: it only moves its pool's cursor. */
export interface UnknownLiveEvent {
  type: 'event';
  event: 'unknown';
  id: string;
  pool: string;
  /** the pool's shard whose stream holds it, when not the pool's first (cursors are per shard ?? pool) */
  shard?: string;
  ts: number;
  /** the type the API sent */
  sent_as: string;
}

export type LiveEvent = KnownLiveEvent | UnknownLiveEvent;
export type LiveEventOf<T extends StreamEventType> = Extract<KnownLiveEvent, { event: T }>;

/** An event message as it comes off the socket, before it is typed. */
export type LiveEventMessage = Extract<LiveServerMessage, { type: 'event' }>;

const KNOWN_TYPES = new Set<string>(STREAM_EVENT_TYPES);

export function isKnownEventType(type: string): type is StreamEventType {
  return KNOWN_TYPES.has(type);
}

/** The typed event of a feed message: a known type as sent, any other marked unknown (never guessed at). */
export function toLiveEvent(message: LiveEventMessage): LiveEvent {
  if (isKnownEventType(message.event)) return message as unknown as KnownLiveEvent;
  return { type: 'event', event: 'unknown', id: message.id, pool: message.pool, ...(message.shard === undefined ? {} : { shard: message.shard }), ts: message.ts, sent_as: message.event };
}

/** An event of a history (GET /v1/jobs/:id/events, /v1/machines/:id/events) typed, or undefined when its type is not known here. */
export function toStreamEventView(view: EventView): StreamEventView | undefined {
  return isKnownEventType(view.type) ? (view as unknown as StreamEventView) : undefined;
}

/** A job's event as its history (GET /v1/jobs/:id/events) gives it. */
export type JobEventView = Extract<StreamEventView, { type: `job.${string}` }>;

/** The job events of a history, typed; any other (or unknown) entry left out. */
export function jobEventViews(views: readonly EventView[]): JobEventView[] {
  return views.flatMap((view) => {
    const event = toStreamEventView(view);
    return event && event.type.startsWith('job.') ? [event as JobEventView] : [];
  });
}
