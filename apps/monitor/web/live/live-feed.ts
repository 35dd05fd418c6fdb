import { CLOSE_SLOW_CONSUMER, type LiveServerMessage } from '@emp/core';
import { type LiveEvent, toLiveEvent } from '../state/live-event';
import type { MonitorSnapshot } from '../state/monitor-state';

export type FeedState = 'connecting' | 'live' | 'reconnecting' | 'refused' | 'stopped';

export interface FeedStatus {
  state: FeedState;
  since: number;
  /** failed connection attempts in a row */
  attempts: number;
  /** when the next attempt is due (reconnecting) */
  retryAt?: number;
  message?: string;
  /** events received over the last few seconds, per second */
  rate: number;
}

export interface LiveFeedOptions {
  /** the API's base URL (http or https) */
  apiUrl: string;
  apiKey?: string;
  /** the cursors to resume after (the events applied so far); empty: start with a snapshot */
  cursors: () => Record<string, string>;
  onSnapshot(snapshot: MonitorSnapshot): void;
  /** a frame's worth of events, in the order they came */
  onEvents(events: LiveEvent[]): void;
  onStatus(status: FeedStatus): void;
  /** backoff between reconnects (ms) */
  minRetryMs?: number;
  maxRetryMs?: number;
  /** after this long without a connection, start again from a snapshot rather than resume (the stream may have been trimmed) */
  resumeWithinMs?: number;
}

/** Applies what arrived at most once per animation frame, or every 100 ms while the tab is hidden (no frames then). */
function scheduleFlush(flush: () => void): () => void {
  if (typeof document !== 'undefined' && !document.hidden && typeof requestAnimationFrame === 'function') {
    const handle = requestAnimationFrame(flush);
    return () => cancelAnimationFrame(handle);
  }
  const handle = setTimeout(flush, 100);
  return () => clearTimeout(handle);
}

/**
 * The monitor's one WebSocket to /v1/live: a snapshot, then every event of
 * every pool, batched per frame. A dropped connection is reopened with backoff
 * and resumes after the last event applied, so nothing is missed or repeated.
 */
export class LiveFeed {
  private socket: WebSocket | undefined;
  private pending: LiveEvent[] = [];
  private cancelFlush: (() => void) | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private status: FeedStatus = { state: 'connecting', since: Date.now(), attempts: 0, rate: 0 };
  private disconnectedSince: number | undefined;
  private readonly arrivals: number[] = [];
  private readonly rateTimer: ReturnType<typeof setInterval>;

  constructor(private readonly options: LiveFeedOptions) {
    this.rateTimer = setInterval(() => this.updateRate(), 1_000);
  }

  start(): void {
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.rateTimer);
    clearTimeout(this.retryTimer);
    this.flush();
    this.socket?.close(1000, 'page closed');
    this.setStatus({ state: 'stopped' });
  }

  /** Closes the socket as a network failure would (for trying the reconnect by hand). */
  dropConnection(): void {
    this.socket?.close(4000, 'dropped by the page');
  }

  private connect(): void {
    const url = new URL('/v1/live', this.options.apiUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.options.apiKey) url.searchParams.set('api_key', this.options.apiKey);
    const socket = new WebSocket(url);
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      const cursors = this.options.cursors();
      const resume = Object.keys(cursors).length > 0 && (this.disconnectedSince === undefined || Date.now() - this.disconnectedSince < (this.options.resumeWithinMs ?? 300_000));
      socket.send(JSON.stringify(resume ? { type: 'monitor', after: cursors } : { type: 'monitor' }));
      this.disconnectedSince = undefined;
      this.setStatus({ state: 'live', attempts: 0, message: resume ? 'resumed after the last event seen' : 'snapshot' });
    };
    socket.onmessage = (message) => this.onMessage(message.data);
    socket.onclose = (close) => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.flush();
      if (this.stopped || this.status.state === 'refused') return;
      this.disconnectedSince ??= Date.now();
      const attempts = opened ? 1 : this.status.attempts + 1;
      const base = this.options.minRetryMs ?? 500;
      const delay = Math.min(this.options.maxRetryMs ?? 10_000, base * 2 ** (attempts - 1)) * (0.75 + Math.random() * 0.5);
      const why = close.code === CLOSE_SLOW_CONSUMER ? 'the server dropped this page for falling behind' : opened ? `connection closed (${close.code})` : 'cannot reach the API';
      this.setStatus({ state: 'reconnecting', attempts, retryAt: Date.now() + delay, message: why });
      this.retryTimer = setTimeout(() => this.connect(), delay);
    };
  }

  private onMessage(data: unknown): void {
    let message: LiveServerMessage;
    try {
      message = JSON.parse(String(data)) as LiveServerMessage;
    } catch {
      return;
    }
    if (message.type === 'event') {
      this.pending.push(toLiveEvent(message));
      this.arrivals.push(Date.now());
      this.cancelFlush ??= scheduleFlush(() => this.flush());
    } else if (message.type === 'monitor.snapshot') {
      this.flush();
      this.options.onSnapshot(message);
    } else if (message.type === 'error') {
      if (message.code === 'FORBIDDEN' || message.code === 'UNAUTHENTICATED') {
        this.setStatus({ state: 'refused', message: message.message });
        this.socket?.close(1000, 'refused');
      } else {
        this.setStatus({ message: `${message.code}: ${message.message}` });
      }
    }
  }

  private flush(): void {
    this.cancelFlush?.();
    this.cancelFlush = undefined;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.options.onEvents(batch);
  }

  private updateRate(): void {
    const from = Date.now() - 5_000;
    while (this.arrivals.length > 0 && this.arrivals[0]! < from) this.arrivals.shift();
    const rate = Math.round(this.arrivals.length / 5);
    if (rate !== this.status.rate) this.setStatus({ rate });
  }

  private setStatus(change: Partial<FeedStatus>): void {
    const stateChanged = change.state !== undefined && change.state !== this.status.state;
    this.status = { ...this.status, ...change, ...(stateChanged ? { since: Date.now() } : {}) };
    if (change.state && change.state !== 'reconnecting') delete this.status.retryAt;
    this.options.onStatus(this.status);
  }
}
