import { ModelError, type ModelProvider } from '@emp/core';
import { expectJobFailure } from '@emp/testkit/worker';
import { describe, expect, it } from 'vitest';
import { JobFailure, type JobProgressInput } from './connector';
import { downloadProgress, ensureJobModels } from './job-models';

describe('ensureJobModels', () => {
  const never = new AbortController().signal;
  const providerOf = (ensure: ModelProvider['ensure']): ModelProvider => ({ ensure });

  it('does nothing without a provider or without models', async () => {
    const reports: JobProgressInput[] = [];
    const ensure: ModelProvider['ensure'] = async () => async () => undefined;
    expect(await ensureJobModels(undefined, ['a'], (p) => reports.push(p), never)).toBeUndefined();
    expect(await ensureJobModels(providerOf(ensure), [], (p) => reports.push(p), never)).toBeUndefined();
    expect(reports).toEqual([]);
  });

  it('sums the downloads of all models into one downloading_model progress', () => {
    expect(downloadProgress([{ model: 'a', received: 1_000_000, total: 2_000_000 }, { model: 'b', received: 500_000, total: 1_000_000 }])).toEqual({
      stage: 'downloading_model',
      value: 1_500_000,
      max: 3_000_000,
      message: 'downloading 2 models (1.5 of 3.0 MB)',
    });
    expect(downloadProgress([{ model: 'a', received: 100 }])).toEqual({ stage: 'downloading_model', value: 100, message: 'downloading a (0.0 MB)' });
  });

  it('classifies model errors: a bad file uses an attempt, anything about the machine is infrastructure', async () => {
    const failing = (error: unknown) => providerOf(async () => Promise.reject(error));
    const checksum = await expectJobFailure(ensureJobModels(failing(new ModelError('checksum_mismatch', 'bad sha')), ['a'], () => undefined, never));
    expect(checksum).toMatchObject({ kind: 'retryable', type: 'Model:checksum_mismatch', message: 'bad sha' });
    const full = await expectJobFailure(ensureJobModels(failing(new ModelError('cache_full', 'full')), ['a'], () => undefined, never));
    expect(full).toMatchObject({ kind: 'infrastructure', type: 'Model:cache_full' });
    const down = await expectJobFailure(ensureJobModels(failing(new Error('ECONNREFUSED')), ['a'], () => undefined, never));
    expect(down).toBeInstanceOf(JobFailure);
    expect(down).toMatchObject({ kind: 'infrastructure', type: 'ModelProviderUnavailable' });
  });
});
