import { describe, expect, it } from 'vitest';
import { AttemptAbort } from './attempt-abort';

describe('AttemptAbort', () => {
  it('a race settles like its work while not aborted', async () => {
    const abort = new AttemptAbort();
    await expect(abort.race(Promise.resolve(42))).resolves.toBe(42);
    await expect(abort.race(Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(abort.aborted).toBe(false);
  });

  it('aborting rejects a pending race at once with the first reason; later reasons change nothing', async () => {
    const abort = new AttemptAbort();
    const pending = abort.race(new Promise(() => undefined));
    const first = new Error('canceled');
    abort.abort(first);
    abort.abort(new Error('timeout'));
    await expect(pending).rejects.toBe(first);
    expect(abort.reason).toBe(first);
    await expect(abort.race(Promise.resolve(1))).rejects.toBe(first);
    expect(() => abort.throwIfAborted()).toThrow('canceled');
  });

  it('the signal, asked for before or after, reports the abort and its reason', () => {
    const early = new AttemptAbort();
    const signal = early.signal;
    const seen: unknown[] = [];
    signal.addEventListener('abort', () => seen.push(signal.reason));
    early.abort(new Error('shutdown'));
    expect(seen).toEqual([early.reason]);

    const late = new AttemptAbort();
    late.abort(new Error('lost'));
    expect(late.signal.aborted).toBe(true);
    expect((late.signal.reason as Error).message).toBe('lost');
  });

  it('work that rejects after the abort is not an unhandled rejection', async () => {
    const abort = new AttemptAbort();
    let fail!: (error: Error) => void;
    const pending = abort.race(new Promise((_, reject) => (fail = reject)));
    abort.abort(new Error('canceled'));
    await expect(pending).rejects.toThrow('canceled');
    fail(new Error('connector gave up later'));
    await new Promise((resolve) => setImmediate(resolve));
  });
});
