import { describe, expect, it } from 'vitest';
import { CallBatcher, type BatchItem } from './call-batch';

interface Sent {
  group: string;
  ids: string[];
  answer(replies?: unknown[]): void;
  fail(error: Error): void;
}

/** A batcher whose calls are answered by the test, in the order it chooses. */
function batcherUnderTest(gather: 'turn' | 'loop' = 'turn', callsInFlight = 1) {
  const sent: Sent[] = [];
  const batcher = new CallBatcher<BatchItem>(
    (_pool, group, items) =>
      new Promise((resolve, reject) => {
        sent.push({
          group,
          ids: items.map((item) => item.jobId),
          answer: (replies) => resolve(replies ?? items.map((item) => ['ok', item.jobId])),
          fail: reject,
        });
      }),
    { gather, callsInFlight },
  );
  return { batcher, sent };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('CallBatcher', () => {
  it('sends a lone item in the turn it was added', async () => {
    const { batcher, sent } = batcherUnderTest();
    const reply = batcher.add('standard', 'w1', { jobId: 'a' });
    await Promise.resolve();
    await new Promise<void>((resolve) => process.nextTick(resolve));
    expect(sent.map((call) => call.ids)).toEqual([['a']]);
    sent[0]!.answer();
    await expect(reply).resolves.toEqual(['ok', 'a']);
  });

  it('holds what is added while a call of the group is out, then sends it in one call', async () => {
    const { batcher, sent } = batcherUnderTest();
    const first = batcher.add('standard', 'w1', { jobId: 'a' });
    await turn();
    const later = [batcher.add('standard', 'w1', { jobId: 'b' }), batcher.add('standard', 'w1', { jobId: 'c' })];
    await turn();
    batcher.add('standard', 'w1', { jobId: 'd' });
    await turn();
    expect(sent.map((call) => call.ids)).toEqual([['a']]);

    // the reply's continuation adds one more: it goes with those that waited
    const chained = first.then(() => batcher.add('standard', 'w1', { jobId: 'e' }));
    sent[0]!.answer();
    await turn();
    expect(sent.map((call) => call.ids)).toEqual([['a'], ['b', 'c', 'd', 'e']]);
    sent[1]!.answer();
    await expect(Promise.all([...later, chained])).resolves.toEqual([
      ['ok', 'b'],
      ['ok', 'c'],
      ['ok', 'e'],
    ]);
  });

  it('does not hold one group for another', async () => {
    const { batcher, sent } = batcherUnderTest();
    void batcher.add('standard', 'w1', { jobId: 'a' });
    await turn();
    void batcher.add('standard', 'w2', { jobId: 'b' });
    void batcher.add('fast', 'w1', { jobId: 'c' });
    await turn();
    expect(sent.map((call) => `${call.group}:${call.ids.join()}`)).toEqual(['w1:a', 'w2:b', 'w1:c']);
  });

  it('spreads what it gathered over the calls it may have out, and holds the rest for the first reply', async () => {
    const { batcher, sent } = batcherUnderTest('turn', 2);
    for (let i = 0; i < 10; i++) void batcher.add('standard', 'w1', { jobId: `a${i}` });
    await turn();
    expect(sent.map((call) => call.ids.length)).toEqual([5, 5]);
    for (let i = 0; i < 3; i++) void batcher.add('standard', 'w1', { jobId: `b${i}` });
    await turn();
    expect(sent).toHaveLength(2);
    sent[1]!.answer();
    await turn();
    expect(sent.map((call) => call.ids)).toEqual([sent[0]!.ids, sent[1]!.ids, ['b0', 'b1', 'b2']]);
  });

  it('puts at most 64 items in a call', async () => {
    const { batcher, sent } = batcherUnderTest('turn', 2);
    for (let i = 0; i < 130; i++) void batcher.add('standard', 'w1', { jobId: `j${i}` });
    await turn();
    expect(sent.map((call) => call.ids.length)).toEqual([64, 64]);
    sent[0]!.answer();
    await turn();
    expect(sent.map((call) => call.ids.length)).toEqual([64, 64, 2]);
  });

  it("rejects an item alone when its reply is an error, and all of a failed call's items, then sends what waited", async () => {
    const { batcher, sent } = batcherUnderTest();
    const a = batcher.add('standard', 'w1', { jobId: 'a' });
    const b = batcher.add('standard', 'w1', { jobId: 'b' });
    await turn();
    const c = batcher.add('standard', 'w1', { jobId: 'c' });
    await turn();
    sent[0]!.answer([['ok', 'a'], ['error', 'LEASE_LOST job b is held by another attempt']]);
    await expect(a).resolves.toEqual(['ok', 'a']);
    await expect(b).rejects.toThrow(/LEASE_LOST|held by another attempt/);
    await turn();
    expect(sent.map((call) => call.ids)).toEqual([['a', 'b'], ['c']]);
    sent[1]!.fail(new Error('connection lost'));
    await expect(c).rejects.toThrow('connection lost');
    const d = batcher.add('standard', 'w1', { jobId: 'd' });
    await turn();
    expect(sent.map((call) => call.ids)).toEqual([['a', 'b'], ['c'], ['d']]);
    sent[2]!.answer();
    await expect(d).resolves.toEqual(['ok', 'd']);
  });

  it('gathers what the timers of one loop iteration add with gather "loop"', async () => {
    const { batcher, sent } = batcherUnderTest('loop');
    await new Promise<void>((resolve) => {
      setTimeout(() => void batcher.add('standard', 'w1', { jobId: 'a' }), 1);
      setTimeout(() => {
        void batcher.add('standard', 'w1', { jobId: 'b' });
        resolve();
      }, 1);
    });
    await turn();
    expect(sent.map((call) => call.ids)).toEqual([['a', 'b']]);
  });
});
