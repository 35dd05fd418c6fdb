import type { Broker, SubmitJobInput } from '@emp/core';

/**
 * Runs a job through the real broker functions as a worker would: submitted
 * with `webhook`, claimed, started, `progress` reports, then succeeded.
 */
export async function runJob(broker: Broker, webhook: SubmitJobInput['webhook'], options: { progress?: number; tenant?: string; worker?: string } = {}): Promise<string> {
  const worker = options.worker ?? 'hook-worker';
  await broker.registerWorker({ id: worker, pool: 'standard', capabilities: { services: ['simulation'] } });
  const { id } = await broker.submit({ service: 'simulation', tenant: options.tenant ?? 'acme', webhook });
  const claimed = await broker.claim('standard', worker);
  if (!claimed.job || claimed.job.id !== id) throw new Error(`the test worker did not claim ${id}`);
  await broker.start(claimed.job.lease);
  for (let i = 1; i <= (options.progress ?? 0); i += 1) await broker.progress(claimed.job.lease, { stage: 'running', value: i, max: options.progress! });
  await broker.complete(claimed.job.lease, { ok: true });
  return id;
}
