import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { type ClaimedJob, ComfyUIOptions, type Span, activeTracing, endSpan, parseWith } from '@emp/core';
import { type RawData, WebSocket } from 'ws';
import { z } from 'zod';
import { type AssetStore, AssetStoreRefusedError, type StoredAsset, assetKey } from '../assets/asset-store';
import { type Connector, type JobContext, JobFailure } from '../connector';
import { ServiceClient, errorCode, parseMessage, parseReply, protocolError, statusFailure } from '../service-client';
import { enforceNodePolicy } from './comfyui-node-policy';
import {
  BINARY_EVENTS,
  type ComfyMessage,
  ComfyPayload,
  Envelope,
  type ExecutionError,
  type HistoryEntry,
  HistoryReply,
  MESSAGE_SCHEMAS,
  PromptAccepted,
  PromptRejected,
  QueueReply,
  fileRefsOf,
  promptIdFor,
} from './comfyui-protocol';

const Milliseconds = z.number().int().positive().max(3_600_000);

/** most progress events one comfyui.execute span carries (a 10 000-step sampler must not make a span of megabytes) */
export const MAX_SPAN_PROGRESS_EVENTS = 100;

/** The options a machine's config states, and the asset store the output files go to. */
export const ComfyUIConnectorOptions = ComfyUIOptions.extend({
  /** where output files go; their URLs go into the result */
  assets: z.custom<AssetStore>((value) => typeof (value as AssetStore | undefined)?.put === 'function', { message: 'expected an AssetStore' }),
}).strict();
export type ComfyUIConnectorOptions = z.input<typeof ComfyUIConnectorOptions>;
type Config = z.output<typeof ComfyUIConnectorOptions>;

/**
 * Runs ComfyUI workflows: the job's payload is `{ workflow: {node_id:
 * {class_type, inputs}}, extra_data? }`. Posts the workflow to /prompt,
 * follows its WebSocket messages to report progress across the workflow's
 * nodes, fetches the output files once the prompt is done and hands them to
 * the asset store; the result lists their URLs. See the README for the
 * failure classification.
 */
export function comfyuiConnector(options: ComfyUIConnectorOptions): Connector {
  const config = parseWith(ComfyUIConnectorOptions, options, 'comfyui connector options');
  // the options carry the endpoint's fields (base URL, headers, TLS, timeout) under the same names
  const client = new ServiceClient(config.service, config);
  return {
    service: config.service,
    id: `${config.service}@${client.baseUrl.host}`,
    run: async (job, ctx) => new ComfyRun(client, config, job, ctx).execute(),
    cannotLoad:
      'ComfyUI has no API to load a model without running a workflow: a checkpoint is loaded when a prompt that uses it runs (POST /prompt), and POST /free only unloads',
  };
}

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
  reject: (error: Error) => void;
  settled: boolean;
}

function deferred(): Deferred {
  const d = { settled: false } as Deferred;
  d.promise = new Promise<void>((resolve, reject) => {
    d.resolve = () => {
      d.settled = true;
      resolve();
    };
    d.reject = (error) => {
      d.settled = true;
      reject(error);
    };
  });
  d.promise.catch(() => undefined);
  return d;
}

/** One attempt of one job on ComfyUI. */
class ComfyRun {
  private readonly clientId = randomUUID();
  private readonly requestedId: string;
  private promptId: string | undefined;
  private readonly workflow: ComfyPayload['workflow'];
  private readonly extraData: Record<string, unknown>;
  private readonly done = deferred();
  private socket: WebSocket | undefined;
  private closing = false;
  /** the server reported the prompt done (or failed): nothing left to interrupt */
  private finishedOnServer = false;
  /** messages that arrived before POST /prompt answered with the id */
  private early: ComfyMessage[] = [];

  private readonly cached = new Set<string>();
  private readonly finished = new Set<string>();
  private current: { node: string; value: number; max: number } | undefined;
  private lastPercent = -1;
  private lastNode: string | undefined;
  private previews = 0;
  /** comfyui.execute: from queueing the prompt to its end on the server (non-recording with tracing off) */
  private span: Span | undefined;
  private spanEvents = 0;

  constructor(
    private readonly client: ServiceClient,
    private readonly config: Config,
    private readonly job: ClaimedJob,
    private readonly ctx: JobContext,
  ) {
    const payload = readPayload(job.payload);
    enforceNodePolicy(config.service, config.nodePolicy, payload.workflow);
    this.workflow = payload.workflow;
    this.extraData = payload.extra_data ?? {};
    this.requestedId = promptIdFor(job.id, job.attempt);
  }

  async execute(): Promise<unknown> {
    const { signal } = this.ctx;
    const onAbort = () => {
      this.done.reject(signal.reason as Error);
      void this.interrupt();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const watchdog = setInterval(() => void this.checkStillRunning(), this.config.watchdogMs);
    try {
      signal.throwIfAborted();
      // the socket first: a prompt posted without a listening client loses its first messages
      this.socket = await this.connect();
      // a child of job.run (the active span); its progress arrives over the WebSocket, which carries no trace context
      this.span = activeTracing().startSpan('comfyui.execute', {
        attributes: { 'emp.service': this.config.service, 'emp.comfyui.nodes': Object.keys(this.workflow).length },
      });
      this.promptId = await this.submit();
      this.span.setAttribute('emp.comfyui.prompt_id', this.promptId);
      this.ctx.logger.debug({ prompt_id: this.promptId, client_id: this.clientId }, 'comfyui prompt queued');
      if (signal.aborted) void this.interrupt(); // aborted while the prompt was being queued
      for (const message of this.early.splice(0)) this.handle(message);
      await this.done.promise;
      this.endSpan('done');
      this.finishedOnServer = true;
      const entry = await this.awaitHistory();
      this.failIfUnsuccessful(entry);
      this.report(100, undefined, 'done');
      return await this.collectOutputs(entry);
    } catch (error) {
      this.endSpan(signal.aborted ? 'canceled' : 'failed', error);
      // failed on our side (lost socket, malformed message) while the prompt may still hold the GPU
      if (!signal.aborted && this.promptId !== undefined && !this.finishedOnServer) void this.interrupt();
      throw error;
    } finally {
      clearInterval(watchdog);
      signal.removeEventListener('abort', onAbort);
      this.closing = true;
      this.socket?.terminate();
    }
  }

  /** Ends comfyui.execute once (a later failure, in history or outputs, is not the prompt's). */
  private endSpan(outcome: string, error?: unknown): void {
    const span = this.span;
    if (!span) return;
    this.span = undefined;
    if (this.spanEvents > MAX_SPAN_PROGRESS_EVENTS) span.setAttribute('emp.comfyui.progress_events_dropped', this.spanEvents - MAX_SPAN_PROGRESS_EVENTS);
    endSpan(span, outcome, error);
  }

  // ---------------------------------------------------------------- connection

  private webSocketUrl(): string {
    const url = this.client.url('ws', { clientId: this.clientId });
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.href;
  }

  /** Opens the WebSocket; resolves once it is open, throws a classified failure otherwise. */
  private connect(): Promise<WebSocket> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(this.webSocketUrl(), { ...this.client.webSocketOptions(), handshakeTimeout: this.config.connectTimeoutMs });
      const onAbort = () => {
        socket.terminate();
        reject(this.ctx.signal.reason as Error);
      };
      this.ctx.signal.addEventListener('abort', onAbort, { once: true });
      const cleanup = () => this.ctx.signal.removeEventListener('abort', onAbort);
      socket.once('unexpected-response', (_request, response) => {
        cleanup();
        socket.terminate();
        reject(statusFailure(this.config.service, 'WebSocket /ws', response.statusCode ?? 0, ''));
      });
      socket.once('error', (error) => {
        cleanup();
        reject(this.client.transportFailure(error, this.ctx.signal, 'WebSocket /ws'));
      });
      socket.once('open', () => {
        cleanup();
        socket.on('error', (error) => this.ctx.logger.debug({ err: error }, 'comfyui websocket error'));
        socket.on('message', (data, isBinary) => this.onFrame(data, isBinary));
        socket.once('close', () => void this.onClose(socket));
        resolve(socket);
      });
    });
  }

  /** The socket dropped mid-job: reconnect (same client id) and recover what was missed from /history. */
  private async onClose(socket: WebSocket): Promise<void> {
    if (this.closing || this.done.settled || socket !== this.socket) return;
    this.ctx.logger.debug('comfyui websocket closed mid-job; reconnecting');
    let lastError: unknown;
    for (let attempt = 1; attempt <= this.config.reconnectAttempts; attempt++) {
      try {
        await sleep(this.config.reconnectDelayMs * attempt, undefined, { signal: this.ctx.signal });
        if (this.done.settled) return;
        this.socket = await this.connect();
        if (this.closing || this.done.settled) {
          this.socket.terminate();
          return;
        }
        // whatever finished while we were away is in /history
        if (this.promptId !== undefined && (await this.historyEntry()) !== undefined) this.done.resolve();
        return;
      } catch (error) {
        if (this.ctx.signal.aborted) return;
        lastError = error;
      }
    }
    this.done.reject(
      new JobFailure('retryable', `${this.config.service}: lost the WebSocket and could not reconnect: ${describe(lastError)}`, {
        type: 'ConnectionLost',
        cause: lastError,
      }),
    );
  }

  // ---------------------------------------------------------------- submitting

  /** POSTs the workflow; returns the prompt id ComfyUI uses (older builds ignore ours and mint their own). */
  private async submit(withOurId = true): Promise<string> {
    const body = {
      prompt: this.workflow,
      client_id: this.clientId,
      ...(withOurId && { prompt_id: this.requestedId }),
      extra_data: this.extraData,
    };
    let response;
    try {
      response = await this.client.request('prompt', { json: body, signal: this.ctx.signal });
    } catch (error) {
      // the request may have been queued before the connection broke: our id finds it
      if (withOurId && !this.ctx.signal.aborted && (await this.isKnown(this.requestedId).catch(() => false))) return this.requestedId;
      throw error;
    }
    const text = await this.client.readText(response, this.ctx.signal, 'POST /prompt');
    if (response.ok) return parseReply(this.config.service, 'POST /prompt', PromptAccepted, text).prompt_id;
    if (response.status === 400) {
      const rejected = parseReply(this.config.service, 'POST /prompt (400)', PromptRejected, text);
      const type = typeof rejected.error === 'string' ? undefined : rejected.error.type;
      if (type === 'invalid_prompt_id' && withOurId) return this.submit(false);
      throw classifyRejection(this.config, rejected);
    }
    throw statusFailure(this.config.service, 'POST /prompt', response.status, text);
  }

  private async isKnown(promptId: string): Promise<boolean> {
    if ((await this.historyEntry(promptId)) !== undefined) return true;
    return (await this.queuePosition(promptId)) !== undefined;
  }

  // ---------------------------------------------------------------- messages

  private onFrame(data: RawData, isBinary: boolean): void {
    if (this.done.settled) return;
    const bytes = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    try {
      if (isBinary) return this.onBinary(bytes);
      let json: unknown;
      try {
        json = JSON.parse(bytes.toString('utf8'));
      } catch {
        throw protocolError(this.config.service, `a WebSocket message is not JSON: ${bytes.toString('utf8').slice(0, 200)}`);
      }
      const envelope = parseMessage(this.config.service, 'WebSocket message', Envelope, json);
      const schema = MESSAGE_SCHEMAS[envelope.type as keyof typeof MESSAGE_SCHEMAS];
      if (!schema) return; // custom nodes send types of their own
      const message = { type: envelope.type, data: parseMessage(this.config.service, `'${envelope.type}' message`, schema, envelope.data) } as ComfyMessage;
      if (this.promptId === undefined) this.early.push(message);
      else this.handle(message);
    } catch (error) {
      this.done.reject(error as Error);
    }
  }

  private onBinary(bytes: Buffer): void {
    if (bytes.length < 4) throw protocolError(this.config.service, `a binary WebSocket frame of ${bytes.length} bytes has no event type`);
    const event = BINARY_EVENTS[bytes.readUInt32BE(0)];
    // previews are shown by ComfyUI's own UI; the job's progress carries the step count
    if (event?.startsWith('preview') || event === 'unencoded_preview_image') this.previews++;
  }

  /** Messages for another prompt (broadcasts, or a prompt of another client) are ignored. */
  private isOurs(promptId: string | undefined): boolean {
    return promptId === undefined || promptId === this.promptId;
  }

  private handle(message: ComfyMessage): void {
    if (this.done.settled) return;
    switch (message.type) {
      case 'status':
        return;
      case 'execution_start':
        if (this.isOurs(message.data.prompt_id)) this.report(0, undefined, 'started');
        return;
      case 'execution_cached':
        if (!this.isOurs(message.data.prompt_id)) return;
        for (const node of message.data.nodes) if (node in this.workflow) this.cached.add(node);
        return this.update();
      case 'executing': {
        if (!this.isOurs(message.data.prompt_id)) return;
        const { node } = message.data;
        if (this.current && this.current.node !== node) this.finished.add(this.current.node);
        if (node === null) {
          this.current = undefined;
          this.done.resolve();
          return;
        }
        this.current = { node, value: 0, max: 1 };
        return this.update();
      }
      case 'progress': {
        if (!this.isOurs(message.data.prompt_id)) return;
        const node = message.data.node ?? this.current?.node;
        if (node === undefined || message.data.max <= 0) return;
        this.current = { node, value: message.data.value, max: message.data.max };
        return this.update();
      }
      case 'progress_state':
        if (!this.isOurs(message.data.prompt_id)) return;
        for (const [node, state] of Object.entries(message.data.nodes)) {
          if (!(node in this.workflow)) continue;
          if (state.state === 'finished') this.finished.add(node);
          else if (state.state === 'running' && state.max > 0) this.current = { node, value: state.value, max: state.max };
        }
        return this.update();
      case 'executed':
        if (!this.isOurs(message.data.prompt_id)) return;
        this.finished.add(message.data.node);
        return this.update();
      case 'execution_success':
        // history may not be written yet: awaitHistory polls until it is
        if (this.isOurs(message.data.prompt_id)) this.done.resolve();
        return;
      case 'execution_error':
        if (!this.isOurs(message.data.prompt_id)) return;
        this.finishedOnServer = true;
        this.done.reject(classifyExecutionError(this.config.service, message.data));
        return;
      case 'execution_interrupted':
        if (message.data.prompt_id !== undefined && message.data.prompt_id !== this.promptId) return;
        this.finishedOnServer = true;
        this.done.reject(this.interruptedFailure());
        return;
    }
  }

  private interruptedFailure(): Error {
    if (this.ctx.signal.aborted) return this.ctx.signal.reason as Error;
    // someone else (an operator in ComfyUI's UI) interrupted it: not the job's fault
    return new JobFailure('retryable', `${this.config.service}: the prompt was interrupted on the server`, { type: 'Interrupted' });
  }

  // ---------------------------------------------------------------- progress

  private update(): void {
    const ids = Object.keys(this.workflow);
    let complete = 0;
    for (const id of ids) if (this.cached.has(id) || this.finished.has(id)) complete++;
    const current = this.current && !this.finished.has(this.current.node) ? this.current : undefined;
    const fraction = current ? Math.min(1, Math.max(0, current.value / current.max)) : 0;
    const percent = Math.min(99.9, ((complete + fraction) / ids.length) * 100);
    const node = current?.node;
    const classType = node === undefined ? undefined : this.workflow[node]?.class_type;
    const message = node === undefined ? undefined : `node ${node}${classType ? ` (${classType})` : ''}${current && current.max > 1 ? ` ${current.value}/${current.max}` : ''}`;
    this.report(percent, node, message);
  }

  /** Reports overall percent, never going backwards (a reconnect may replay an older state). */
  private report(percent: number, node: string | undefined, message: string | undefined): void {
    const value = Math.round(Math.max(percent, this.lastPercent) * 10) / 10;
    if (value === this.lastPercent && node === this.lastNode) return;
    this.lastPercent = value;
    this.lastNode = node;
    if (this.span?.isRecording() && ++this.spanEvents <= MAX_SPAN_PROGRESS_EVENTS) {
      this.span.addEvent('progress', { 'emp.progress.percent': value, ...(node !== undefined && { 'emp.comfyui.node': node.slice(0, 200) }), ...(message !== undefined && { 'emp.progress.message': message.slice(0, 200) }) });
    }
    this.ctx.progress({
      stage: 'running',
      value,
      max: 100,
      ...(node !== undefined && { node: node.slice(0, 200) }),
      ...(message !== undefined && { message: message.slice(0, 1_000) }),
    });
  }

  // ---------------------------------------------------------------- history and outputs

  private async historyEntry(promptId = this.promptId!): Promise<HistoryEntry | undefined> {
    const reply = await this.client.json(`history/${encodeURIComponent(promptId)}`, HistoryReply, { signal: this.ctx.signal });
    return reply[promptId];
  }

  private async queuePosition(promptId: string): Promise<'running' | 'pending' | undefined> {
    const queue = await this.client.json('queue', QueueReply, { signal: this.ctx.signal });
    if (queue.queue_running.some((row) => row[1] === promptId)) return 'running';
    if (queue.queue_pending.some((row) => row[1] === promptId)) return 'pending';
    return undefined;
  }

  private watchdogBusy = false;
  private absentChecks = 0;

  /**
   * The safety net for lost messages: a prompt in /history is done; one that
   * is neither there nor in /queue twice in a row is gone (ComfyUI restarted:
   * its history lives in memory only).
   */
  private async checkStillRunning(): Promise<void> {
    if (this.watchdogBusy || this.done.settled || this.promptId === undefined) return;
    this.watchdogBusy = true;
    try {
      if ((await this.historyEntry()) !== undefined) return this.done.resolve();
      if ((await this.queuePosition(this.promptId)) !== undefined) {
        this.absentChecks = 0;
        return;
      }
      if (++this.absentChecks >= 2) {
        this.done.reject(
          new JobFailure('retryable', `${this.config.service}: prompt ${this.promptId} is neither queued, running nor in history (server restarted?)`, {
            type: 'PromptLost',
          }),
        );
      }
    } catch (error) {
      // the socket's reconnect logic owns connection failures; this is only a second opinion
      this.ctx.logger.debug({ err: error }, 'comfyui watchdog check failed');
    } finally {
      this.watchdogBusy = false;
    }
  }

  /** Polls /history until the prompt's entry is written (it trails execution_success). */
  private async awaitHistory(): Promise<HistoryEntry> {
    const deadline = Date.now() + this.config.historyTimeoutMs;
    for (let delay = this.config.historyPollMs; ; delay = Math.min(delay * 2, 1_000)) {
      const entry = await this.historyEntry();
      if (entry) return entry;
      if (Date.now() >= deadline) {
        throw new JobFailure('retryable', `${this.config.service}: prompt ${this.promptId} finished but has no history after ${this.config.historyTimeoutMs} ms`, {
          type: 'HistoryMissing',
        });
      }
      await sleep(delay, undefined, { signal: this.ctx.signal });
    }
  }

  private failIfUnsuccessful(entry: HistoryEntry): void {
    if (entry.status?.status_str !== 'error') return;
    const messages = entry.status.messages;
    const error = messages.find(([type]) => type === 'execution_error');
    if (error) throw classifyExecutionError(this.config.service, parseMessage(this.config.service, 'history execution_error', MESSAGE_SCHEMAS.execution_error, error[1]));
    if (messages.some(([type]) => type === 'execution_interrupted')) throw this.interruptedFailure();
    throw new JobFailure('retryable', `${this.config.service}: prompt ${this.promptId} ended with status 'error'`, { type: 'ExecutionFailed' });
  }

  private async collectOutputs(entry: HistoryEntry): Promise<unknown> {
    const files: Array<{ node: string; kind: string; ref: { filename: string; subfolder: string; type: string } }> = [];
    const data: Record<string, Record<string, unknown>> = {};
    for (const [node, output] of Object.entries(entry.outputs)) {
      const refs = fileRefsOf(output);
      for (const { kind, ref } of refs) if (this.config.outputTypes.includes(ref.type)) files.push({ node, kind, ref });
      const fileKinds = new Set(refs.map((r) => r.kind));
      // what is not a file (text, numbers) goes into the result as it is
      const rest = Object.entries(output).filter(([key]) => !fileKinds.has(key) && key !== 'animated');
      if (rest.length > 0) data[node] = Object.fromEntries(rest);
    }

    const outputs: Array<StoredAsset & { node: string; kind: string; filename: string }> = [];
    for (const [index, file] of files.entries()) {
      this.ctx.progress({ stage: 'uploading', value: index, max: files.length, message: file.ref.filename.slice(0, 200) });
      const { data: bytes, contentType } = await this.client.bytes('view', {
        query: { filename: file.ref.filename, subfolder: file.ref.subfolder, type: file.ref.type },
        signal: this.ctx.signal,
      });
      let stored: StoredAsset;
      try {
        stored = await this.config.assets.put({ key: assetKey(this.job.id, this.job.attempt, `${file.node}-${file.ref.filename}`), data: bytes, contentType }, this.ctx.signal);
      } catch (error) {
        if (this.ctx.signal.aborted) throw this.ctx.signal.reason as Error;
        // a store this worker cannot use (no bucket, refused credentials) is the worker's fault: not the user's attempts
        const kind = error instanceof AssetStoreRefusedError ? 'infrastructure' : 'retryable';
        throw new JobFailure(kind, `storing ${file.ref.filename} failed: ${describe(error)}`, { type: 'AssetUploadFailed', cause: error });
      }
      outputs.push({ node: file.node, kind: file.kind, filename: file.ref.filename, ...stored });
    }
    if (files.length > 0) this.ctx.progress({ stage: 'uploading', value: files.length, max: files.length });
    return {
      prompt_id: this.promptId,
      outputs,
      ...(Object.keys(data).length > 0 && { data }),
      nodes: Object.keys(this.workflow).length,
      cached_nodes: this.cached.size,
    };
  }

  // ---------------------------------------------------------------- cancel

  /**
   * Stops our prompt on the server: /interrupt with our prompt id (so another
   * client's prompt is never hit) and a queue delete in case it had not started.
   */
  private async interrupt(): Promise<void> {
    const promptId = this.promptId ?? this.requestedId;
    const options = { timeoutMs: this.config.interruptTimeoutMs };
    const results = await Promise.allSettled([
      this.client.request('interrupt', { ...options, json: { prompt_id: promptId } }),
      this.client.request('queue', { ...options, json: { delete: [promptId] } }),
    ]);
    for (const result of results) {
      if (result.status === 'rejected') this.ctx.logger.warn({ err: result.reason, prompt_id: promptId }, 'comfyui interrupt failed');
      else await result.value.body?.cancel().catch(() => undefined);
    }
    this.ctx.logger.debug({ prompt_id: promptId }, 'comfyui prompt interrupted');
  }
}

function readPayload(payload: unknown): ComfyPayload {
  const result = ComfyPayload.safeParse(payload);
  if (result.success) return result.data;
  const issues = result.error.issues.map((i) => `${i.path.join('.') || '(payload)'}: ${i.message}`).join('; ');
  throw new JobFailure('non_retryable', `invalid comfyui payload: ${issues}`, { type: 'InvalidPayload' });
}

/**
 * A 400 from /prompt. Bad workflows fail for good (non_retryable), except when
 * what is missing is on this worker's side: a model file a combo input does
 * not list (`value_not_in_list` on `ckpt_name` and the like) or a node class
 * (custom node not installed). Those are capability gaps, so they fail as
 * `infrastructure`: the job goes back to the queue at no cost to the user's
 * attempts, for a worker that has what it needs (bounded by max_infra_attempts).
 */
export function classifyRejection(config: Pick<Config, 'service' | 'modelInputs'>, rejected: PromptRejected): JobFailure {
  const error = typeof rejected.error === 'string' ? { type: 'error', message: rejected.error, details: undefined, extra_info: undefined } : rejected.error;
  const reasons = Object.entries(rejected.node_errors).flatMap(([node, entry]) =>
    entry.errors.map((reason) => ({ node, class_type: entry.class_type, type: reason.type, message: reason.message, details: reason.details, input: inputName(reason) })),
  );
  const details = { error: { type: error.type, message: error.message, details: error.details }, node_errors: reasons.slice(0, 50) };
  const missingModel = reasons.find((r) => r.type === 'value_not_in_list' && r.input !== undefined && config.modelInputs.includes(r.input));
  if (missingModel) return capabilityMissing(config.service, `a model: ${String(missingModel.details ?? missingModel.message)}`, 'ModelMissing', details);
  const missingNode = missingNodeClass(error);
  if (missingNode) {
    const where = missingNode.node_id === undefined ? '' : ` (node ${missingNode.node_id})`;
    return capabilityMissing(config.service, `node class ${missingNode.class_type}${where}: ${error.message}`, 'CustomNodeMissing', { ...details, missing: missingNode });
  }
  const summary = reasons.length > 0 ? reasons.map((r) => `node ${r.node}: ${r.message}: ${String(r.details ?? '')}`).join('; ') : String(error.details ?? '');
  return new JobFailure('non_retryable', `${config.service}: invalid workflow: ${error.message}${summary ? ` (${summary.slice(0, 2_000)})` : ''}`, {
    type: 'InvalidWorkflow',
    details,
  });
}

/** What this worker lacks and another may have: the job goes back to the queue for it (kind `infrastructure`). */
function capabilityMissing(service: string, what: string, type: 'ModelMissing' | 'CustomNodeMissing', details: unknown): JobFailure {
  return new JobFailure('infrastructure', `${service}: this worker lacks ${what}`, { type, details });
}

/** 0.8.0 and older name an unknown class in the message only: `invalid_prompt`, "Cannot execute because node X does not exist." */
const UNKNOWN_NODE_MESSAGE = /^Cannot execute because node (.+) does not exist\.?$/s;

/**
 * The node class a rejection says this ComfyUI does not have, in either form:
 * newer builds answer `missing_node_type` with `extra_info.class_type`, 0.8.0
 * and older `invalid_prompt` with the class in the message; both put
 * "Node ID '#<id>'" in `details`. A node without any class_type (`class_type:
 * null`) is a broken workflow, not a missing capability.
 */
function missingNodeClass(error: { type: string; message: string; details?: unknown; extra_info?: Record<string, unknown> | null }): { class_type: string; node_id?: string } | undefined {
  let classType: string | undefined;
  if (error.type === 'missing_node_type') {
    const fromInfo = error.extra_info?.class_type;
    classType = typeof fromInfo === 'string' ? fromInfo : undefined;
  } else if (error.type === 'invalid_prompt') {
    classType = UNKNOWN_NODE_MESSAGE.exec(error.message)?.[1];
  }
  if (classType === undefined) return undefined;
  const fromInfo = error.extra_info?.node_id;
  const nodeId = typeof fromInfo === 'string' ? fromInfo : typeof error.details === 'string' ? /^Node ID '#(.+)'$/.exec(error.details)?.[1] : undefined;
  return { class_type: classType, ...(nodeId !== undefined && { node_id: nodeId }) };
}

function inputName(reason: { extra_info?: Record<string, unknown> | null; details?: unknown }): string | undefined {
  const fromInfo = reason.extra_info?.input_name;
  if (typeof fromInfo === 'string') return fromInfo;
  return typeof reason.details === 'string' ? /^([\w.]+):/.exec(reason.details)?.[1] : undefined;
}

/** torch's OutOfMemoryError (full type name in exception_type) or the CUDA / MPS wording. */
const OUT_OF_MEMORY = /OutOfMemoryError|out of memory|Allocation on device/i;

/** An exception in a node: out of memory may pass on a retry (elsewhere); anything else is the workflow's. */
export function classifyExecutionError(service: string, error: ExecutionError): JobFailure {
  const where = `node ${error.node_id ?? '?'}${error.node_type ? ` (${error.node_type})` : ''}`;
  const details = { node_id: error.node_id, node_type: error.node_type, exception_type: error.exception_type, exception_message: error.exception_message.slice(0, 2_000) };
  if (OUT_OF_MEMORY.test(error.exception_type) || OUT_OF_MEMORY.test(error.exception_message)) {
    return new JobFailure('retryable', `${service}: out of memory in ${where}: ${error.exception_message.trim()}`, { type: 'OutOfMemory', details });
  }
  return new JobFailure('non_retryable', `${service}: ${where} failed: ${error.exception_type}: ${error.exception_message.trim()}`, {
    type: 'ExecutionError',
    details,
  });
}

function describe(error: unknown): string {
  if (error instanceof Error) return errorCode(error) ?? error.message;
  return String(error);
}
