import { ModelError, type ModelProgress, type ModelProvider, type ReleaseModels } from '@emp/core';
import { type JobProgressInput, JobFailure } from './connector';

/**
 * Ensures the models a job names before its connector runs, reporting the wait
 * as progress with stage `downloading_model` (bytes summed over the models
 * being downloaded; models already on disk report nothing). Resolves with the
 * release function, or undefined when there is nothing to ensure. A ModelError
 * becomes a classified JobFailure: a bad file uses up an attempt, anything
 * about this machine (catalog, disk, network) is an infrastructure failure, so
 * the job is retried on another worker at no cost to the user.
 */
export async function ensureJobModels(
  provider: ModelProvider | undefined,
  models: readonly string[] | undefined,
  report: (progress: JobProgressInput) => void,
  signal: AbortSignal,
): Promise<ReleaseModels | undefined> {
  if (!provider || !models || models.length === 0) return undefined;
  const downloads = new Map<string, ModelProgress>();
  try {
    return await provider.ensure(
      models,
      (progress) => {
        downloads.set(progress.model, progress);
        report(downloadProgress([...downloads.values()]));
      },
      signal,
    );
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    throw modelFailure(error);
  }
}

/** The job progress that sums up the downloads a job is waiting for. */
export function downloadProgress(downloads: readonly ModelProgress[]): JobProgressInput {
  const received = downloads.reduce((sum, d) => sum + d.received, 0);
  const sized = downloads.every((d) => d.total !== undefined);
  const total = sized ? downloads.reduce((sum, d) => sum + d.total!, 0) : undefined;
  const what = downloads.length === 1 ? downloads[0]!.model : `${downloads.length} models`;
  return {
    stage: 'downloading_model',
    value: received,
    max: total || undefined, // 0 bytes is no size to show (max is positive)
    message: `downloading ${what} (${megabytes(received)}${total ? ` of ${megabytes(total)}` : ''} MB)`.slice(0, 1_000),
  };
}

function megabytes(bytes: number): string {
  return (bytes / 1e6).toFixed(1);
}

function modelFailure(error: unknown): JobFailure {
  if (error instanceof ModelError) {
    const kind = error.code === 'checksum_mismatch' ? 'retryable' : 'infrastructure';
    return new JobFailure(kind, error.message, { type: `Model:${error.code}`, cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new JobFailure('infrastructure', `models could not be ensured: ${message}`, { type: 'ModelProviderUnavailable', cause: error });
}
