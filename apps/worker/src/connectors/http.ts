import { setTimeout as sleep } from 'node:timers/promises';
import { HttpServiceOptions, parseWith } from '@emp/core';
import { z } from 'zod';
import { type Connector, type JobContext, JobFailure } from '../connector';
import { ServiceClient, protocolError } from '../service-client';

/**
 * A generic asynchronous REST service (RunPod-style by default): submits the
 * payload, polls a status URL until a terminal status, and returns the value
 * at the result pointer. Paths, pointers and the status vocabulary are
 * configurable; a cancel POSTs the cancel path.
 */
export function httpConnector(options: HttpServiceOptions): Connector {
  const config = parseWith(HttpServiceOptions, options, 'http connector options');
  // the options carry the endpoint's fields (base URL, headers, TLS, timeout) under the same names
  const client = new ServiceClient(config.service, config);
  const service = config.service;
  const is = (list: string[], status: string) => list.some((s) => s.toLowerCase() === status.toLowerCase());

  const outcome = async (reply: unknown, ctx: JobContext, remoteId: string): Promise<{ done: true; result: unknown } | { done: false; status: string }> => {
    const status = pointer(reply, config.statusPointer);
    if (typeof status !== 'string') throw protocolError(service, `no status string at '${config.statusPointer}' in ${JSON.stringify(reply).slice(0, 300)}`);
    if (is(config.statusMap.succeeded, status)) return { done: true, result: pointer(reply, config.resultPointer) ?? null };
    if (is(config.statusMap.failed, status)) {
      const error = pointer(reply, config.errorPointer);
      const message = typeof error === 'string' ? error : JSON.stringify(error ?? status);
      throw new JobFailure(config.failureKind, `${service}: remote job ${remoteId} ${status}: ${message.slice(0, 2_000)}`, {
        type: 'RemoteJobFailed',
        details: { remote_id: remoteId, status, error: error ?? null },
      });
    }
    if (is(config.statusMap.canceled, status)) {
      if (ctx.signal.aborted) throw ctx.signal.reason as Error;
      throw new JobFailure('retryable', `${service}: remote job ${remoteId} was canceled by the service`, { type: 'RemoteJobCanceled', details: { remote_id: remoteId } });
    }
    if (config.progressPointer !== undefined) {
      const value = pointer(reply, config.progressPointer);
      if (typeof value === 'number' && Number.isFinite(value)) {
        ctx.progress({ stage: 'running', value: Math.min(Math.max(value, 0), config.progressMax), max: config.progressMax, message: status.slice(0, 1_000) });
      }
    }
    return { done: false, status };
  };

  const cancel = async (ctx: JobContext, remoteId: string) => {
    if (config.cancelPath === undefined) return;
    try {
      const response = await client.request(fill(config.cancelPath, remoteId), { method: 'POST', json: {}, timeoutMs: 2_000 });
      await response.body?.cancel();
    } catch (error) {
      ctx.logger.warn({ err: error, remote_id: remoteId }, 'http cancel failed');
    }
  };

  return {
    service,
    id: `${service}@${client.baseUrl.host}`,
    async run(job, ctx) {
      const body = config.wrapPayloadIn === undefined ? job.payload : { [config.wrapPayloadIn]: job.payload };
      const submitted = await client.json(config.submitPath, z.unknown(), { method: config.submitMethod, json: body, signal: ctx.signal });
      const id = pointer(submitted, config.idPointer);
      if (typeof id !== 'string' && typeof id !== 'number') throw protocolError(service, `no remote job id at '${config.idPointer}' in the submit reply`);
      const remoteId = String(id);
      ctx.logger.debug({ remote_id: remoteId }, 'http job submitted');
      const onAbort = () => void cancel(ctx, remoteId);
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      try {
        // a synchronous service answers with the outcome at once
        let state = await outcome(submitted, ctx, remoteId).catch((error: unknown) => {
          if (error instanceof JobFailure && error.type === 'ProtocolError') return { done: false as const, status: '' };
          throw error;
        });
        const deadline = Date.now() + config.maxDurationMs;
        let interval = config.pollIntervalMs;
        while (!state.done) {
          if (Date.now() > deadline) {
            void cancel(ctx, remoteId);
            throw new JobFailure('retryable', `${service}: remote job ${remoteId} not done after ${config.maxDurationMs} ms`, { type: 'PollTimeout' });
          }
          await sleep(interval, undefined, { signal: ctx.signal });
          const reply = await client.json(fill(config.statusPath, remoteId), z.unknown(), { signal: ctx.signal });
          const previous = state.status;
          state = await outcome(reply, ctx, remoteId);
          interval = !state.done && state.status === previous ? Math.min(Math.ceil(interval * 1.5), config.maxPollIntervalMs) : config.pollIntervalMs;
        }
        return state.result;
      } finally {
        ctx.signal.removeEventListener('abort', onAbort);
      }
    },
  };
}

function fill(path: string, id: string): string {
  return path.replaceAll('{id}', encodeURIComponent(id));
}

/** Resolves an RFC 6901 JSON pointer; undefined when the path does not exist. */
export function pointer(document: unknown, path: string): unknown {
  if (path === '') return document;
  let node = document;
  for (const raw of path.slice(1).split('/')) {
    const key = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    if (Array.isArray(node)) {
      if (!/^(0|[1-9]\d*)$/.test(key)) return undefined;
      node = node[Number(key)];
    } else if (node !== null && typeof node === 'object' && Object.hasOwn(node, key)) {
      node = (node as Record<string, unknown>)[key];
    } else {
      return undefined;
    }
  }
  return node;
}
