/**
 * A fake ComfyUI: a real HTTP + WebSocket server on loopback that speaks
 * ComfyUI's protocol as Comfy-Org/ComfyUI's server.py, execution.py and
 * main.py do (routes also under /api; message shapes and order: `status` on
 * connect, then per prompt `execution_start`, `execution_cached`, per node
 * `executing` / `progress` / `progress_state` / `executed`, then
 * `execution_success`, history written, then `executing {node: null}`;
 * `execution_error` to the client, `execution_interrupted` broadcast; binary
 * preview frames with a 4-byte big-endian event type).
 *
 * It knows a handful of node classes (CheckpointLoaderSimple validates
 * `ckpt_name` against its checkpoints, KSampler reports `steps` progress
 * steps, SaveImage / PreviewImage / SaveAnimatedWEBP write files that /view
 * serves), caches nodes whose inputs did not change, and has hooks for
 * failure modes: `failNext` (HTTP errors), `unknownNodeError` (which form a
 * missing node class is refused in), `hooks.beforeStep` (drop sockets,
 * send garbage, stall), `failNode` (an exception in a node).
 */
import { createHash, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { WebSocket, WebSocketServer } from 'ws';
import { FakeHttpServer, type FakeServerOptions, type RecordedRequest, sendJson } from './http-fake';

type Workflow = Record<string, { class_type: string; inputs: Record<string, unknown> }>;

export interface FakeComfyUIOptions extends FakeServerOptions {
  /** checkpoint files "on disk"; CheckpointLoaderSimple refuses any other (value_not_in_list) */
  checkpoints?: string[];
  /** time per sampler step */
  stepMs?: number;
  /** newer builds accept a client-chosen prompt_id; older ones ignore it and mint their own */
  acceptsPromptId?: boolean;
  /** older builds send no execution_success */
  sendsExecutionSuccess?: boolean;
  /** history is written this long after execution_success (and before `executing {node: null}`) */
  historyDelayMs?: number;
  /**
   * how an unknown node class is refused: `missing_node_type` (newer builds,
   * the class in `extra_info`) or `invalid_prompt` (0.8.0 and older: "Cannot
   * execute because node X does not exist.", the class in the message only)
   */
  unknownNodeError?: UnknownNodeError;
}

export type UnknownNodeError = 'missing_node_type' | 'invalid_prompt';

export interface StepInfo {
  promptId: string;
  node: string;
  step: number;
  steps: number;
}

interface QueuedPrompt {
  number: number;
  promptId: string;
  workflow: Workflow;
  extraData: Record<string, unknown>;
  outputs: string[];
}

interface FileRef {
  filename: string;
  subfolder: string;
  type: 'output' | 'temp';
}

const OUTPUT_NODES = new Set(['SaveImage', 'PreviewImage', 'SaveAnimatedWEBP']);
const KNOWN_NODES = new Set(['CheckpointLoaderSimple', 'CLIPTextEncode', 'EmptyLatentImage', 'KSampler', 'VAEDecode', ...OUTPUT_NODES]);

export class FakeComfyUI {
  readonly http: FakeHttpServer;
  readonly checkpoints: string[];
  stepMs: number;
  acceptsPromptId: boolean;
  sendsExecutionSuccess: boolean;
  historyDelayMs: number;
  unknownNodeError: UnknownNodeError;
  readonly hooks: { beforeStep?: (info: StepInfo) => Promise<void> | void } = {};

  /** every text message sent, with the client it went to (undefined: broadcast) */
  readonly sent: Array<{ clientId: string | undefined; type: string; data: unknown }> = [];
  readonly history = new Map<string, Record<string, unknown>>();
  readonly files = new Map<string, { data: Buffer; contentType: string }>();

  private readonly wss = new WebSocketServer({ noServer: true });
  private readonly sockets = new Map<string, WebSocket>();
  private readonly queue: QueuedPrompt[] = [];
  private running: QueuedPrompt | undefined;
  private interruptFlag = false;
  private number = 0;
  private fileCounter = 0;
  private lastNodeId: string | undefined;
  private runningClient: string | undefined;
  /** node signature -> the ui output it produced (nodes whose inputs did not change are cached) */
  private readonly cache = new Map<string, Record<string, unknown> | null>();
  private readonly failures = new Map<string, { exception_type: string; exception_message: string }>();
  private pump: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(options: FakeComfyUIOptions = {}) {
    this.checkpoints = options.checkpoints ?? ['sd_xl_base_1.0.safetensors'];
    this.stepMs = options.stepMs ?? 5;
    this.acceptsPromptId = options.acceptsPromptId ?? true;
    this.sendsExecutionSuccess = options.sendsExecutionSuccess ?? true;
    this.historyDelayMs = options.historyDelayMs ?? 0;
    this.unknownNodeError = options.unknownNodeError ?? 'missing_node_type';
    this.http = new FakeHttpServer(options, (request, response) => this.route(request, response));
    this.http.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
  }

  static async start(options: FakeComfyUIOptions = {}): Promise<FakeComfyUI> {
    const fake = new FakeComfyUI(options);
    await fake.http.listen();
    return fake;
  }

  get url(): string {
    return this.http.url;
  }

  get requests(): RecordedRequest[] {
    return this.http.requests;
  }

  requestsTo(path: string): RecordedRequest[] {
    return this.http.requestsTo(path);
  }

  /** Answers the next request to `path` with an error instead (see FakeHttpServer.failNext). */
  failNext(path: string, status: number, body?: unknown, count?: number): void {
    this.http.failNext(path, status, body, count);
  }

  /** The next execution of a node of `classType` raises this exception. */
  failNode(classType: string, exception: { exception_type: string; exception_message: string }): void {
    this.failures.set(classType, exception);
  }

  /** Drops every WebSocket connection without a close handshake (a network blip). */
  terminateSockets(): void {
    for (const socket of this.sockets.values()) socket.terminate();
  }

  /** Sends a raw text frame to every client (for malformed-message tests). */
  sendRaw(text: string | Buffer): void {
    for (const socket of this.sockets.values()) socket.send(text);
  }

  /** The bytes /view serves for a file. */
  file(ref: { filename: string; subfolder?: string; type?: string }): Buffer | undefined {
    return this.files.get(fileKey(ref.type ?? 'output', ref.subfolder ?? '', ref.filename))?.data;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.interruptFlag = true;
    for (const socket of this.sockets.values()) socket.terminate();
    this.wss.close();
    await this.http.close();
    await this.pump.catch(() => undefined);
  }

  // ------------------------------------------------------------------ HTTP

  private async route(request: RecordedRequest, res: ServerResponse): Promise<void> {
    const path = request.path.startsWith('/api/') ? request.path.slice(4) : request.path;
    if (request.method === 'POST' && path === '/prompt') return this.postPrompt(request.body, res);
    if (request.method === 'GET' && path.startsWith('/history/')) {
      const id = decodeURIComponent(path.slice('/history/'.length));
      const entry = this.history.get(id);
      return sendJson(res, 200, entry ? { [id]: entry } : {});
    }
    if (request.method === 'GET' && path === '/history') return sendJson(res, 200, Object.fromEntries(this.history));
    if (request.method === 'GET' && path === '/queue') {
      const row = (p: QueuedPrompt) => [p.number, p.promptId, p.workflow, p.extraData, p.outputs];
      return sendJson(res, 200, { queue_running: this.running ? [row(this.running)] : [], queue_pending: this.queue.map(row) });
    }
    if (request.method === 'POST' && path === '/queue') {
      const body = (request.body ?? {}) as { delete?: string[]; clear?: boolean };
      if (body.clear) this.queue.splice(0);
      for (const id of body.delete ?? []) {
        const index = this.queue.findIndex((p) => p.promptId === id);
        if (index >= 0) this.queue.splice(index, 1);
      }
      res.writeHead(200).end();
      return;
    }
    if (request.method === 'POST' && path === '/interrupt') {
      const id = (request.body as { prompt_id?: string } | undefined)?.prompt_id;
      if (!id || this.running?.promptId === id) this.interruptFlag = true;
      res.writeHead(200).end();
      return;
    }
    if (request.method === 'GET' && path === '/view') {
      const { filename, subfolder = '', type = 'output' } = request.query;
      const file = filename ? this.files.get(fileKey(type, subfolder, filename)) : undefined;
      if (!file) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': file.contentType, 'content-disposition': `filename="${filename}"` });
      res.end(file.data);
      return;
    }
    if (request.method === 'GET' && path === '/system_stats') {
      return sendJson(res, 200, { system: { os: 'linux', comfyui_version: 'fake' }, devices: [{ name: 'fake', type: 'cuda', vram_total: 1, vram_free: 1 }] });
    }
    res.writeHead(404).end();
  }

  private postPrompt(body: unknown, res: ServerResponse): void {
    const json = (body ?? {}) as { prompt?: Workflow; client_id?: string; prompt_id?: string | null; extra_data?: Record<string, unknown> };
    if (!json.prompt || typeof json.prompt !== 'object') {
      return sendJson(res, 400, { error: { type: 'no_prompt', message: 'No prompt provided', details: 'No prompt provided', extra_info: {} }, node_errors: {} });
    }
    let promptId: string = randomUUID();
    if (this.acceptsPromptId && json.prompt_id != null) {
      if (typeof json.prompt_id !== 'string' || !isCanonicalUuid(json.prompt_id)) {
        const error = {
          type: 'invalid_prompt_id',
          message: 'prompt_id must be a valid UUID',
          details: 'prompt_id must be a UUID string in canonical lowercase hyphenated form; omit it to let the server generate one',
          extra_info: {},
        };
        return sendJson(res, 400, { error, node_errors: {} });
      }
      promptId = json.prompt_id;
    }
    const workflow = json.prompt;
    const validation = this.validate(workflow);
    if ('error' in validation) return sendJson(res, 400, validation);
    // the top-level client_id (the socket to tell) wins over one inside extra_data
    const extraData: Record<string, unknown> = { ...json.extra_data };
    if (json.client_id) extraData.client_id = json.client_id;
    const number = this.number++;
    this.queue.push({ number, promptId, workflow, extraData, outputs: validation.outputs });
    sendJson(res, 200, { prompt_id: promptId, number, node_errors: {} });
    this.broadcastStatus();
    this.pump = this.pump.then(() => this.drain());
  }

  /** A subset of execution.validate_prompt (server.py answers its error with 400 `{error, node_errors}`): unknown classes, missing outputs, combo values, bounds. */
  private validate(workflow: Workflow): { outputs: string[] } | { error: unknown; node_errors: Record<string, unknown> } {
    const outputs: string[] = [];
    for (const [id, node] of Object.entries(workflow)) {
      if (!node || typeof node.class_type !== 'string' || !KNOWN_NODES.has(node.class_type)) return { error: this.unknownNode(id, node), node_errors: {} };
      if (OUTPUT_NODES.has(node.class_type)) outputs.push(id);
    }
    if (outputs.length === 0) {
      return { error: { type: 'prompt_no_outputs', message: 'Prompt has no outputs', details: '', extra_info: {} }, node_errors: {} };
    }
    const nodeErrors: Record<string, { errors: unknown[]; dependent_outputs: string[]; class_type: string }> = {};
    for (const [id, node] of Object.entries(workflow)) {
      const errors: unknown[] = [];
      const inputs = node.inputs ?? {};
      if (node.class_type === 'CheckpointLoaderSimple' && !this.checkpoints.includes(String(inputs.ckpt_name))) {
        errors.push({
          type: 'value_not_in_list',
          message: 'Value not in list',
          details: `ckpt_name: '${String(inputs.ckpt_name)}' not in ${JSON.stringify(this.checkpoints)}`,
          extra_info: { input_name: 'ckpt_name', input_config: [this.checkpoints], received_value: inputs.ckpt_name },
        });
      }
      if (node.class_type === 'KSampler' && inputs.steps !== undefined) {
        const steps = Number(inputs.steps);
        if (!Number.isInteger(steps)) {
          errors.push({ type: 'invalid_input_type', message: 'Failed to convert an input value to a INT value', details: `steps, ${String(inputs.steps)}`, extra_info: { input_name: 'steps' } });
        } else if (steps > 10_000 || steps < 1) {
          errors.push({ type: steps < 1 ? 'value_smaller_than_min' : 'value_bigger_than_max', message: `Value ${steps} out of range`, details: 'steps', extra_info: { input_name: 'steps', received_value: steps } });
        }
      }
      if (errors.length > 0) nodeErrors[id] = { errors, dependent_outputs: outputs, class_type: node.class_type };
    }
    if (Object.keys(nodeErrors).length > 0) {
      const details = Object.values(nodeErrors)
        .flatMap((n) => n.errors as Array<{ message: string; details: string }>)
        .map((e) => `${e.message}: ${e.details}`)
        .join('\n');
      return { error: { type: 'prompt_outputs_failed_validation', message: 'Prompt outputs failed validation', details, extra_info: {} }, node_errors: nodeErrors };
    }
    return { outputs };
  }

  /** The prompt-level error for a node whose class is not installed (or that has none), in this build's form. */
  private unknownNode(id: string, node: Workflow[string] | undefined): Record<string, unknown> {
    const classType = typeof node?.class_type === 'string' ? node.class_type : undefined;
    const details = `Node ID '#${id}'`;
    if (this.unknownNodeError === 'invalid_prompt') {
      const message = classType === undefined ? 'Cannot execute because a node is missing the class_type property.' : `Cannot execute because node ${classType} does not exist.`;
      return { type: 'invalid_prompt', message, details, extra_info: {} };
    }
    const title = (node as { _meta?: { title?: string } } | undefined)?._meta?.title;
    if (classType === undefined) {
      return {
        type: 'missing_node_type',
        message: `Node '${title ?? `ID #${id}`}' has no class_type. The workflow may be corrupted or a custom node is missing.`,
        details,
        extra_info: { node_id: id, class_type: null, node_title: title ?? null },
      };
    }
    return {
      type: 'missing_node_type',
      message: `Node '${title ?? classType}' not found. The custom node may not be installed.`,
      details,
      extra_info: { node_id: id, class_type: classType, node_title: title ?? classType },
    };
  }

  // ------------------------------------------------------------------ WebSocket

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    if (url.pathname !== '/ws' && url.pathname !== '/api/ws') {
      socket.destroy();
      return;
    }
    if (!this.http.authorised(req)) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const sid = url.searchParams.get('clientId') || randomUUID().replace(/-/g, '');
      this.sockets.set(sid, ws);
      ws.on('close', () => {
        if (this.sockets.get(sid) === ws) this.sockets.delete(sid);
      });
      ws.on('error', () => undefined);
      this.send('status', { status: this.queueInfo(), sid }, sid);
      // as server.py does: a reconnecting client that runs the current prompt learns the node
      if (this.runningClient === sid && this.lastNodeId !== undefined) this.send('executing', { node: this.lastNodeId }, sid);
    });
  }

  private queueInfo(): { exec_info: { queue_remaining: number } } {
    return { exec_info: { queue_remaining: this.queue.length + (this.running ? 1 : 0) } };
  }

  private broadcastStatus(): void {
    this.send('status', { status: this.queueInfo() }, undefined);
  }

  /** To one client (sid) or, without one, to all, like PromptServer.send_json. */
  private send(type: string, data: unknown, sid: string | undefined): void {
    this.sent.push({ clientId: sid, type, data });
    const text = JSON.stringify({ type, data });
    const targets = sid === undefined ? [...this.sockets.values()] : [this.sockets.get(sid)].filter((s): s is WebSocket => s !== undefined);
    for (const ws of targets) if (ws.readyState === WebSocket.OPEN) ws.send(text);
  }

  private sendBinary(eventType: number, payload: Buffer, sid: string | undefined): void {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(eventType);
    const ws = sid === undefined ? undefined : this.sockets.get(sid);
    if (ws?.readyState === WebSocket.OPEN) ws.send(Buffer.concat([header, payload]));
  }

  // ------------------------------------------------------------------ execution

  private async drain(): Promise<void> {
    for (let prompt = this.queue.shift(); prompt && !this.closed; prompt = this.queue.shift()) {
      this.running = prompt;
      try {
        await this.execute(prompt);
      } finally {
        this.running = undefined;
        this.runningClient = undefined;
        this.lastNodeId = undefined;
        this.broadcastStatus();
      }
    }
  }

  private async execute(prompt: QueuedPrompt): Promise<void> {
    const { promptId, workflow } = prompt;
    const sid = typeof prompt.extraData.client_id === 'string' ? prompt.extraData.client_id : undefined;
    this.runningClient = sid;
    this.interruptFlag = false;
    const messages: Array<[string, unknown]> = [];
    // like PromptExecutor.add_message: kept for history, sent only when the prompt has a client (or broadcast)
    const addMessage = (type: string, data: Record<string, unknown>, broadcast: boolean) => {
      const stamped = { ...data, timestamp: Date.now() };
      messages.push([type, stamped]);
      if (sid !== undefined || broadcast) this.send(type, stamped, sid);
    };
    const toClient = (type: string, data: unknown) => {
      if (sid !== undefined) this.send(type, data, sid);
    };

    addMessage('execution_start', { prompt_id: promptId }, false);
    const order = executionOrder(workflow, prompt.outputs);
    const signatures = new Map(order.map((id) => [id, signature(workflow, id)]));
    const cached = order.filter((id) => this.cache.has(signatures.get(id)!));
    addMessage('execution_cached', { nodes: cached, prompt_id: promptId }, false);

    const outputs: Record<string, Record<string, unknown>> = {};
    const executed: string[] = [];
    const states: Record<string, { value: number; max: number; state: string }> = {};
    const sendProgressState = () => {
      const nodes = Object.fromEntries(
        Object.entries(states).map(([id, s]) => [id, { ...s, node_id: id, prompt_id: promptId, display_node_id: id, parent_node_id: null, real_node_id: id }]),
      );
      toClient('progress_state', { prompt_id: promptId, nodes });
    };
    let failed = false;
    for (const id of order) {
      const node = workflow[id]!;
      const sig = signatures.get(id)!;
      if (this.cache.has(sig)) {
        const ui = this.cache.get(sig);
        if (ui) outputs[id] = ui; // cached output nodes send no `executed`, but their outputs are in history
        continue;
      }
      this.lastNodeId = id;
      states[id] = { value: 0, max: 1, state: 'running' };
      sendProgressState();
      toClient('executing', { node: id, display_node: id, prompt_id: promptId });

      const failure = this.failures.get(node.class_type);
      let interrupted = this.interruptFlag;
      if (!interrupted && node.class_type === 'KSampler') {
        const steps = Number(node.inputs.steps ?? 20);
        for (let step = 1; step <= steps; step++) {
          await this.hooks.beforeStep?.({ promptId, node: id, step, steps });
          await sleep(this.stepMs);
          if (this.interruptFlag) {
            interrupted = true;
            break;
          }
          states[id] = { value: step, max: steps, state: 'running' };
          toClient('progress', { value: step, max: steps, prompt_id: promptId, node: id });
          sendProgressState();
          // a JPEG preview: event 1, then a 4-byte image format code (1 = JPEG), then the image
          this.sendBinary(1, Buffer.concat([u32(1), Buffer.from(`preview ${step}`)]), sid);
        }
      }
      if (interrupted || this.interruptFlag) {
        addMessage('execution_interrupted', { prompt_id: promptId, node_id: id, node_type: node.class_type, executed }, true);
        failed = true;
        break;
      }
      if (failure) {
        this.failures.delete(node.class_type);
        addMessage(
          'execution_error',
          {
            prompt_id: promptId,
            node_id: id,
            node_type: node.class_type,
            executed,
            exception_message: failure.exception_message,
            exception_type: failure.exception_type,
            traceback: ['  File "execution.py", line 1, in execute\n'],
            current_inputs: {},
            current_outputs: executed,
          },
          false,
        );
        failed = true;
        break;
      }
      const ui = this.produce(node, id, promptId);
      if (ui) {
        outputs[id] = ui;
        toClient('executed', { node: id, display_node: id, output: ui, prompt_id: promptId });
      }
      this.cache.set(sig, ui ?? null);
      states[id] = { value: 1, max: 1, state: 'finished' };
      sendProgressState();
      executed.push(id);
    }
    if (!failed && this.sendsExecutionSuccess) addMessage('execution_success', { prompt_id: promptId }, false);
    // the trap: execution_success arrives before the history entry is written
    if (this.historyDelayMs > 0) await sleep(this.historyDelayMs);
    this.history.set(promptId, {
      prompt: [prompt.number, promptId, workflow, prompt.extraData, prompt.outputs],
      outputs,
      status: { status_str: failed ? 'error' : 'success', completed: !failed, messages },
      meta: Object.fromEntries(Object.keys(outputs).map((id) => [id, { node_id: id, display_node: id, parent_node: null, real_node_id: id }])),
    });
    toClient('executing', { node: null, prompt_id: promptId });
  }

  /** Runs an output node: writes its files and returns its ui output. */
  private produce(node: { class_type: string; inputs: Record<string, unknown> }, id: string, promptId: string): Record<string, unknown> | undefined {
    if (!OUTPUT_NODES.has(node.class_type)) return undefined;
    const temp = node.class_type === 'PreviewImage';
    const animated = node.class_type === 'SaveAnimatedWEBP';
    const prefix = temp ? 'ComfyUI_temp' : String(node.inputs.filename_prefix ?? 'ComfyUI');
    const extension = animated ? 'webp' : 'png';
    const filename = `${prefix}_${String(++this.fileCounter).padStart(5, '0')}_.${extension}`;
    const ref: FileRef = { filename, subfolder: '', type: temp ? 'temp' : 'output' };
    const seed = createHash('sha256').update(`${promptId}:${id}:${filename}`).digest();
    const signatureBytes = animated ? Buffer.from('RIFF\0\0\0\0WEBP') : Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const data = Buffer.concat([signatureBytes, ...Array.from({ length: 64 }, () => seed)]);
    this.files.set(fileKey(ref.type, ref.subfolder, ref.filename), { data, contentType: animated ? 'image/webp' : 'image/png' });
    return animated ? { images: [ref], animated: [true] } : { images: [ref] };
  }
}

function fileKey(type: string, subfolder: string, filename: string): string {
  return `${type}/${subfolder}/${filename}`;
}

function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32BE(value);
  return buffer;
}

function isCanonicalUuid(id: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id);
}

function isLink(value: unknown): value is [string, number] {
  return Array.isArray(value) && value.length === 2 && typeof value[1] === 'number';
}

/** Dependencies before dependants, reachable from the output nodes only (as ComfyUI runs them). */
function executionOrder(workflow: Workflow, outputs: string[]): string[] {
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (id: string) => {
    if (seen.has(id) || !workflow[id]) return;
    seen.add(id);
    for (const value of Object.values(workflow[id].inputs ?? {})) if (isLink(value)) visit(String(value[0]));
    order.push(id);
  };
  for (const id of outputs) visit(id);
  return order;
}

/** A node's cache key: its class, its inputs and, recursively, those of what it links to. */
function signature(workflow: Workflow, id: string, depth = 0): string {
  const node = workflow[id];
  if (!node || depth > 100) return 'missing';
  const inputs = Object.entries(node.inputs ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, value]) => [name, isLink(value) ? signature(workflow, String(value[0]), depth + 1) : value]);
  return createHash('sha256').update(JSON.stringify([node.class_type, inputs])).digest('hex');
}
