/**
 * A fake asynchronous REST service shaped like RunPod's serverless API:
 * `POST /run {input}` -> `{id, status: "IN_QUEUE"}`, `GET /status/{id}` ->
 * `{id, status, delayTime, executionTime, progress?, output?, error?}` with
 * status IN_QUEUE -> IN_PROGRESS -> COMPLETED | FAILED | CANCELLED, and
 * `POST /cancel/{id}`. A job's input sets its run: `steps` (each `stepMs`
 * long), `fail` (an error message). Its output echoes the input. `progress`
 * (0..1) is this fake's addition, to exercise a progress pointer.
 */
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { FakeService, type FakeServerOptions, type RecordedRequest, sendJson } from './http-fake';

export interface FakeHttpServiceOptions extends FakeServerOptions {
  stepMs?: number;
  queueMs?: number;
}

interface RemoteJob {
  id: string;
  input: Record<string, unknown>;
  submittedAt: number;
  canceled: boolean;
}

export class FakeHttpService extends FakeService {
  readonly jobs = new Map<string, RemoteJob>();
  stepMs: number;
  queueMs: number;
  /** answer status polls with this body instead (a broken service) */
  statusOverride: unknown;

  constructor(options: FakeHttpServiceOptions = {}) {
    super(options);
    this.stepMs = options.stepMs ?? 20;
    this.queueMs = options.queueMs ?? 30;
  }

  static async start(options: FakeHttpServiceOptions = {}): Promise<FakeHttpService> {
    const fake = new FakeHttpService(options);
    await fake.http.listen();
    return fake;
  }

  protected route(request: RecordedRequest, res: ServerResponse): void {
    if (request.method === 'POST' && request.path === '/run') {
      const body = request.body as { input?: Record<string, unknown> } | undefined;
      if (!body || typeof body.input !== 'object' || body.input === null) return sendJson(res, 400, { error: 'input is required' });
      const job: RemoteJob = { id: randomUUID(), input: body.input, submittedAt: Date.now(), canceled: false };
      this.jobs.set(job.id, job);
      return sendJson(res, 200, { id: job.id, status: 'IN_QUEUE' });
    }
    const status = /^\/status\/(.+)$/.exec(request.path);
    if (request.method === 'GET' && status) {
      if (this.statusOverride !== undefined) return sendJson(res, 200, this.statusOverride);
      const job = this.jobs.get(decodeURIComponent(status[1]!));
      return job ? sendJson(res, 200, this.view(job)) : sendJson(res, 404, { error: 'job not found' });
    }
    const cancel = /^\/cancel\/(.+)$/.exec(request.path);
    if (request.method === 'POST' && cancel) {
      const job = this.jobs.get(decodeURIComponent(cancel[1]!));
      if (!job) return sendJson(res, 404, { error: 'job not found' });
      job.canceled = true;
      return sendJson(res, 200, { id: job.id, status: 'CANCELLED' });
    }
    sendJson(res, 404, { error: 'not found' });
  }

  private view(job: RemoteJob): Record<string, unknown> {
    const steps = Number(job.input.steps ?? 5);
    const elapsed = Date.now() - job.submittedAt;
    const base = { id: job.id, delayTime: Math.min(elapsed, this.queueMs) };
    if (job.canceled) return { ...base, status: 'CANCELLED' };
    if (elapsed < this.queueMs) return { ...base, status: 'IN_QUEUE' };
    const running = elapsed - this.queueMs;
    const done = Math.min(steps, Math.floor(running / this.stepMs));
    if (typeof job.input.fail === 'string' && done >= Math.ceil(steps / 2)) {
      return { ...base, status: 'FAILED', executionTime: running, error: job.input.fail };
    }
    if (done < steps) return { ...base, status: 'IN_PROGRESS', progress: done / steps };
    return { ...base, status: 'COMPLETED', executionTime: running, progress: 1, output: { echo: job.input } };
  }
}
