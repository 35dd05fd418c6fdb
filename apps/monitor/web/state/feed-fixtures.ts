import type { StreamEventType } from '@emp/core';
import { type KnownLiveEvent, type LiveEventMessage, toLiveEvent } from './live-event';
import type { MonitorSnapshot } from './monitor-state';

/** Feed messages as the API sends them, for the reducer's tests. */

let sequence = 0;

/** An event of `pool` with a stream id after every earlier one of this module, typed as the page types what the socket brings. */
export function feedEvent<T extends StreamEventType>(event: T, fields: Record<string, unknown>, options: { pool?: string; ts?: number } = {}): Extract<KnownLiveEvent, { event: T }> {
  return toLiveEvent(feedMessage(event, fields, options)) as Extract<KnownLiveEvent, { event: T }>;
}

/** The message as it comes off the socket, any type. */
export function feedMessage(event: string, fields: Record<string, unknown>, options: { pool?: string; ts?: number } = {}): LiveEventMessage {
  sequence += 1;
  const ts = options.ts ?? 1_700_000_000_000 + sequence;
  return { type: 'event', event, id: `${ts}-${sequence}`, pool: options.pool ?? 'standard', ts, ...fields };
}

export function machineHash(id: string, fields: Record<string, string> = {}, pool = 'standard'): Record<string, string> {
  return { pool, id, state: 'ready', last_seen: '1700000000000', registered_at: '1699990000000', state_since: '1699990000000', ...fields };
}

export function workerHash(id: string, machine: string, fields: Record<string, string> = {}, pool = 'standard'): Record<string, string> {
  return { pool, id, machine, state: 'idle', last_seen: '1700000000000', registered_at: '1699990000000', state_since: '1699990000000', capabilities: '{"services":["simulation"]}', ...fields };
}

export function snapshot(parts: { machines?: Array<Record<string, string>>; workers?: Array<Record<string, string>>; cursors?: Record<string, string>; now?: number } = {}): MonitorSnapshot {
  const now = parts.now ?? 1_700_000_000_000;
  return {
    type: 'monitor.snapshot',
    cursors: parts.cursors ?? { standard: '1699999999999-0' },
    machines: parts.machines ?? [],
    workers: parts.workers ?? [],
    queues: {
      now,
      pools: [
        {
          pool: 'standard',
          depth: 3,
          oldest_age_ms: 1_500,
          services: [{ service: 'simulation', depth: 3, oldest_age_ms: 1_500, paused: false }],
          classes: [{ requirement_class: 'abc', definition: { service: 'simulation' }, routable: true, depth: 3, oldest_age_ms: 1_500 }],
          paused: [],
          on_timers: 0,
          workers: { online: 2, idle: 2, offline: 0 },
        },
      ],
    },
  };
}
