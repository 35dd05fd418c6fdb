import { type QueueHistoryRange, QueueSample, compareStreamIds } from '../api-protocol';
import { type StreamEvent, type StreamEventType, parseStreamEntry } from '../events';
import type { BrokerContext } from './context';
import { type ReadConnection, redisFor } from './connection';
import { foldHash } from './replies';

type XReadReply = Array<[string, Array<[string, string[]]>]> | null;

export async function readEvents(
  ctx: BrokerContext,
  pool: string,
  cursor: string,
  options: { count?: number; blockMs?: number; connection?: ReadConnection },
): Promise<StreamEvent[]> {
  return (await readEntries(ctx, pool, cursor, options)).map(([id, flat]) => parseStreamEntry(pool, id, flat));
}

/** The stream's entries after `cursor` as XREAD gives them, for readers that parse only those they keep. */
export async function readEntries(
  ctx: BrokerContext,
  pool: string,
  cursor: string,
  options: { count?: number; blockMs?: number; connection?: ReadConnection },
): Promise<Array<[id: string, flat: string[]]>> {
  const args: Array<string | number> = ['COUNT', options.count ?? 100];
  if (options.blockMs !== undefined) args.push('BLOCK', options.blockMs);
  const reply = (await redisFor(options.connection, ctx.redis).call('XREAD', ...args, 'STREAMS', ctx.keys.events(pool), cursor)) as XReadReply;
  return reply?.[0]?.[1] ?? [];
}

/** The id of the pool's newest event ('0-0' when none): a cursor for "only what comes next". */
export async function latestEventId(ctx: BrokerContext, pool: string): Promise<string> {
  const newest = await ctx.redis.xrevrange(ctx.keys.events(pool), '+', '-', 'COUNT', 1);
  return newest[0]?.[0] ?? '0-0';
}

/** What XINFO STREAM says about a pool's event stream (null: there is none yet). */
export interface EventStreamInfo {
  /** entries kept */
  length: number;
  /** entries ever added: more than `length` once trimming took some */
  entriesAdded: number;
  /** the oldest kept entry; absent when none is left */
  firstId?: string;
  lastGeneratedId: string;
}

export async function eventStreamInfo(ctx: BrokerContext, pool: string): Promise<EventStreamInfo | null> {
  let info: unknown[];
  try {
    info = (await ctx.redis.call('XINFO', 'STREAM', ctx.keys.events(pool))) as unknown[];
  } catch (error) {
    if (/no such key/i.test((error as Error).message)) return null;
    throw error;
  }
  const first = (infoField(info, 'first-entry') as [string, string[]] | null)?.[0];
  return {
    length: Number(infoField(info, 'length')),
    entriesAdded: Number(infoField(info, 'entries-added')),
    firstId: first,
    lastGeneratedId: String(infoField(info, 'last-generated-id')),
  };
}

export async function ensureEventGroup(ctx: BrokerContext, pool: string, group: string, startAt: '$' | '0'): Promise<boolean> {
  try {
    await ctx.redis.call('XGROUP', 'CREATE', ctx.keys.events(pool), group, startAt, 'MKSTREAM');
    return true;
  } catch (error) {
    if (String((error as Error).message).startsWith('BUSYGROUP')) return false;
    throw error;
  }
}

export async function readEventGroup(
  ctx: BrokerContext,
  pool: string,
  group: string,
  consumer: string,
  options: { count?: number; blockMs?: number; connection?: ReadConnection },
): Promise<StreamEvent[]> {
  const args: Array<string | number> = ['GROUP', group, consumer, 'COUNT', options.count ?? 100];
  if (options.blockMs !== undefined) args.push('BLOCK', options.blockMs);
  let reply: Array<[string, Array<[string, string[] | null]>]> | null;
  try {
    reply = (await redisFor(options.connection, ctx.redis).call('XREADGROUP', ...args, 'STREAMS', ctx.keys.events(pool), '>')) as typeof reply;
  } catch (error) {
    if (!String((error as Error).message).startsWith('NOGROUP')) throw error;
    await ensureEventGroup(ctx, pool, group, '0');
    return [];
  }
  return (reply?.[0]?.[1] ?? []).map(([id, flat]) => parseStreamEntry(pool, id, flat ?? []));
}

/**
 * Entries of a pool's stream that a consumer group never read because the
 * stream was trimmed (XADD MAXLEN ~) past its position first: `count` of them,
 * between the group's last-delivered id `after` and the oldest kept entry `before`.
 */
export interface EventGroupLoss {
  count: number;
  after: string;
  before: string;
}

/** A field of an XINFO reply (flat name/value list). */
function infoField(info: unknown[], name: string): unknown {
  const at = info.indexOf(name);
  return at < 0 ? undefined : info[at + 1];
}

/**
 * `readEventGroup` without waiting, that also tells what the group lost: the
 * group's counters (XINFO GROUPS entries-read / lag, XINFO STREAM entries-added,
 * first entry) and the read are one MULTI, so the snapshot is the state the read
 * started from. When the group's last-delivered id is older than the oldest kept
 * entry, lag - length entries were trimmed unread; the group's entries-read is
 * then set right (XGROUP SETID ... ENTRIESREAD), so each loss is told once and
 * the next one is counted from a true counter. A read that takes every entry
 * left also finds a gap skipped earlier by a plain `readEventGroup` (its
 * bounds then unknown: ''). A group whose counter Redis does not know yet
 * (never read since it was made) cannot tell: `loss` is absent.
 */
export async function readEventGroupWatched(
  ctx: BrokerContext,
  pool: string,
  group: string,
  consumer: string,
  options: { count?: number; connection?: ReadConnection },
): Promise<{ events: StreamEvent[]; loss?: EventGroupLoss }> {
  const key = ctx.keys.events(pool);
  const redis = redisFor(options.connection, ctx.redis);
  const replies = await redis
    .multi()
    .call('XINFO', 'STREAM', key)
    .call('XINFO', 'GROUPS', key)
    .call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', options.count ?? 100, 'STREAMS', key, '>')
    .exec();
  const [streamReply, groupsReply, readReply] = replies ?? [];
  const readError = readReply?.[0] ?? (replies ? null : new Error('the MULTI of a watched read was discarded'));
  if (readError) {
    if (!String(readError.message).startsWith('NOGROUP')) throw readError;
    await ensureEventGroup(ctx, pool, group, '0');
    return { events: [] };
  }
  type Entries = Array<[string, Array<[string, string[] | null]>]> | null;
  const entries = (readReply![1] as Entries)?.[0]?.[1] ?? [];
  const events = entries.map(([id, flat]) => parseStreamEntry(pool, id, flat ?? []));
  if (streamReply?.[0] || groupsReply?.[0]) return { events };
  const info = streamReply![1] as unknown[];
  const mine = (groupsReply![1] as unknown[][]).find((g) => infoField(g, 'name') === group);
  const first = (infoField(info, 'first-entry') as [string, string[]] | null)?.[0];
  if (!mine || first === undefined) return { events };
  const lastDelivered = String(infoField(mine, 'last-delivered-id'));
  const entriesRead = infoField(mine, 'entries-read');
  const lag = infoField(mine, 'lag');
  if (entriesRead === null || entriesRead === undefined || lag === null || lag === undefined) return { events };
  // lag = entries added after the group's counter: those kept after its position, and those trimmed unread
  let count: number;
  let gap = { after: '', before: '' };
  if (compareStreamIds(lastDelivered, first) < 0) {
    // a gap right behind the group's position: every kept entry is after it
    count = Number(lag) - Number(infoField(info, 'length'));
    gap = { after: lastDelivered, before: first };
  } else if (entries.length < (options.count ?? 100)) {
    // this read took every entry after the position: anything more the counter misses was skipped
    // earlier (a gap trimmed between a look and a read); where exactly is no longer known
    count = Number(lag) - entries.length;
  } else {
    return { events };
  }
  if (!(count > 0)) return { events };
  // the counter as if the group had read what was trimmed, then this read's entries
  const position = entries.length ? entries[entries.length - 1]![0] : lastDelivered;
  await ctx.redis.call('XGROUP', 'SETID', key, group, position, 'ENTRIESREAD', Number(entriesRead) + count + entries.length);
  return { events, loss: { count, ...gap } };
}

export async function claimStaleEvents(
  ctx: BrokerContext,
  pool: string,
  group: string,
  consumer: string,
  minIdleMs: number,
  options: { cursor?: string; count?: number },
): Promise<{ events: StreamEvent[]; cursor: string; trimmed: string[] }> {
  let reply: [string, Array<[string, string[] | null] | null>, string[]?];
  try {
    reply = (await ctx.redis.call(
      'XAUTOCLAIM', ctx.keys.events(pool), group, consumer, minIdleMs, options.cursor ?? '0-0', 'COUNT', options.count ?? 100,
    )) as typeof reply;
  } catch (error) {
    if (String((error as Error).message).startsWith('NOGROUP')) return { events: [], cursor: '0-0', trimmed: [] };
    throw error;
  }
  const events = reply[1].flatMap((entry) => (entry && entry[1] ? [parseStreamEntry(pool, entry[0], entry[1])] : []));
  // Redis 7 names the pending entries trimmed from the stream (dropped from the group now); 6.2 answers them as nil entries
  const trimmed = reply[2] ?? reply[1].flatMap((entry) => (entry && !entry[1] ? [entry[0]] : []));
  return { events, cursor: reply[0], trimmed };
}

export async function ackEvents(ctx: BrokerContext, pool: string, group: string, ids: string[]): Promise<number> {
  if (ids.length === 0) return 0;
  return (await ctx.redis.call('XACK', ctx.keys.events(pool), group, ...ids)) as number;
}

export async function machineEvents(
  ctx: BrokerContext,
  pool: string,
  machineId: string,
  options: { types: readonly StreamEventType[]; limit?: number; maxScanned?: number },
): Promise<{ events: StreamEvent[]; scanned: number; complete: boolean }> {
  const key = ctx.keys.events(pool);
  const limit = options.limit ?? 100;
  const maxScanned = options.maxScanned ?? 10_000;
  const types = new Set<string>(options.types);
  const events: StreamEvent[] = [];
  let scanned = 0;
  let end = '+';
  while (scanned < maxScanned) {
    const count = Math.min(1_000, maxScanned - scanned);
    const chunk = await ctx.redis.xrevrange(key, end, '-', 'COUNT', count);
    scanned += chunk.length;
    for (const [id, flat] of chunk) {
      // only the entries that match are parsed: the scan looks at up to maxScanned
      const raw = foldHash(flat);
      if (!types.has(raw.type!) || raw.machine !== machineId) continue;
      events.push(parseStreamEntry(pool, id, raw));
      if (events.length >= limit) return { events: events.reverse(), scanned, complete: true };
    }
    if (chunk.length < count) return { events: events.reverse(), scanned, complete: true };
    end = `(${chunk[chunk.length - 1]![0]}`;
  }
  return { events: events.reverse(), scanned, complete: false };
}

// ---------------------------------------------------------------- queue history

/** A queue sample to record, with the pool whose stream it goes to (the hour's, unless `range` says the day's). */
export interface QueueHistoryWrite {
  pool: string;
  sample: QueueSample;
  range?: QueueHistoryRange;
}

function queueHistoryKey(ctx: BrokerContext, pool: string, range: QueueHistoryRange = 'hour'): string {
  return range === 'day' ? ctx.keys.queueHistoryDay(pool) : ctx.keys.queueHistory(pool);
}

/**
 * Records one sampling slot's samples (entry id `<slot>-0` in each pool's
 * queue-history stream) and trims what is older than `keepMs` before the slot.
 * Returns whether this call wrote them: false when another instance had
 * already written this slot (Redis refuses an id that is not newer).
 */
export async function recordQueueSamples(ctx: BrokerContext, slot: number, samples: QueueHistoryWrite[], keepMs: number): Promise<boolean> {
  const pipeline = ctx.redis.pipeline();
  for (const { pool, sample, range } of samples) {
    pipeline.xadd(queueHistoryKey(ctx, pool, range), 'MINID', '=', String(slot - keepMs), `${slot}-0`, 'sample', JSON.stringify(sample));
  }
  let wrote = samples.length > 0;
  for (const [error] of (await pipeline.exec()) ?? []) {
    if (!error) continue;
    if (!/equal or smaller/i.test(error.message)) throw error;
    wrote = false;
  }
  return wrote;
}

/** A recorded entry that is not a QueueSample (written by another version): skipped, and said so. */
export interface UnreadableQueueSample {
  pool: string;
  entry: string;
  issue: unknown;
}

/** The samples of the pools recorded at or after `fromSlot` (ms) in the hour's (or the day's) stream, oldest first per pool. */
export async function readQueueHistory(ctx: BrokerContext, pools: string[], fromSlot: number, range: QueueHistoryRange = 'hour'): Promise<{ samples: QueueSample[]; unreadable: UnreadableQueueSample[] }> {
  const pipeline = ctx.redis.pipeline();
  for (const pool of pools) pipeline.xrange(queueHistoryKey(ctx, pool, range), String(Math.max(0, fromSlot)), '+');
  const replies = (await pipeline.exec()) ?? [];
  const samples: QueueSample[] = [];
  const unreadable: UnreadableQueueSample[] = [];
  replies.forEach(([error, entries], index) => {
    if (error) throw error;
    for (const [id, flat] of entries as Array<[string, string[]]>) {
      const parsed = QueueSample.safeParse(jsonOrText(flat[flat.indexOf('sample') + 1] ?? ''));
      if (parsed.success) samples.push(parsed.data);
      else unreadable.push({ pool: pools[index]!, entry: id, issue: parsed.error.issues[0] });
    }
  });
  return { samples, unreadable };
}

function jsonOrText(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}
