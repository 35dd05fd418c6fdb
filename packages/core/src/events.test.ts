import { usePrivateRedis } from '@emp/testkit/private-redis';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { EventTypeFilter, STREAM_EVENT_TYPES, StreamEventBody, eventTypeMatches, eventView, isJobEvent, parseStreamEntry, streamEntryProblems } from './events';
import { WebhookOutbox } from './webhook-outbox';

const { redis } = usePrivateRedis();

describe('the event stream, typed', () => {
  it('parses every event of a job that is submitted, claimed, started, reports progress and succeeds', async () => {
    const broker = await Broker.connect({ redis });
    await broker.registerWorker({ id: 'w1', pool: 'standard', capabilities: { services: ['simulation'] } });
    const { id } = await broker.submit({ service: 'simulation', tenant: 'acme' });
    const claimed = await broker.claim('standard', 'w1');
    await broker.start(claimed.job!.lease);
    await broker.progress(claimed.job!.lease, { stage: 'running', value: 3, max: 10 });
    await broker.complete(claimed.job!.lease, { ok: true });

    const raw = await redis.xrange(broker.keys.events('standard'), '-', '+');
    const events = raw.map(([entry, flat]) => parseStreamEntry('standard', entry, flat));
    expect(events.filter((e) => e.type === 'unknown')).toEqual([]);
    const ofJob = events.filter(isJobEvent).filter((e) => e.job === id);
    expect(ofJob.map((e) => e.type)).toEqual(['job.queued', 'job.starting', 'job.running', 'job.progress', 'job.succeeded']);
    const progress = ofJob[3]!;
    expect(progress.type === 'job.progress' && progress.progress).toEqual({ stage: 'running', value: 3, max: 10 });
    expect(ofJob.every((e) => e.tenant === 'acme' && e.ts > 0)).toBe(true);
    const starting = ofJob[1]!;
    expect(starting.type === 'job.starting' && starting.attempt).toBe(1);
    expect(events.some((e) => e.type === 'worker.registered')).toBe(true);
  });

  it('keeps an entry it does not know as unknown, with the reason', () => {
    const event = parseStreamEntry('standard', '1-0', ['type', 'job.progress', 'job', 'x', 'state', 'running', 'tenant', 't', 'service', 's', 'progress', 'nope']);
    expect(event.type).toBe('unknown');
    expect(event.type === 'unknown' && event.problem).toMatch(/progress/);
    expect(parseStreamEntry('standard', '1-0', { type: 'machine.ready', machine: 'm1', state: 'ready', ts: '5' })).toMatchObject({ type: 'machine.ready', ts: 5 });
  });

  it('is read through a consumer group: pending until acknowledged, taken over by another consumer once idle', async () => {
    const broker = await Broker.connect({ redis });
    expect(await broker.ensureEventGroup('standard', 'g')).toBe(true);
    expect(await broker.ensureEventGroup('standard', 'g')).toBe(false);
    await broker.submit({ service: 'simulation' });
    const first = await broker.readEventGroup('standard', 'g', 'a', { count: 10 });
    expect(first.map((e) => e.type)).toEqual(['job.queued']);
    expect(await broker.readEventGroup('standard', 'g', 'a', { count: 10 })).toEqual([]);
    await new Promise((r) => setTimeout(r, 30));
    const taken = await broker.claimStaleEvents('standard', 'g', 'b', 20);
    expect(taken.events.map((e) => e.id)).toEqual([first[0]!.id]);
    expect(await broker.ackEvents('standard', 'g', [first[0]!.id])).toBe(1);
    expect((await broker.claimStaleEvents('standard', 'g', 'c', 0)).events).toEqual([]);
  });
});

describe('the event union as the one contract of the stream', () => {
  it('names each field the Lua side may write: an undeclared field or type is a problem, a machine.process extra is not', () => {
    const queued = { type: 'job.queued', job: 'standard.abc', state: 'queued', tenant: 't', service: 's', ts: '5' };
    expect(streamEntryProblems(queued)).toEqual([]);
    expect(streamEntryProblems({ ...queued, colour: 'blue' })).toEqual(['job.queued: field colour is not declared in core/events.ts']);
    expect(streamEntryProblems({ type: 'job.teleported', job: 'x' })[0]).toMatch(/^job\.teleported: type: /);
    expect(streamEntryProblems({ type: 'machine.process', machine: 'm', process: 'w0', state: 'exited', exit_code: '1' })).toEqual([]);
    expect(streamEntryProblems({ type: 'machine.ready', machine: 'm', state: 'ready', ts: '1' })).toEqual([]);
  });

  it('lists every type once, and a filter takes types and families and refuses an unknown one by name', () => {
    expect(new Set(STREAM_EVENT_TYPES).size).toBe(STREAM_EVENT_TYPES.length);
    expect(STREAM_EVENT_TYPES).toEqual(expect.arrayContaining(['job.queued', 'job.succeeded', 'worker.gone', 'machine.ready', 'machine.command.done', 'clock.unwatched']));
    const filter = EventTypeFilter.parse('job.succeeded, worker.*');
    expect(['job.succeeded', 'job.failed', 'worker.idle', 'machine.ready'].filter((t) => eventTypeMatches(filter, t))).toEqual(['job.succeeded', 'worker.idle']);
    const refused = EventTypeFilter.safeParse('job.succeeded,job.finished');
    expect(refused.success).toBe(false);
    expect(refused.error?.issues.map((i) => i.message)).toEqual([expect.stringMatching(/^unknown event type 'job\.finished': expected one of job\.queued, /)]);
  });

  it('gives the wire view of a read event: numbers and progress parsed, routable a boolean, an unknown entry as stored', () => {
    const starting = parseStreamEntry('standard', '7-0', { type: 'job.starting', ts: '7', job: 'standard.a', state: 'starting', tenant: 't', service: 's', worker: 'w', machine: '', attempt: '2', submitted_at: '3' });
    expect(eventView(starting)).toEqual({ id: '7-0', pool: 'standard', ts: 7, type: 'job.starting', job: 'standard.a', state: 'starting', tenant: 't', service: 's', worker: 'w', attempt: 2, submitted_at: 3 });
    const queued = parseStreamEntry('standard', '8-0', { type: 'job.queued', ts: '8', job: 'standard.a', state: 'queued', tenant: 't', service: 's', routable: '1' });
    expect(eventView(queued)).toMatchObject({ type: 'job.queued', routable: true });
    const future = parseStreamEntry('standard', '9-0', { type: 'job.teleported', ts: '9', job: 'standard.a', to: 'mars' });
    expect(future.type).toBe('unknown');
    expect(eventView(future)).toEqual({ id: '9-0', pool: 'standard', ts: 9, type: 'job.teleported', job: 'standard.a', to: 'mars' });
  });

  it('parses fast exactly as zod does: the same event for any entry zod accepts, the same verdict for any it refuses', () => {
    const names = [...new Set(StreamEventBody.options.flatMap((variant) => Object.keys(variant.shape)))].filter((name) => name !== 'type');
    const values = ['', 'x', 'w1', '0', '7', '-3', '01', '1e3', ' 5', '1.5', '9007199254740993', 'idle', 'ready', 'running',
      '{"stage":"running","value":3,"max":10}', '{"stage":"nope"}', '{', 'null'];
    const entry = fc.record({
      type: fc.constantFrom(...STREAM_EVENT_TYPES, 'job.teleported'),
      fields: fc.dictionary(fc.constantFrom(...names), fc.constantFrom(...values)),
    });
    // a well-formed entry of each type (what Lua writes), with some of the fields above on top, or those fields alone
    const wellFormed: Record<string, Record<string, string>> = {};
    for (const variant of StreamEventBody.options) {
      for (const type of variant.shape.type.values) {
        const zodAccepts = (fields: Record<string, string>) => StreamEventBody.safeParse({ ...fields, type }).success;
        const base: Record<string, string> = { job: 'standard.a', state: 'idle', tenant: 't', service: 's', worker: 'w', machine: 'm', attempt: '1',
          progress: '{"stage":"running"}', reason: 'retry', retry_at: '5', action: 'drain', command: '1-0', outcome: 'ok', process: 'p', class: 'c',
          from: '1', gap_ms: '2', grace_until: '3', model: 'sdxl', forecast: '2.5', workflow: 'standard.a', step: 's', error: 'e', optional: '1' };
        if (type === 'planner.decision') base.action = 'prefetch';
        if (type.startsWith('machine.') && !['machine.command', 'machine.command.done', 'machine.process'].includes(type)) base.state = type.slice('machine.'.length);
        if (type.startsWith('worker.') && type !== 'worker.registered') base.state = type.slice('worker.'.length);
        expect(zodAccepts(base), type).toBe(true);
        wellFormed[type] = base;
      }
    }
    fc.assert(
      fc.property(entry, fc.boolean(), ({ type, fields }, overlay) => {
        const raw = { ...(overlay ? (wellFormed[type] ?? {}) : {}), ...fields, type, ts: '42' };
        const zod = StreamEventBody.safeParse(raw);
        const event = parseStreamEntry('standard', '42-0', raw);
        if (zod.success) expect(event).toStrictEqual({ ...zod.data, pool: 'standard', shard: 'standard', id: '42-0', ts: 42 });
        else expect(event.type).toBe('unknown');
      }),
      { numRuns: 3_000 },
    );
  });

  it('names the pool and, apart, the shard whose stream holds an entry; a view shows the shard only when it is not the pool\'s first', () => {
    const fields = { type: 'job.queued', job: 'standard_2.abcdefabcdef', state: 'queued', tenant: 't', service: 's', ts: '42' };
    const inShard = parseStreamEntry('standard_2', '42-0', fields);
    expect(inShard).toMatchObject({ pool: 'standard', shard: 'standard_2', id: '42-0' });
    expect(eventView(inShard)).toMatchObject({ pool: 'standard', shard: 'standard_2' });
    const first = eventView(parseStreamEntry('standard', '42-0', { ...fields, job: 'standard.abcdefabcdef' }));
    expect(first.pool).toBe('standard');
    expect('shard' in first).toBe(false);
    // an entry this code does not know keeps both as well
    const unknown = eventView(parseStreamEntry('standard_3', '43-0', { type: 'job.teleported', ts: '43' }));
    expect(unknown).toMatchObject({ pool: 'standard', shard: 'standard_3', type: 'job.teleported' });
  });
});

describe('the webhook outbox', () => {
  const message = (id: string, type = 'job.queued') => ({ id, tenant: 't', url: 'https://example.com/h', job: 'standard.abcdefabcdef', type, body: `{"n":"${id}"}` });

  it('queues idempotently and makes only the head of a job\'s chain due', async () => {
    const outbox = new WebhookOutbox(await Broker.connect({ redis }));
    expect(await outbox.enqueue(message('m1'))).toBe('queued');
    expect(await outbox.enqueue(message('m1'))).toBe('known');
    expect(await outbox.enqueue(message('m2', 'job.succeeded'))).toBe('queued');
    const [claimed, ...rest] = await outbox.claimDue(10, 60_000);
    expect(rest).toEqual([]);
    expect(claimed).toMatchObject({ id: 'm1', attempt: 1 });
    const log = { at: Date.now(), message: 'm1', type: 'job.queued', url: claimed!.url, attempt: 1, status: 200, latency_ms: 3, outcome: 'delivered' as const };
    expect(await outbox.settle(claimed!, 'delivered', log)).toBe(true);
    expect(await outbox.settle(claimed!, 'delivered', log)).toBe(false);
    expect((await outbox.claimDue(10, 60_000)).map((m) => m.id)).toEqual(['m2']);
    expect((await outbox.deliveryLog('standard.abcdefabcdef')).map((e) => e.message)).toEqual(['m1', 'm1']);
  });

  it('merges a progress message into a pending one, so only the latest value waits', async () => {
    const outbox = new WebhookOutbox(await Broker.connect({ redis }), { progressThrottleMs: 60_000 });
    await outbox.enqueue(message('m1'));
    await outbox.enqueue(message('p1', 'job.progress'));
    expect(await outbox.enqueue(message('p2', 'job.progress'))).toBe('merged');
    expect((await outbox.message('p1'))?.body).toBe('{"n":"p2"}');
  });

  it('keeps a tenant secret, and after a rotation the old one for the grace period', async () => {
    const outbox = new WebhookOutbox(await Broker.connect({ redis }));
    const first = await outbox.secrets('t');
    expect(first.current).toMatch(/^whsec_[A-Za-z0-9+/=]{40,}$/);
    expect(await outbox.secrets('t')).toEqual(first);
    const rotated = await outbox.rotateSecret('t', 60_000);
    expect(rotated.previous).toBe(first.current);
    expect(rotated.current).not.toBe(first.current);
    expect(rotated.previousUntil).toBeGreaterThan(Date.now());
  });

  it('lets one consumer at a time hold the lease of reading a pool, until it releases it or stops renewing', async () => {
    const outbox = new WebhookOutbox(await Broker.connect({ redis }));
    expect(await outbox.holdReader('standard', 'a', 100)).toBe(true);
    expect(await outbox.holdReader('standard', 'b', 100)).toBe(false);
    expect(await outbox.holdReader('standard', 'a', 100)).toBe(true);
    expect(await outbox.holdReader('fast', 'b', 100)).toBe(true);
    await outbox.releaseReader('standard', 'b');
    expect(await outbox.holdReader('standard', 'b', 100)).toBe(false);
    await outbox.releaseReader('standard', 'a');
    expect(await outbox.holdReader('standard', 'b', 50)).toBe(true);
    await new Promise((r) => setTimeout(r, 80));
    expect(await outbox.holdReader('standard', 'c', 50)).toBe(true);
  });
});
