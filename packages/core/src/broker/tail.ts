import type { BlockingConnection } from './connection';
import type { BrokerContext } from './context';
import type { StreamEvent } from '../events';
import { readEvents } from './streams';

/**
 * One pool's event stream followed from a cursor on a blocking connection of
 * its own (XREAD BLOCK would hold up every other command on a shared one).
 * Opened by `Broker.openEventTail`; read it in a loop, close it to stop (a
 * read in progress is rejected, or answers nothing once closed).
 */
export class EventTail {
  #cursor: string;
  readonly #blockMs: number;
  readonly #count: number;

  constructor(
    private readonly ctx: BrokerContext,
    private readonly connection: BlockingConnection,
    readonly pool: string,
    cursor: string,
    options: { blockMs?: number; count?: number },
  ) {
    this.#cursor = cursor;
    this.#blockMs = options.blockMs ?? 5_000;
    this.#count = options.count ?? 1_000;
  }

  /** The last event read (or the cursor it was opened at). */
  get cursor(): string {
    return this.#cursor;
  }

  get closed(): boolean {
    return this.connection.closed;
  }

  /** The next events after the cursor, waiting up to blockMs for some; moves the cursor past them. */
  async read(): Promise<StreamEvent[]> {
    if (this.closed) return [];
    const events = await readEvents(this.ctx, this.pool, this.#cursor, { blockMs: this.#blockMs, count: this.#count, connection: this.connection });
    if (events.length > 0) this.#cursor = events[events.length - 1]!.id;
    return events;
  }

  close(): void {
    this.connection.close();
  }
}
