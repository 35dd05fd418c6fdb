import { setTimeout as sleep } from 'node:timers/promises';
import { type Broker, EventTypeFilter, type StreamEvent, eventTypeMatches, eventView, parseWith, poolOfShard } from '@emp/core';
import type { Command } from 'commander';
import { withBroker } from '../connection';
import { tailPool } from '../event-tail';
import { redisFlag } from '../flags';
import { eventLine } from '../format';

/** How often the pool list is re-read, so that a pool created while watching is tailed too. */
const POOL_REFRESH_MS = 5_000;

export function registerWatch(program: Command): void {
  program
    .command('watch')
    .description('print events as they happen (jobs, workers, machines) until Ctrl-C')
    .option('--pool <name>', 'only this pool')
    .option('--events <types>', 'only these event types and families, comma-separated (job.succeeded,worker.*)')
    .option('--json', 'one JSON object per event (NDJSON), as the API sends it')
    .action(async (options: { pool?: string; events?: string; json?: boolean }, command: Command) => {
      const types = eventsFlag(options.events);
      await withBroker(redisFlag(command), async (broker) => {
        const print = (event: StreamEvent) => {
          if (!eventTypeMatches(types, event.type === 'unknown' ? (event.raw.type ?? '') : event.type)) return;
          process.stdout.write(`${options.json ? JSON.stringify(eventView(event)) : eventLine(event)}\n`);
        };
        await watchEvents(broker, options.pool, print);
      });
    });
}

/** --events checked against the event union before anything connects. */
function eventsFlag(value: string | undefined): EventTypeFilter | undefined {
  if (value === undefined) return undefined;
  return parseWith(EventTypeFilter, value, '--events');
}

async function watchEvents(broker: Broker, onlyPool: string | undefined, print: (event: StreamEvent) => void): Promise<void> {
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const tails = new Map<string, Promise<void>>();
  let failure: unknown;
  const follow = (pool: string, cursor: string) => {
    tails.set(
      pool,
      tailPool(broker, pool, cursor, print, stop.signal).catch((error: unknown) => {
        failure ??= error;
        stop.abort();
      }),
    );
  };

  try {
    // every shard's stream (a pool's name is its shard 0; pool-shards.ts), of one pool or of all
    const shardsToWatch = async () => (await broker.shards()).filter((shard) => !onlyPool || poolOfShard(shard) === onlyPool);
    const initial = onlyPool ? [...new Set([onlyPool, ...(await shardsToWatch())])] : await shardsToWatch();
    for (const shard of initial) follow(shard, await broker.latestEventId(shard));
    process.stderr.write(
      onlyPool
        ? `watching pool ${onlyPool} (Ctrl-C to stop)\n`
        : `watching ${initial.length ? `pool${initial.length > 1 ? 's' : ''} ${[...new Set(initial.map(poolOfShard))].join(', ')}` : 'for the first pool to appear'} (Ctrl-C to stop)\n`,
    );
    while (!stop.signal.aborted) {
      await sleep(POOL_REFRESH_MS, undefined, { signal: stop.signal }).catch(() => undefined);
      if (stop.signal.aborted) break;
      // a pool (or a pool's shard) that appeared since: every event in it is new to us
      for (const shard of await shardsToWatch()) if (!tails.has(shard)) follow(shard, '0-0');
    }
  } finally {
    stop.abort();
    await Promise.all(tails.values());
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (failure) throw failure;
}
