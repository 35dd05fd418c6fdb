import { Broker, NewWebhookEndpoint, WebhookEndpoints, WebhookOutbox } from '@emp/core';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { redisCpuMicros } from './redis-info';
import { summarizeLatencies, type LatencySummary } from './stats';
import type { ServiceMessage, ServiceSample } from './webhook-service-process';
import { type Forked, ForkedProcess, forkReady } from './forked';

export interface WebhookBenchOptions {
  redisUrl: string;
  /** loopback receivers, one endpoint each */
  endpoints: number;
  /** jobs run before the service starts; each makes 3 webhook events, each sent to every endpoint */
  backlogJobs: number;
  /** webhook events per second in the paced run (3 per job: queued, started, succeeded) */
  eventsPerSec: number;
  /** the paced run, measured part */
  seconds: number;
  /** paced, not measured, before it */
  warmupSeconds: number;
}

export interface MemoryFigures {
  samples: number;
  rssStartMiB: number;
  rssEndMiB: number;
  rssMaxMiB: number;
  heapStartMiB: number;
  heapEndMiB: number;
  heapMaxMiB: number;
  /** least-squares slope over the measured paced run, MiB per minute */
  rssSlopeMiBPerMin: number;
  heapSlopeMiBPerMin: number;
}

export interface WebhookBenchResult {
  backlog: { events: number; deliveries: number; seconds: number; deliveriesPerSec: number; serviceCpuUsPerDelivery: number };
  paced: {
    events: number;
    /** events per second the producer achieved over the measured run */
    achievedEventsPerSec: number;
    delivered: number;
    missing: number;
    /** requests whose webhook-id had arrived before (retries after a lost answer) */
    repeats: number;
    /** a job's events arriving out of order */
    outOfOrder: number;
    /** event time (the stream entry's ts, Redis's clock) to the receiver reading the request (ms) */
    latency: LatencySummary;
    serviceCpuUsPerDelivery: number;
    /** the same for redis-server, and for this process (the job runner and the 50 receivers) */
    redisCpuUsPerDelivery: number;
    benchCpuUsPerDelivery: number;
    /** most stream entries the service's group had not read yet, sampled every 250 ms: how far event intake fell behind */
    maxIntakeLag: number;
  };
  memory: MemoryFigures;
}

/** The service's settings here: the defaults, except loopback targets (the receivers) and a short retention (Redis stays small on a long run). */
const SERVICE_CONFIG = { port: 0, allowPrivate: true, retentionMs: 120_000 };

const WEBHOOK_ORDER = ['job.queued', 'job.started', 'job.succeeded'];

/**
 * The webhook service (in a process of its own) delivering to `endpoints`
 * receivers on loopback, on a private redis-server with real jobs run through
 * the broker: (a) deliveries per second draining a backlog of events, each
 * fanned out to every endpoint; (b) event -> receiver latency at a paced rate
 * of events, spread over one endpoint per tenant; (c) the service's RSS and
 * heap, sampled every second, over the paced run.
 */
export async function measureWebhooks(options: WebhookBenchOptions): Promise<WebhookBenchResult> {
  const redis = new Redis(options.redisUrl);
  const receivers = new Receivers();
  let service: ServiceProcess | undefined;
  try {
    const broker = await Broker.connect({ redis });
    const endpoints = new WebhookEndpoints(new WebhookOutbox(broker));
    const urls = await receivers.start(options.endpoints);
    const workers = await registerWorkers(broker, 32);
    // the group exists before the backlog is made, so the service starts with all of it to read
    await broker.ensureEventGroup('standard', 'webhooks', '$');

    // (a) backlog: every event to every endpoint of tenant 'fan'
    const fan = await Promise.all(urls.map((url) => endpoints.create('fan', NewWebhookEndpoint.parse({ url, events: ['job.*'] }), { allowPrivate: true })));
    await runJobs(broker, workers, options.backlogJobs, { tenants: ['fan'] });
    const backlogEvents = options.backlogJobs * WEBHOOK_ORDER.length;
    const backlogDeliveries = backlogEvents * fan.length;
    receivers.reset();
    service = await ServiceProcess.start(options.redisUrl, SERVICE_CONFIG);
    const started = Date.now();
    const cpuBefore = (await service.sample()).cpuMicros;
    await waitFor(() => receivers.distinct >= backlogDeliveries, `the backlog of ${backlogDeliveries} deliveries`, 120_000, () => `${receivers.distinct} arrived`);
    const backlogCpu = (await service.sample()).cpuMicros - cpuBefore;
    const backlogSeconds = (receivers.lastAt - started) / 1000;
    for (const endpoint of fan) await endpoints.delete(endpoint.id);

    // (b) paced: one endpoint per tenant, jobs over the tenants in turn
    const tenants = urls.map((_, i) => `tenant-${i}`);
    for (const [i, url] of urls.entries()) await endpoints.create(tenants[i]!, NewWebhookEndpoint.parse({ url, events: ['job.*'] }), { allowPrivate: true });
    receivers.reset();
    const jobsPerSec = options.eventsPerSec / WEBHOOK_ORDER.length;
    const warmupJobs = Math.round(jobsPerSec * options.warmupSeconds);
    const measuredJobs = Math.round(jobsPerSec * options.seconds);
    let measuredFrom = 0;
    let measuredCpu = 0;
    let otherCpu = { redis: 0, bench: 0 };
    let maxIntakeLag = 0;
    let sampling = true;
    const lagSampler = (async () => {
      while (sampling) {
        maxIntakeLag = Math.max(maxIntakeLag, await intakeLag(redis, broker.keys.events('standard')));
        await sleep(250);
      }
    })();
    const samplesFrom = service.samples.length;
    const pacing = await runJobs(broker, workers, warmupJobs + measuredJobs, {
      tenants,
      jobsPerSec,
      onJob: (index) => {
        if (index === warmupJobs) {
          measuredFrom = Date.now();
          void service!.sample().then((s) => (measuredCpu = s.cpuMicros));
          void cpuOthers(redis).then((cpu) => (otherCpu = cpu));
        }
      },
    });
    const pacedEnd = Date.now();
    const memorySamples = service.samples.slice(samplesFrom).filter((s) => s.at >= measuredFrom && s.at <= pacedEnd);
    const expected = (warmupJobs + measuredJobs) * WEBHOOK_ORDER.length;
    await waitFor(() => receivers.distinct >= expected, `the paced run's ${expected} deliveries`, 30_000, () => `${receivers.distinct} arrived`).catch(() => undefined);
    const pacedCpu = (await service.sample()).cpuMicros - measuredCpu;
    const othersAfter = await cpuOthers(redis);
    sampling = false;
    await lagSampler;
    await sleep(200);
    const measured = receivers.latencies.filter(([ts]) => ts >= measuredFrom).map(([, ms]) => ms).sort((a, b) => a - b);
    const measuredDeliveries = measured.length;

    return {
      backlog: {
        events: backlogEvents,
        deliveries: backlogDeliveries,
        seconds: backlogSeconds,
        deliveriesPerSec: backlogDeliveries / backlogSeconds,
        serviceCpuUsPerDelivery: backlogCpu / backlogDeliveries,
      },
      paced: {
        events: measuredJobs * WEBHOOK_ORDER.length,
        achievedEventsPerSec: (measuredJobs * WEBHOOK_ORDER.length) / ((pacing.endedAt - measuredFrom) / 1000),
        delivered: receivers.distinct,
        missing: expected - receivers.distinct,
        repeats: receivers.repeats,
        outOfOrder: receivers.outOfOrder,
        latency: summarizeLatencies(measured),
        serviceCpuUsPerDelivery: pacedCpu / Math.max(1, measuredDeliveries),
        redisCpuUsPerDelivery: (othersAfter.redis - otherCpu.redis) / Math.max(1, measuredDeliveries),
        benchCpuUsPerDelivery: (othersAfter.bench - otherCpu.bench) / Math.max(1, measuredDeliveries),
        maxIntakeLag,
      },
      memory: memoryFigures(memorySamples),
    };
  } finally {
    await service?.stop();
    await receivers.stop();
    await redis.quit().catch(() => redis.disconnect());
  }
}

/** CPU time used so far (µs) by redis-server (INFO cpu) and by this process. */
async function cpuOthers(redis: Redis): Promise<{ redis: number; bench: number }> {
  const redisUs = await redisCpuMicros(redis);
  const usage = process.cpuUsage();
  return { redis: redisUs, bench: usage.user + usage.system };
}

/** Entries of the pool's event stream the webhook group has not read yet (XINFO GROUPS lag, Redis 7). */
async function intakeLag(redis: Redis, stream: string): Promise<number> {
  const groups = (await redis.call('XINFO', 'GROUPS', stream)) as unknown[][];
  for (const group of groups) {
    const fields = new Map<string, unknown>();
    for (let i = 0; i + 1 < group.length; i += 2) fields.set(String(group[i]), group[i + 1]);
    if (fields.get('name') === 'webhooks') return Number(fields.get('lag') ?? 0);
  }
  return 0;
}

/** Workers of pool 'standard' the job runner takes turns with (each runs one job at a time). */
async function registerWorkers(broker: Broker, count: number): Promise<string[]> {
  const ids = Array.from({ length: count }, (_, i) => `bench-hook-worker-${i}`);
  for (const id of ids) await broker.registerWorker({ id, pool: 'standard', capabilities: { services: ['simulation'] } });
  return ids;
}

/**
 * Runs `jobs` jobs through the broker as workers would (submit, claim, start,
 * complete: the webhook events job.queued, job.started, job.succeeded), the
 * tenants in turn; at `jobsPerSec` when given, else as fast as the workers go.
 * A job waits for a free worker, so a producer that falls behind shows as a
 * lower achieved rate, never as extra load.
 */
async function runJobs(
  broker: Broker,
  workers: string[],
  jobs: number,
  options: { tenants: string[]; jobsPerSec?: number; onJob?: (index: number) => void },
): Promise<{ endedAt: number }> {
  const free = [...workers];
  const running = new Set<Promise<void>>();
  const startedAt = performance.now();
  let endedAt = Date.now();
  for (let index = 0; index < jobs; index += 1) {
    if (options.jobsPerSec) {
      const dueAt = startedAt + (index / options.jobsPerSec) * 1000;
      const wait = dueAt - performance.now();
      if (wait > 1) await sleep(wait);
    }
    while (free.length === 0) await Promise.race(running);
    const worker = free.pop()!;
    options.onJob?.(index);
    const tenant = options.tenants[index % options.tenants.length]!;
    const run = (async () => {
      await broker.submit({ service: 'simulation', tenant, payload: { n: index } });
      const claimed = await broker.claim('standard', worker);
      if (!claimed.job) throw new Error(`webhooks bench: worker ${worker} found no job`);
      await broker.start(claimed.job.lease);
      await broker.complete(claimed.job.lease, { ok: true });
      endedAt = Date.now();
    })().finally(() => {
      free.push(worker);
      running.delete(run);
    });
    running.add(run);
  }
  await Promise.all(running);
  return { endedAt };
}

/** HTTP servers on 127.0.0.1 answering 204 at once; each request's latency is read from its body's event timestamp. */
class Receivers {
  private readonly servers: http.Server[] = [];
  private seen = new Map<string, number>();
  private lastType = new Map<string, number>();
  /** [event time, ms from event time to arrival] of each first arrival */
  latencies: Array<[number, number]> = [];
  repeats = 0;
  outOfOrder = 0;
  lastAt = 0;

  get distinct(): number {
    return this.seen.size;
  }

  reset(): void {
    this.seen = new Map();
    this.lastType = new Map();
    this.latencies = [];
    this.repeats = 0;
    this.outOfOrder = 0;
    this.lastAt = 0;
  }

  async start(count: number): Promise<string[]> {
    const urls: string[] = [];
    for (let i = 0; i < count; i += 1) {
      const server = http.createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => {
          const at = Date.now();
          res.writeHead(204).end();
          this.record(req.headers['webhook-id'] as string, Buffer.concat(chunks).toString('utf8'), at, i);
        });
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      this.servers.push(server);
      urls.push(`http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`);
    }
    return urls;
  }

  private record(id: string, body: string, at: number, receiver: number): void {
    this.lastAt = Math.max(this.lastAt, at);
    if (this.seen.has(id)) {
      this.repeats += 1;
      return;
    }
    this.seen.set(id, at);
    const event = JSON.parse(body) as { type: string; timestamp: string; data: { id: string } };
    const ts = Date.parse(event.timestamp);
    this.latencies.push([ts, at - ts]);
    const chain = `${receiver}:${event.data.id}`;
    const position = WEBHOOK_ORDER.indexOf(event.type);
    if (position < (this.lastType.get(chain) ?? -1)) this.outOfOrder += 1;
    this.lastType.set(chain, position);
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.servers.splice(0).map((server) => {
        server.closeAllConnections();
        return new Promise<void>((resolve) => server.close(() => resolve()));
      }),
    );
  }
}

/** The forked webhook-service-process.ts: its samples, and a way to stop it. */
class ServiceProcess extends ForkedProcess<ServiceMessage & { type: 'ready' }> {
  readonly samples: ServiceSample[] = [];
  private waiters: Array<(sample: ServiceSample) => void> = [];

  private constructor(forked: Forked<ServiceMessage & { type: 'ready' }>) {
    super(forked);
    this.child.on('message', (message: ServiceMessage) => {
      if (message.type !== 'sample') return;
      this.samples.push(message);
      for (const waiter of this.waiters.splice(0)) waiter(message);
    });
  }

  static async start(redisUrl: string, config: Record<string, unknown>): Promise<ServiceProcess> {
    const entry = fileURLToPath(new URL('./webhook-service-process.ts', import.meta.url));
    return new ServiceProcess(
      await forkReady(entry, 'the webhook service', {
        env: { EMP_REDIS_URL: redisUrl, EMP_BENCH_WEBHOOKS_CONFIG: JSON.stringify(config) },
        // EMP_BENCH_WEBHOOKS_CPU_PROF=<dir>: a V8 CPU profile of the service, for finding where its time goes
        ...(process.env.EMP_BENCH_WEBHOOKS_CPU_PROF ? { cpuProfileDir: process.env.EMP_BENCH_WEBHOOKS_CPU_PROF } : {}),
      }),
    );
  }

  /** A sample taken now. */
  sample(): Promise<ServiceSample> {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.child.send('sample');
    });
  }
}

function memoryFigures(samples: ServiceSample[]): MemoryFigures {
  const mib = (bytes: number) => bytes / 2 ** 20;
  const first = samples[0];
  const last = samples.at(-1);
  const slope = (value: (s: ServiceSample) => number) => {
    if (samples.length < 2) return Number.NaN;
    const t0 = samples[0]!.at;
    const xs = samples.map((s) => (s.at - t0) / 60_000);
    const ys = samples.map((s) => mib(value(s)));
    const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
    const my = ys.reduce((a, b) => a + b, 0) / ys.length;
    let num = 0;
    let den = 0;
    xs.forEach((x, i) => {
      num += (x - mx) * (ys[i]! - my);
      den += (x - mx) ** 2;
    });
    return den === 0 ? Number.NaN : num / den;
  };
  return {
    samples: samples.length,
    rssStartMiB: first ? mib(first.rss) : Number.NaN,
    rssEndMiB: last ? mib(last.rss) : Number.NaN,
    rssMaxMiB: samples.length ? mib(Math.max(...samples.map((s) => s.rss))) : Number.NaN,
    heapStartMiB: first ? mib(first.heapUsed) : Number.NaN,
    heapEndMiB: last ? mib(last.heapUsed) : Number.NaN,
    heapMaxMiB: samples.length ? mib(Math.max(...samples.map((s) => s.heapUsed))) : Number.NaN,
    rssSlopeMiBPerMin: slope((s) => s.rss),
    heapSlopeMiBPerMin: slope((s) => s.heapUsed),
  };
}

async function waitFor(check: () => boolean, what: string, timeoutMs: number, progress: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`webhooks bench: ${what} did not arrive within ${timeoutMs / 1000} s (${progress()})`);
    await sleep(20);
  }
}
