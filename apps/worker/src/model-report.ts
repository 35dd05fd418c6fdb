import { MAX_REPORTED_MODELS, type ModelProvider, type WorkerModelsInput } from '@emp/core';
import type { Logger } from 'pino';

/** Least time between two reports: a busy worker changes its models often, the broker needs them only roughly. */
export const MODEL_REPORT_MIN_INTERVAL_MS = 1_000;
/**
 * A report again after this long even when nothing changed: a worker that fell
 * silent is shown offline and its models forgotten; once it speaks again this
 * brings them back.
 */
export const MODEL_REPORT_REFRESH_MS = 60_000;

export interface ModelReporterOptions {
  /** sends one report (Broker.reportModels for this worker) */
  send(models: WorkerModelsInput): Promise<unknown>;
  /** the machine's model cache, when the worker has one: what is on disk and downloading */
  provider?: ModelProvider;
  /** how many of the models of its last jobs the worker counts as loaded in its service's memory */
  warmModels: number;
  logger: Logger;
}

/**
 * What a worker tells the broker about the models it holds (docs/broker.md,
 * "Model affinity"): `loaded` is an approximation of what its service keeps in
 * memory, the models of the jobs it last completed (an LRU of `warmModels`);
 * `on_disk` and `downloading` come from the machine's model cache where the
 * provider can list it, else from what this worker ensured and is ensuring.
 * Reports go out after a change, at most once per MODEL_REPORT_MIN_INTERVAL_MS,
 * and every MODEL_REPORT_REFRESH_MS; they never hold up a claim, and a failed
 * one is only logged (the next change or refresh sends the state again).
 */
export class ModelReporter {
  /** most recently used last */
  private readonly loaded: string[] = [];
  private readonly ensured = new Set<string>();
  private readonly ensuring = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private refresh: NodeJS.Timeout | undefined;
  private sending: Promise<void> | undefined;
  private again = false;
  private lastSentAt = -Infinity;
  private sentAny = false;
  private stopped = false;

  constructor(private readonly options: ModelReporterOptions) {}

  /** Starts the periodic refresh and sends the first report (the worker has just registered). */
  start(): void {
    this.stopped = false;
    this.refresh = setInterval(() => this.changed(), MODEL_REPORT_REFRESH_MS);
    this.refresh.unref();
    this.changed();
  }

  /** Sends the state again soon, as after registering anew. */
  changed(): void {
    if (this.stopped) return;
    if (this.sending) {
      this.again = true;
      return;
    }
    if (this.timer) return;
    const wait = Math.max(0, this.lastSentAt + MODEL_REPORT_MIN_INTERVAL_MS - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.sending = this.send().finally(() => {
        this.sending = undefined;
        if (this.again) {
          this.again = false;
          this.changed();
        }
      });
    }, wait);
    this.timer.unref();
  }

  /** A job's models are being made ready on disk (until `ensureEnded`). */
  ensureStarted(models: readonly string[]): void {
    for (const m of models) this.ensuring.set(m, (this.ensuring.get(m) ?? 0) + 1);
    this.changed();
  }

  ensureEnded(models: readonly string[], ok: boolean): void {
    for (const m of models) {
      const left = (this.ensuring.get(m) ?? 1) - 1;
      if (left > 0) this.ensuring.set(m, left);
      else this.ensuring.delete(m);
      if (ok) this.ensured.add(m);
    }
    this.changed();
  }

  /** A job naming these models completed: its service has them in memory now. */
  used(models: readonly string[]): void {
    if (this.options.warmModels <= 0 || models.length === 0) return;
    for (const m of models) {
      const at = this.loaded.indexOf(m);
      if (at >= 0) this.loaded.splice(at, 1);
      this.loaded.push(m);
    }
    if (this.loaded.length > this.options.warmModels) this.loaded.splice(0, this.loaded.length - this.options.warmModels);
    this.changed();
  }

  /** The report as it would go out now. */
  async report(): Promise<{ loaded: string[]; on_disk: string[]; downloading: string[] }> {
    const loaded = [...this.loaded].reverse();
    let held = { on_disk: [...this.ensured], downloading: [...this.ensuring.keys()] };
    if (this.options.provider?.list) {
      try {
        held = await this.options.provider.list();
      } catch (error) {
        this.options.logger.debug({ err: error }, 'the model cache could not be listed; reporting the models this worker ensured');
      }
    }
    // each model once, in the best list it is in; the broker takes MAX_REPORTED_MODELS at most:
    // loaded ones first, then downloads, then the rest of the disk
    const named = new Set<string>();
    const take = (list: readonly string[]) => list.filter((m) => !named.has(m) && named.size < MAX_REPORTED_MODELS && named.add(m));
    const first = take(loaded);
    const downloading = take(held.downloading);
    return { loaded: first, downloading, on_disk: take(held.on_disk) };
  }

  /** Stops reporting, once a report on its way has landed (the worker then goes offline, which drops its models at the broker). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.refresh);
    this.timer = this.refresh = undefined;
    await this.sending;
  }

  private async send(): Promise<void> {
    this.lastSentAt = Date.now();
    try {
      const models = await this.report();
      const empty = models.loaded.length + models.on_disk.length + models.downloading.length === 0;
      // a worker that never held a model has nothing to say
      if (empty && !this.sentAny) return;
      if (this.stopped) return;
      await this.options.send(models);
      this.sentAny = true;
    } catch (error) {
      this.options.logger.warn({ err: error }, 'reporting the models this worker holds failed; the next change or refresh sends them again');
    }
  }
}
