/**
 * A fake Ollama (port 11434 in real life): the routes and NDJSON shapes of
 * ollama's api/types.go and server routes. `GET /api/tags` lists models on
 * disk (`{models: [{name, model, modified_at, size, digest, details}]}`);
 * `POST /api/pull` streams `{status}` / `{status, digest, total, completed}`
 * lines and `success`, or an `{error}` line; `POST /api/chat` and
 * `/api/generate` stream `{model, created_at, message|response, done: false}`
 * chunks and a final `{done: true, done_reason, total_duration,
 * load_duration, prompt_eval_count, eval_count, ...}` (durations in ns); a
 * model not on disk is a 404 `{error: "model \"x\" not found, try pulling it
 * first"}`. A model's first use after it was pulled loads it (a large
 * `load_duration`). A generate request with no prompt only loads the model
 * and answers one `{model, created_at, response: "", done: true, done_reason:
 * "load"}` (server/routes.go, GenerateHandler), recorded in `loads`.
 */
import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { FakeService, type FakeServerOptions, type RecordedRequest, sendJson } from './http-fake';

export interface FakeOllamaOptions extends FakeServerOptions {
  /** models on disk */
  models?: string[];
  /** models the registry has, with their layer sizes (bytes) */
  registry?: Record<string, number[]>;
  chunkDelayMs?: number;
  /** bytes per pull progress line */
  pullChunkBytes?: number;
}

export class FakeOllama extends FakeService {
  readonly onDisk: Set<string>;
  readonly registry: Record<string, number[]>;
  readonly loaded = new Set<string>();
  chunkDelayMs: number;
  pullChunkBytes: number;
  /** a pull fails with an `{error}` line after this many progress lines */
  pullFailsAfter: number | undefined;
  /** generation sends an `{error}` line after this many chunks */
  generationFailsAfter: number | undefined;
  readonly abandoned: RecordedRequest[] = [];
  /** models loaded by a generate request without a prompt, in order */
  readonly loads: string[] = [];

  constructor(options: FakeOllamaOptions = {}) {
    super(options);
    this.onDisk = new Set((options.models ?? ['llama3.2:latest']).map(canonical));
    this.registry = options.registry ?? { 'llama3.2:latest': [2_000_000_000, 7_000, 6_000], 'qwen3:0.6b': [500_000_000, 1_000] };
    this.chunkDelayMs = options.chunkDelayMs ?? 2;
    this.pullChunkBytes = options.pullChunkBytes ?? 250_000_000;
  }

  static async start(options: FakeOllamaOptions = {}): Promise<FakeOllama> {
    const fake = new FakeOllama(options);
    await fake.http.listen();
    return fake;
  }

  protected async route(request: RecordedRequest, res: ServerResponse): Promise<void> {
    const body = (request.body ?? {}) as Record<string, unknown>;
    if (request.method === 'GET' && request.path === '/api/tags') {
      return sendJson(res, 200, {
        models: [...this.onDisk].map((name) => ({
          name,
          model: name,
          modified_at: new Date(0).toISOString(),
          size: (this.registry[name] ?? [1]).reduce((a, b) => a + b, 0),
          digest: 'sha256:' + '0'.repeat(64),
          details: { format: 'gguf', family: 'llama', families: ['llama'], parameter_size: '3.2B', quantization_level: 'Q4_K_M' },
        })),
      });
    }
    if (request.method === 'POST' && request.path === '/api/pull') return this.pull(canonical(String(body.model ?? body.name ?? '')), res);
    if (request.method === 'POST' && (request.path === '/api/chat' || request.path === '/api/generate')) {
      return this.generate(request, request.path === '/api/chat', body, res);
    }
    sendJson(res, 404, { error: 'not found' });
  }

  private async pull(model: string, res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    const line = (value: unknown) => res.write(`${JSON.stringify(value)}\n`);
    line({ status: 'pulling manifest' });
    const layers = this.registry[model];
    if (!layers) {
      line({ error: 'pull model manifest: file does not exist' });
      res.end();
      return;
    }
    let lines = 0;
    for (const [index, total] of layers.entries()) {
      const digest = `sha256:${String(index).repeat(64).slice(0, 64)}`;
      for (let completed = 0; ; completed = Math.min(total, completed + this.pullChunkBytes)) {
        if (this.pullFailsAfter !== undefined && lines++ >= this.pullFailsAfter) {
          line({ error: 'max retries exceeded: connection reset by peer' });
          res.end();
          return;
        }
        await sleep(this.chunkDelayMs);
        // the first line of a layer carries no `completed` (omitempty at 0)
        line(completed === 0 ? { status: `pulling ${digest.slice(7, 19)}`, digest, total } : { status: `pulling ${digest.slice(7, 19)}`, digest, total, completed });
        if (completed >= total) break;
      }
    }
    line({ status: 'verifying sha256 digest' });
    line({ status: 'writing manifest' });
    this.onDisk.add(model);
    line({ status: 'success' });
    res.end();
  }

  private async generate(request: RecordedRequest, chat: boolean, body: Record<string, unknown>, res: ServerResponse): Promise<void> {
    const model = canonical(String(body.model ?? ''));
    if (!this.onDisk.has(model)) return sendJson(res, 404, { error: `model "${String(body.model)}" not found, try pulling it first` });
    if (!chat && (body.prompt === undefined || body.prompt === '')) {
      this.loaded.add(model);
      this.loads.push(model);
      return sendJson(res, 200, { model: String(body.model), created_at: new Date().toISOString(), response: '', done: true, done_reason: 'load' });
    }
    const messages = (body.messages ?? []) as Array<{ role: string; content: string }>;
    const input = chat ? ([...messages].reverse().find((m) => m.role === 'user')?.content ?? '') : String(body.prompt ?? '');
    const words = `Echo: ${input}`.split(/(?<= )/);
    const cold = !this.loaded.has(model);
    this.loaded.add(model);
    let finished = false;
    res.once('close', () => {
      if (!finished) this.abandoned.push(request);
    });
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    const createdAt = () => new Date().toISOString();
    for (const [index, word] of words.entries()) {
      if (res.destroyed) return;
      if (this.generationFailsAfter !== undefined && index === this.generationFailsAfter) {
        res.end(`${JSON.stringify({ error: 'llama runner process has terminated: signal: killed' })}\n`);
        finished = true;
        return;
      }
      await sleep(this.chunkDelayMs);
      const piece = chat ? { message: { role: 'assistant', content: word } } : { response: word };
      res.write(`${JSON.stringify({ model: String(body.model), created_at: createdAt(), ...piece, done: false })}\n`);
    }
    const loadNs = cold ? 2_500_000_000 : 20_000_000;
    const final = {
      model: String(body.model),
      created_at: createdAt(),
      ...(chat ? { message: { role: 'assistant', content: '' } } : { response: '' }),
      done: true,
      done_reason: 'stop',
      total_duration: loadNs + 500_000_000,
      load_duration: loadNs,
      prompt_eval_count: input.split(/\s+/).length,
      prompt_eval_duration: 100_000_000,
      eval_count: words.length,
      eval_duration: 400_000_000,
    };
    res.end(`${JSON.stringify(final)}\n`);
    finished = true;
  }
}

/** Ollama's names default the tag to `latest`. */
export function canonical(model: string): string {
  return model.includes(':') ? model : `${model}:latest`;
}
