import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdir, rename, rm, stat, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type Context, ModelError, type ModelProgress, parseWith, endSpan, TRACING_OFF, type Tracing } from '@emp/core';
import { type Logger, pino } from 'pino';
import { z } from 'zod';
import { type MachineConfig, ModelSpec } from '../config';
import { type IndexEntry, ModelFileName, loadIndex, modelPath, saveIndex } from './cache-index';
import { downloadToPart } from './download';

type Spec = z.output<typeof ModelSpec>;

const Catalog = z.array(ModelSpec.extend({ name: ModelFileName })).superRefine((specs, ctx) => {
  const seen = new Set<string>();
  specs.forEach((spec, i) => {
    if (seen.has(spec.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `model ${spec.name} is listed twice` });
    seen.add(spec.name);
  });
});

export interface ModelCacheOptions {
  /** where models live: `<dir>/<folder>/<name>` */
  dir: string;
  /** the most bytes the models together may take */
  budgetBytes: number;
  /** the models this machine may download (config `models`) */
  catalog: ReadonlyArray<z.input<typeof ModelSpec>>;
  logger?: Logger;
  /** least time between two progress reports of one download; default 250 ms */
  progressIntervalMs?: number;
  /** attempts in a row without new bytes before a download fails; default 5 */
  retries?: number;
  /** first wait between attempts, doubled each time; default 1 s */
  retryDelayMs?: number;
  /** a download connection silent this long is cut and resumed; default 60 s */
  stallTimeoutMs?: number;
  /** where `model.download` spans go (one per model a traced `acquire`/`ensure` asks for); default: none */
  tracing?: Tracing;
  /** `emp.machine.id` of those spans */
  machineId?: string;
}

/** What a caller of `acquire`/`ensure` may pass beside the names. */
export interface EnsureOptions {
  onProgress?: (progress: ModelProgress) => void;
  signal?: AbortSignal;
  /**
   * The context the `model.download` spans are children of: a worker's
   * traceparent (its job.models span), a context, or the active context when
   * absent. With the cache's tracing off no span is made.
   */
  parent?: string | Context;
}

/** A model on local disk. */
export interface CachedModel {
  name: string;
  folder: string;
  path: string;
  size_bytes: number;
  sha256?: string;
  last_used: number;
  /** leases (running jobs) holding it; a pinned model is never evicted */
  pins: number;
}

/** What the cache holds now; the shape `GET /models` answers and the reports to the broker are made from. */
export interface ModelCacheContents {
  budget_bytes: number;
  /** bytes of the models on disk plus the space reserved by downloads in progress */
  used_bytes: number;
  models: CachedModel[];
  downloads: ModelProgress[];
  /** names this machine can download (the catalog) */
  catalog: string[];
}

/** What `evictChecked` did: evicted (freeing its bytes), or why not. */
export type EvictOutcome =
  | { evicted: true; size_bytes: number }
  | { evicted: false; reason: 'in_use'; pins: number }
  | { evicted: false; reason: 'downloading' | 'not_on_disk' };

/** Models pinned for one job until `release()`. */
export interface ModelLease {
  readonly id: string;
  readonly models: readonly string[];
  /** unpins the models (idempotent) */
  release(): void;
}

export interface ModelCacheEvents {
  /** what `contents()` shows changed: a model arrived or was evicted, a download began or ended, a pin was taken or let go */
  change: [];
  /** a download's bytes (throttled per download) */
  progress: [progress: ModelProgress];
  /** a model asked for (acquire, ensure): on disk already, or to be downloaded (or waited for) */
  lookup: [result: 'hit' | 'miss'];
  /** bytes that came over the network for a download (unthrottled; a resumed download counts only what it fetched) */
  downloaded: [bytes: number];
  /** a download ended: its time and whether the model arrived */
  downloadEnded: [ended: { seconds: number; outcome: 'downloaded' | 'failed' }];
}

interface Download {
  progress: ModelProgress;
  /** bytes counted against the budget for it */
  reserved: number;
  listeners: Set<(progress: ModelProgress) => void>;
  lastReportAt: number;
  done: Promise<void>;
}

/**
 * The models on this machine's disk, within a byte budget. A model is
 * downloaded through a `.part` file (resumable, its sha256 computed while
 * it streams and checked against the catalog) and renamed into place once
 * verified; concurrent requests for one model share its download. Room for a
 * download is made by evicting the least recently used models that no job has
 * pinned; when even that cannot make room the download is refused. An index
 * (JSON beside the models) keeps sizes and last-used times across restarts.
 */
export class ModelCache extends EventEmitter<ModelCacheEvents> {
  readonly dir: string;
  readonly budgetBytes: number;
  private readonly catalog: Map<string, Spec>;
  private readonly logger: Logger;
  private readonly progressIntervalMs: number;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly stallTimeoutMs: number;
  private readonly tracing: Tracing;
  private readonly machineId: string | undefined;
  private readonly pins = new Map<string, number>();
  private readonly downloads = new Map<string, Download>();
  private readonly closing = new AbortController();
  private readonly removals = new Set<Promise<void>>();
  private index = new Map<string, IndexEntry>();
  private saving: Promise<void> = Promise.resolve();
  private lastClock = 0;

  private constructor(options: ModelCacheOptions) {
    super();
    this.dir = options.dir;
    if (!Number.isFinite(options.budgetBytes) || options.budgetBytes <= 0) {
      throw new RangeError(`model cache budget must be a positive number of bytes, got ${options.budgetBytes}`);
    }
    this.budgetBytes = Math.floor(options.budgetBytes);
    const catalog = parseWith(Catalog, options.catalog, 'model catalog');
    this.catalog = new Map(catalog.map((spec) => [spec.name, spec]));
    this.logger = (options.logger ?? pino({ name: 'emp-models', level: process.env.EMP_LOG_LEVEL ?? 'info' })).child({ component: 'model-cache' });
    this.progressIntervalMs = options.progressIntervalMs ?? 250;
    this.retries = options.retries ?? 5;
    this.retryDelayMs = options.retryDelayMs ?? 1_000;
    this.stallTimeoutMs = options.stallTimeoutMs ?? 60_000;
    this.tracing = options.tracing ?? TRACING_OFF;
    this.machineId = options.machineId;
  }

  /** Opens the cache in `dir`: reads (or rebuilds) its index and evicts down to the budget. */
  static async open(options: ModelCacheOptions): Promise<ModelCache> {
    const cache = new ModelCache(options);
    await mkdir(cache.dir, { recursive: true });
    cache.index = await loadIndex(cache.dir, [...cache.catalog.values()], cache.logger);
    const over = cache.usedBytes() - cache.budgetBytes;
    if (over > 0) cache.evictFor(over);
    await cache.save();
    return cache;
  }

  /** A cache for a machine config: `storage.models_dir`, `storage.budget_gb` (GiB) and `models`. */
  static fromConfig(config: MachineConfig, options: Partial<ModelCacheOptions> = {}): Promise<ModelCache> {
    return ModelCache.open({
      dir: config.storage.models_dir,
      budgetBytes: config.storage.budget_gb * 1024 ** 3,
      catalog: config.models,
      ...options,
    });
  }

  // ---------------------------------------------------------------- reading

  has(name: string): boolean {
    return this.index.has(name);
  }

  usedBytes(): number {
    let used = 0;
    for (const entry of this.index.values()) used += entry.size;
    for (const download of this.downloads.values()) used += download.reserved;
    return used;
  }

  contents(): ModelCacheContents {
    return {
      budget_bytes: this.budgetBytes,
      used_bytes: this.usedBytes(),
      models: [...this.index.keys()].sort().map((name) => this.describe(name)),
      downloads: [...this.downloads.values()].map((download) => ({ ...download.progress })),
      catalog: [...this.catalog.keys()].sort(),
    };
  }

  /** Free bytes on the file system holding the cache (which other things share). */
  async freeDiskBytes(): Promise<number> {
    const fs = await statfs(this.dir);
    return fs.bavail * fs.bsize;
  }

  // ---------------------------------------------------------------- using

  /**
   * Pins `name` (on disk or not yet) so that it is not evicted; the returned
   * function unpins it (once) and counts as a use for LRU.
   */
  pin(name: string): () => void {
    this.pins.set(name, (this.pins.get(name) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.pins.get(name) ?? 1) - 1;
      if (left > 0) this.pins.set(name, left);
      else this.pins.delete(name);
      this.touch(name);
      this.emit('change');
    };
  }

  /**
   * Pins every model in `names` and makes each available on disk (downloading
   * what is missing, `onProgress` hearing each download); resolves with a
   * lease once all are there. On failure nothing stays pinned. Aborting
   * `signal` stops the wait, not the download: another job will want the
   * model too.
   */
  async acquire(names: readonly string[], options: EnsureOptions = {}): Promise<ModelLease> {
    const unique = [...new Set(names)];
    const unknown = unique.filter((name) => !this.catalog.has(name) && !this.index.has(name));
    if (unknown.length > 0) {
      throw new ModelError('unknown_model', `model${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} not in this machine's catalog`);
    }
    const unpins = unique.map((name) => this.pin(name));
    const release = () => unpins.forEach((unpin) => unpin());
    try {
      await Promise.all(unique.map((name) => this.ensure(name, options)));
    } catch (error) {
      release();
      throw error;
    }
    this.emit('change');
    return { id: randomUUID(), models: unique, release };
  }

  /**
   * Makes `name` available on disk without pinning it (a prefetch); resolves
   * with it. With tracing on, a `model.download` span covers the wait: outcome
   * `cached` (on disk already), `downloaded` (downloaded, or a download in
   * progress waited for) or `failed`, with the model's bytes.
   */
  async ensure(name: string, options: EnsureOptions = {}): Promise<CachedModel> {
    if (!this.tracing.enabled) return this.ensureUntraced(name, options);
    const span = this.tracing.startSpan('model.download', {
      parent: options.parent,
      attributes: { 'emp.model': name, ...(this.machineId && { 'emp.machine.id': this.machineId }) },
    });
    let waited = false;
    // the bytes the download last reported: what a failed one had
    let received: number | undefined;
    const onProgress = (progress: ModelProgress) => {
      received = progress.received;
      options.onProgress?.(progress);
    };
    try {
      const model = await this.ensureUntraced(name, { ...options, onProgress }, () => (waited = true));
      span.setAttribute('emp.model.bytes', model.size_bytes);
      endSpan(span, waited ? 'downloaded' : 'cached');
      return model;
    } catch (error) {
      if (received !== undefined) span.setAttribute('emp.model.bytes', received);
      endSpan(span, 'failed', error);
      throw error;
    }
  }

  private async ensureUntraced(name: string, options: EnsureOptions, onWait?: () => void): Promise<CachedModel> {
    let looked = false;
    for (;;) {
      options.signal?.throwIfAborted();
      const onDisk = this.index.has(name) && (await this.stillOnDisk(name));
      if (!looked) this.emit('lookup', onDisk ? 'hit' : 'miss');
      looked = true;
      if (onDisk) {
        this.touch(name);
        return this.describe(name);
      }
      onWait?.();
      const spec = this.catalog.get(name);
      if (!spec) throw new ModelError('unknown_model', `model ${name} is not in this machine's catalog`);
      const download = this.downloads.get(name) ?? this.startDownload(spec);
      await this.follow(download, options.onProgress, options.signal);
    }
  }

  /** Removes a model that no job has pinned; false when it is pinned or not on disk. */
  async evict(name: string): Promise<boolean> {
    return (await this.evictChecked(name)).evicted;
  }

  /**
   * Removes a model from disk, saying why not when it cannot: a job holds it
   * (`in_use`, with its pin count), it is downloading (`downloading`: its bytes
   * are not a model yet, and jobs or a prefetch wait for it), or it is not on
   * disk. An evicted model's bytes are free at once, its file gone on return.
   */
  async evictChecked(name: string): Promise<EvictOutcome> {
    if (this.downloads.has(name)) return { evicted: false, reason: 'downloading' };
    const pins = this.pins.get(name);
    if (pins !== undefined && this.index.has(name)) return { evicted: false, reason: 'in_use', pins };
    const entry = this.index.get(name);
    if (!entry) return { evicted: false, reason: 'not_on_disk' };
    this.remove(name, 'asked to');
    await this.settleRemovals();
    await this.save();
    this.emit('change');
    return { evicted: true, size_bytes: entry.size };
  }

  /** The catalog entry of `name` (what this machine may download), or undefined. */
  catalogEntry(name: string): Readonly<Spec> | undefined {
    return this.catalog.get(name);
  }

  /** Whether `name` is downloading now. */
  isDownloading(name: string): boolean {
    return this.downloads.has(name);
  }

  /** Stops downloads in progress (their `.part` files stay for a later resume) and writes the index. */
  async close(): Promise<void> {
    this.closing.abort(new ModelError('download_failed', 'the model cache is closing'));
    await Promise.allSettled([...this.downloads.values()].map((download) => download.done));
    await this.settleRemovals();
    await this.save();
  }

  // ---------------------------------------------------------------- downloading

  private startDownload(spec: Spec): Download {
    const download: Download = {
      progress: { model: spec.name, received: 0 },
      reserved: 0,
      listeners: new Set(),
      lastReportAt: 0,
      done: Promise.resolve(),
    };
    this.downloads.set(spec.name, download);
    download.done = this.download(spec, download).finally(() => {
      download.reserved = 0;
      this.downloads.delete(spec.name);
      this.emit('change');
    });
    // waiters see the failure through follow(); this keeps an unwatched prefetch from crashing the process
    download.done.catch(() => undefined);
    this.emit('change');
    return download;
  }

  private async download(spec: Spec, download: Download): Promise<void> {
    const path = modelPath(this.dir, spec.folder, spec.name);
    const part = `${path}.part`;
    const logger = this.logger.child({ model: spec.name });
    logger.info({ url: spec.url }, 'downloading model');
    await mkdir(dirname(path), { recursive: true });
    const startedAt = performance.now();
    const ended = (outcome: 'downloaded' | 'failed') => this.emit('downloadEnded', { seconds: (performance.now() - startedAt) / 1_000, outcome });
    let fetched: number | undefined;
    let result;
    try {
      result = await downloadToPart({
        url: spec.url,
        part,
        signal: this.closing.signal,
        retries: this.retries,
        retryDelayMs: this.retryDelayMs,
        stallTimeoutMs: this.stallTimeoutMs,
        logger,
        onData: (received, total) => {
          // the first report is what the .part already held; a restart from byte 0 starts the count again
          if (fetched !== undefined && received > fetched) this.emit('downloaded', received - fetched);
          fetched = received;
          download.progress = { model: spec.name, received, ...(total !== undefined && { total }) };
          this.reserve(download, Math.max(received, total ?? 0));
          this.report(download, false);
        },
      });
      if (spec.sha256 && result.sha256 !== spec.sha256) {
        throw new ModelError(
          'checksum_mismatch',
          `model ${spec.name}: the downloaded file's sha256 is ${result.sha256}, the catalog says ${spec.sha256}; the file was removed`,
        );
      }
    } catch (error) {
      // a file that is not the configured one, or one the budget cannot hold, must not linger; an interrupted one is kept to resume
      if (error instanceof ModelError && (error.code === 'checksum_mismatch' || error.code === 'cache_full')) {
        await rm(part, { force: true });
      }
      logger.warn({ err: error instanceof Error ? error.message : error }, 'model download failed');
      ended('failed');
      throw error;
    }
    await rename(part, path);
    const now = this.clock();
    this.index.set(spec.name, { folder: spec.folder, size: result.size, sha256: result.sha256, last_used: now, added_at: now });
    download.reserved = 0;
    this.report(download, true);
    logger.info({ size: result.size }, 'model downloaded');
    ended('downloaded');
    await this.save();
  }

  /** Waits for a download, passing its progress on, until it ends or `signal` aborts. */
  private async follow(download: Download, onProgress: ((progress: ModelProgress) => void) | undefined, signal: AbortSignal | undefined): Promise<void> {
    if (onProgress) {
      download.listeners.add(onProgress);
      onProgress({ ...download.progress });
    }
    let onAbort: (() => void) | undefined;
    try {
      await Promise.race([
        download.done,
        new Promise<never>((_, reject) => {
          if (!signal) return;
          onAbort = () => reject(signal.reason);
          if (signal.aborted) onAbort();
          else signal.addEventListener('abort', onAbort, { once: true });
        }),
      ]);
    } finally {
      if (onProgress) download.listeners.delete(onProgress);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }

  private report(download: Download, force: boolean): void {
    const now = Date.now();
    if (!force && now - download.lastReportAt < this.progressIntervalMs) return;
    download.lastReportAt = now;
    const progress = { ...download.progress };
    this.emit('progress', progress);
    for (const listener of download.listeners) {
      try {
        listener(progress);
      } catch (error) {
        this.logger.warn({ err: error }, 'a model progress listener threw');
      }
    }
  }

  // ---------------------------------------------------------------- the budget

  /** Counts `bytes` against the budget for a download, evicting to make room; throws cache_full when it cannot. */
  private reserve(download: Download, bytes: number): void {
    if (bytes <= download.reserved) return;
    const needed = bytes - download.reserved;
    const free = this.budgetBytes - this.usedBytes();
    if (needed > free) this.evictFor(needed - free, download.progress.model);
    download.reserved = bytes;
  }

  /**
   * Evicts least recently used unpinned models until `bytes` are freed, or
   * evicts nothing and throws cache_full when all of them would not be enough.
   */
  private evictFor(bytes: number, forModel?: string): void {
    const forWhat = forModel === undefined ? 'the budget' : `model ${forModel}`;
    const candidates = [...this.index.entries()]
      .filter(([name]) => !this.pins.has(name))
      .sort(([, a], [, b]) => a.last_used - b.last_used);
    const victims: string[] = [];
    let freed = 0;
    for (const [name, entry] of candidates) {
      if (freed >= bytes) break;
      victims.push(name);
      freed += entry.size;
    }
    if (freed < bytes) {
      const pinned = [...this.index.keys()].filter((name) => this.pins.has(name)).sort();
      const downloading = [...this.downloads.keys()].filter((name) => name !== forModel).sort();
      throw new ModelError(
        'cache_full',
        `${forWhat} needs ${bytes} bytes more than the budget of ${this.budgetBytes} bytes has free, and evicting every model not in use frees only ${freed}` +
          (pinned.length > 0 ? `; in use: ${pinned.join(', ')}` : '') +
          (downloading.length > 0 ? `; downloading: ${downloading.join(', ')}` : ''),
      );
    }
    for (const name of victims) this.remove(name, `to make room for ${forWhat}`);
    void this.save();
    this.emit('change');
  }

  /** Takes a model out of the index at once (so its bytes are free to reserve) and deletes its file. */
  private remove(name: string, why: string): void {
    const entry = this.index.get(name);
    if (!entry) return;
    this.index.delete(name);
    this.logger.info({ model: name, size: entry.size, last_used: entry.last_used }, `evicting model ${why}`);
    const removal = rm(modelPath(this.dir, entry.folder, name), { force: true })
      .catch((error: unknown) => this.logger.error({ err: error, model: name }, 'could not delete an evicted model'))
      .finally(() => this.removals.delete(removal));
    this.removals.add(removal);
  }

  private async settleRemovals(): Promise<void> {
    await Promise.all([...this.removals]);
  }

  // ---------------------------------------------------------------- bookkeeping

  private describe(name: string): CachedModel {
    const entry = this.index.get(name)!;
    return {
      name,
      folder: entry.folder,
      path: modelPath(this.dir, entry.folder, name),
      size_bytes: entry.size,
      ...(entry.sha256 && { sha256: entry.sha256 }),
      last_used: entry.last_used,
      pins: this.pins.get(name) ?? 0,
    };
  }

  /** False (and the entry dropped) when someone deleted the file behind the cache's back. */
  private async stillOnDisk(name: string): Promise<boolean> {
    const entry = this.index.get(name)!;
    const found = await stat(modelPath(this.dir, entry.folder, name)).catch(() => undefined);
    if (found?.isFile() && found.size === entry.size) return true;
    if (this.index.get(name) === entry) {
      this.index.delete(name);
      this.logger.warn({ model: name }, 'model file vanished or changed size; downloading it again');
      void this.save();
      this.emit('change');
    }
    return false;
  }

  private touch(name: string): void {
    const entry = this.index.get(name);
    if (!entry) return;
    entry.last_used = this.clock();
    void this.save();
  }

  /** Milliseconds, strictly increasing, so that two uses in one millisecond still have an order. */
  private clock(): number {
    this.lastClock = Math.max(Date.now(), this.lastClock + 1);
    return this.lastClock;
  }

  /** Writes the index after any write already queued; a failed write is logged, the next one tries again. */
  private save(): Promise<void> {
    this.saving = this.saving
      .then(() => saveIndex(this.dir, this.index))
      .catch((error: unknown) => this.logger.error({ err: error }, 'could not write the model cache index'));
    return this.saving;
  }
}
