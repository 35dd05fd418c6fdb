import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiKeyStore, Broker, encodeMachineStatus, shardHashTag } from '@emp/core';
import { type RedisProcess, startRedis } from '@emp/testkit';
import { type LocalStack, startLocalStack } from '@emp/testkit/stack';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ARTIFACTS_DIR, browserTestsSkipped, launchChromium, screenshot } from './testing/browser';

/**
 * The monitor in a real browser (Debian's Chromium, headless) against the
 * real stack `npm start` runs: a private redis-server, the scheduler with
 * short offline timings, the simulated machine, the API with keys required,
 * and the monitor server with its built page.
 */

const skipped = browserTestsSkipped();
if (skipped) console.warn(skipped);

const WAIT = 20_000;
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
/** the local machine's two workers (`<machine>.<service>-<slot>`) and their processes */
const WORKER = ['local-sim.simulation-cpu0', 'local-sim.simulation-cpu1'] as const;
const WORKER_PROCESS = ['worker-simulation-cpu0', 'worker-simulation-cpu1'] as const;

describe.skipIf(skipped !== undefined)('the monitor page against the real stack', () => {
  let redis: RedisProcess;
  let stateDir: string;
  let stack: LocalStack;
  let operatorKey: string;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const pageErrors: string[] = [];

  const api = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${stack.api.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${operatorKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    return (await response.json()) as Record<string, any>;
  };
  const consoleLines: string[] = [];
  /** Waits for the selector; on a timeout, keeps a screenshot and says what the page logged. */
  const visible = async (selector: string, timeout = WAIT) => {
    try {
      await page.locator(selector).first().waitFor({ state: 'visible', timeout });
    } catch (error) {
      const shot = await screenshot(page, 'failure').catch(() => 'none');
      throw new Error(`${(error as Error).message}\nscreenshot: ${shot}\npage console:\n${consoleLines.slice(-20).join('\n')}`);
    }
  };

  beforeAll(async () => {
    await rm(join(ARTIFACTS_DIR, 'failure.png'), { force: true });
    [redis, stateDir, browser] = await Promise.all([startRedis(), mkdtemp(join(tmpdir(), 'emp-monitor-e2e-')), launchChromium()]);
    // the API records its queue history every 300 ms instead of 30 s, so the test does not wait minutes for it
    process.env.EMP_QUEUE_SAMPLE_MS = '300';
    stack = await startLocalStack({
      redis: { url: redis.url, source: 'env' },
      stateDir,
      redisPort: 0,
      workers: 2,
      jobDurationMs: 1_500,
      graceMs: 1_000,
      // the Webhooks view's test delivers to a receiver on loopback
      api: { host: '127.0.0.1', port: 0, auth: true, webhookAllowPrivate: true },
      monitor: { port: 0 },
      // offline detection in about a second and a half instead of 30 s: the lease (and so the
      // workers' heartbeat, in their own processes too) and the machine's status snapshot are shortened to match
      broker: { leaseMs: 1_500, offlineAfterMs: 1_500 },
      machineStatusIntervalMs: 300,
      logger: pino({ level: process.env.LOG_LEVEL || 'silent' }),
    });
    const connection = new Redis(redis.url);
    operatorKey = (await new ApiKeyStore(connection).create({ role: 'operator', name: 'e2e' })).key;
    connection.disconnect();
    context = await browser.newContext({ viewport: { width: 1366, height: 860 }, colorScheme: 'light' });
    page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
  }, 120_000);

  afterAll(async () => {
    delete process.env.EMP_QUEUE_SAMPLE_MS;
    await context?.close().catch(() => undefined);
    await browser?.close().catch(() => undefined);
    await stack?.stop();
    await redis?.stop();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  it('asks for a key, keeps it, and shows the fleet live over one WebSocket', async () => {
    await page.goto(stack.monitor!.url);
    await visible('form[aria-label="API key"]');
    await page.fill('form[aria-label="API key"] input[type="password"]', operatorKey);
    await page.click('form[aria-label="API key"] button[type="submit"]');
    await visible('[data-connection="live"]');
    await visible(`article[data-machine="local-sim"] li[data-worker="${WORKER[0]}"][data-state="idle"]`);
    await visible(`article[data-machine="local-sim"] li[data-worker="${WORKER[1]}"][data-state="idle"]`);
    expect(await page.textContent('.identity')).toContain('operator');
    // kept in this browser: a reload connects without asking
    await page.reload();
    await visible('[data-connection="live"]');
    await screenshot(page, 'fleet-light');
  });

  it('shows a job submitted through the API appear, progress and complete', async () => {
    await page.goto(`${stack.monitor!.url}/#/jobs`);
    await visible('.jobs-table, .empty');
    const job = await api('POST', '/v1/jobs', { service: 'simulation', tenant: 'e2e', payload: { duration_ms: 2_500, steps: 10, result: { note: 'made by the e2e test' } } });
    const row = `tr[data-job="${job.id}"]`;
    await visible(row);
    await visible(`${row}[data-state="running"]`);
    await screenshot(page, 'jobs-running');
    await page.click(`${row} a`);
    await visible(`section.job-page[data-job="${job.id}"]`);
    // how its pool was chosen: the job names none and gives no hint
    await visible('[data-routing]');
    expect(await page.textContent('[data-routing]')).toMatch(/^routed to standard/);
    // live progress while it runs, then the outcome with its timeline and result
    await visible('.progress-panel [role="meter"]');
    await visible(`section.job-page[data-state="succeeded"]`);
    await visible('.timeline li[data-event="job.succeeded"]');
    for (const event of ['job.queued', 'job.starting', 'job.running']) await visible(`.timeline li[data-event="${event}"]`);
    expect(await page.textContent('[aria-label="result"]')).toContain('made by the e2e test');
    await screenshot(page, 'job-succeeded');
    await page.goto(`${stack.monitor!.url}/#/jobs`);
    await visible(`${row}[data-state="succeeded"]`);
    // how it ended and how long it took, not the meter of its last progress report
    expect(await page.textContent(`${row} .progress-cell`)).toMatch(/^succeeded in \d/);
  });

  it('draws a workflow submitted through the API as its steps by depth, live, until every step succeeded', async () => {
    const definition = JSON.parse(await readFile(join(repoRoot, 'docs/examples/workflow.json'), 'utf8')) as Record<string, unknown>;
    const workflow = await api('POST', '/v1/workflows', { ...definition, tenant: 'e2e' });
    expect(workflow.state, JSON.stringify(workflow)).toBe('running');
    await page.goto(`${stack.monitor!.url}/#/workflows`);
    await visible(`tr[data-workflow-row="${workflow.id}"]`);
    await page.click(`tr[data-workflow-row="${workflow.id}"] a`);
    const graph = `section[data-workflow="${workflow.id}"] svg.workflow-graph`;
    await visible(graph);
    // the first step runs while the others wait on it; edges join each step to what it needs
    await visible(`${graph} g[data-step="generate"][data-state="running"]`);
    await visible(`${graph} g[data-step="caption"][data-state="pending"]`);
    expect(await page.locator(`${graph} line[data-edge="generate->upscale"]`).count()).toBe(1);
    expect(await page.locator(`${graph} line[data-edge="upscale->caption"]`).count()).toBe(1);
    await screenshot(page, 'workflow-running');
    await visible(`${graph} g[data-step="upscale"][data-state="running"]`);
    await visible(`${graph} g[data-step="caption"][data-state="succeeded"]`, 30_000);
    for (const step of ['generate', 'upscale']) await visible(`${graph} g[data-step="${step}"][data-state="succeeded"]`);
    await visible(`section[data-workflow="${workflow.id}"] .badge[data-state="succeeded"]`);
    await screenshot(page, 'workflow-succeeded');
  });

  it("opens after jobs have finished and shows the server's throughput, waits and depth, drawn, and each pool's queue pressure", async () => {
    const jobs = await Promise.all(Array.from({ length: 6 }, () => api('POST', '/v1/jobs', { service: 'simulation', tenant: 'e2e', payload: { duration_ms: 50 } })));
    const until = Date.now() + WAIT;
    let history: Record<string, any> = {};
    // finished and recorded by the API: what a page that was not open then must still show
    while (Date.now() < until) {
      history = await api('GET', '/v1/queues/history');
      if ((history.summary?.all.finished.succeeded ?? 0) >= jobs.length) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(history.summary.all.finished.succeeded).toBeGreaterThanOrEqual(jobs.length);
    expect(history.summary.all.jobs_per_min).toBeGreaterThan(0);

    const fresh = await context.newPage();
    fresh.on('pageerror', (error) => pageErrors.push(error.message));
    try {
      await fresh.goto(`${stack.monitor!.url}/#/queues`);
      const perHour = fresh.locator('.stat', { hasText: 'jobs/min, last hour' }).locator('.stat-value');
      await expect.poll(async () => Number(await perHour.textContent()), { timeout: WAIT }).toBeGreaterThan(0);
      expect(Number(await fresh.locator('.stat', { hasText: 'jobs ended, last hour' }).locator('.stat-value').textContent())).toBeGreaterThanOrEqual(jobs.length);
      expect(await fresh.locator('.stat', { hasText: 'wait p50, last hour' }).locator('.stat-value').textContent()).not.toBe('–');
      // drawn by uPlot on a canvas, not hand-drawn SVG
      await fresh.locator('[data-chart="jobs per minute"] canvas').first().waitFor({ state: 'attached', timeout: WAIT });
      await fresh.locator('[data-chart="wait"] canvas').first().waitFor({ state: 'attached', timeout: WAIT });
      expect(await fresh.locator('svg.sparkline').count()).toBe(0);
      await fresh.click('.segmented button:has-text("last day")');
      await fresh.locator('.stat', { hasText: 'jobs/min, last day' }).waitFor({ timeout: WAIT });
      await screenshot(fresh, 'queues-history');
      // the Fleet view: each pool's queue pressure beside the machines
      await fresh.goto(`${stack.monitor!.url}/#/`);
      await fresh.locator('[data-pool-pressure="local"], [data-pool-pressure]').first().waitFor({ timeout: WAIT });
      expect(await fresh.locator('[data-pool-pressure] [data-queued]').first().textContent()).toMatch(/^\d+$/);
      // the pools jobs are routed to, with their cutoffs and the durations learned from the jobs above
      await fresh.locator('[data-routing-pool="heavy"]').waitFor({ timeout: WAIT });
      expect(await fresh.locator('[data-routing-pool="fast"] [data-cutoff]').textContent()).toBe('< 30 s');
      expect(await fresh.locator('[data-routing-pool="heavy"] [data-cutoff]').textContent()).toBe('≥ 3m 0s');
      await fresh.locator('[data-dclass]', { hasText: 'simulation' }).first().waitFor({ timeout: WAIT });
      // where each pool lives: on this one Redis, every shard on that server
      await fresh.locator('[data-shard="{standard}"]').waitFor({ timeout: WAIT });
      expect(await fresh.locator('[data-shard="{standard}"] [data-shard-node]').textContent()).toBe(`${redis.host}:${redis.port}`);
      expect(await fresh.locator('[data-shard="{_webhooks}"] [data-shard-node]').textContent()).toBe(`${redis.host}:${redis.port}`);
      // a pool spread over two shards: its row says so, and both its shards follow it, each on its node
      expect(await api('PUT', '/v1/pools/spread/shards', { count: 2 })).toEqual({ pool: 'spread', count: 2, serve: 2 });
      await fresh.reload();
      await fresh.locator('[data-shard-pool="spread"]').waitFor({ timeout: WAIT });
      expect(await fresh.locator('[data-shard-pool="spread"] [data-shard-count]').textContent()).toBe('2 shards');
      const tags = ['spread', 'spread_1'].map(shardHashTag);
      const rows = await fresh.locator(`[data-shard-pool="spread"], [data-shard="${tags[0]}"], [data-shard="${tags[1]}"]`).evaluateAll((trs) =>
        trs.map((tr) => tr.getAttribute('data-shard-pool') ?? tr.getAttribute('data-shard')),
      );
      expect(rows).toEqual(['spread', ...tags]);
      for (const shard of tags) expect(await fresh.locator(`[data-shard="${shard}"] [data-shard-node]`).textContent()).toBe(`${redis.host}:${redis.port}`);
      await screenshot(fresh, 'fleet-pools');
    } finally {
      await fresh.close();
    }
  });

  it('lists webhook endpoints failing first with their last error, and resends a delivery the receiver then gets again', async () => {
    // a receiver on loopback: /ok answers 200, /flaky what `flaky` says
    let flaky = 500;
    const received: Array<{ path: string; id: string; status: number }> = [];
    const receiver: Server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        const status = req.url === '/flaky' ? flaky : 200;
        received.push({ path: req.url ?? '', id: String(req.headers['webhook-id']), status });
        res.writeHead(status).end(status === 200 ? 'ok' : 'not today');
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    const made: string[] = [];
    try {
      // the healthy one is older: the API lists oldest first, so the failing one is first only by the view's order
      const good = await api('POST', '/v1/webhooks', { url: `${base}/ok`, events: ['job.failed'], tenant: 'e2e-hooks' });
      const bad = await api('POST', '/v1/webhooks', { url: `${base}/flaky`, events: ['job.failed'], tenant: 'e2e-hooks' });
      made.push(good.id, bad.id);
      await api('POST', `/v1/webhooks/${good.id}/test`);
      const test = await api('POST', `/v1/webhooks/${bad.id}/test`);
      const arrivals = () => received.filter((r) => r.id === test.message_id);
      await vi.waitFor(() => expect(received.map((r) => r.path).sort()).toEqual(['/flaky', '/ok']), { timeout: WAIT });

      await page.goto(`${stack.monitor!.url}/#/webhooks`);
      await visible(`tr[data-endpoint="${bad.id}"][data-health="failing"]`);
      await visible(`tr[data-endpoint="${good.id}"][data-health="ok"]`);
      expect(await page.getAttribute('.webhooks-table tbody tr:first-child', 'data-endpoint')).toBe(bad.id);
      expect(await page.textContent(`tr[data-endpoint="${bad.id}"] .error-cell`)).toContain('500');
      expect(await page.textContent(`tr[data-endpoint="${good.id}"]`)).toContain('100 %');
      await screenshot(page, 'webhooks-failing');

      // the receiver recovers: the retry (5 s later) is delivered and the endpoint is well again
      flaky = 200;
      await visible(`tr[data-endpoint="${bad.id}"][data-health="ok"]`, 30_000);
      await page.click(`tr[data-endpoint="${bad.id}"] a`);
      const delivered = `.endpoint-panel[data-endpoint="${bad.id}"] tr[data-message="${test.message_id}"][data-outcome="delivered"]`;
      await visible(delivered);
      expect(arrivals().map((r) => r.status)).toEqual([500, 200]);

      // one click: the same message (same webhook-id) reaches the receiver again
      await page.click(`${delivered} button:has-text("Resend")`);
      await visible(`.notice:has-text("${test.message_id} queued again")`);
      await vi.waitFor(() => expect(arrivals().map((r) => r.status)).toEqual([500, 200, 200]), { timeout: WAIT });
      await screenshot(page, 'webhook-endpoint');
    } finally {
      for (const id of made) await api('DELETE', `/v1/webhooks/${id}`).catch(() => undefined);
      receiver.closeAllConnections();
      await new Promise((resolve) => receiver.close(resolve));
    }
  }, 90_000);

  it("shows the planner's placement matrix, its decisions with their reasons and the pool's capacity hint", async () => {
    const connection = new Redis(redis.url);
    try {
      const broker = await Broker.connect({ redis: connection });
      const GB = 1024 ** 3;
      // a machine of its own pool as its agent reports it, and a planning round recorded as the planner records one
      await broker.registerMachine('e2e-plan', 'plan-m1', 'ready', encodeMachineStatus({
        models: [{ name: 'sdxl', size_bytes: 7 * GB, loaded: true }, { name: 'old', size_bytes: 20 * GB }],
        models_downloading: [{ model: 'wan', received: 1, total: 4 }],
        model_cache_budget_bytes: 30 * GB,
        model_cache_used_bytes: 27 * GB,
      }));
      await broker.recordPlannerRound('e2e-plan', {
        forecast: [{ model: 'flux', rate: 3.4, current: 0, lastHour: 0, method: 'holt+seasonal', explanation: 'yesterday 6.7/bucket' }],
        capacity: { machines: 3, servers: 3, offeredLoad: 1.2, waitExceedsTarget: 0.02, explanation: 'M/M/c: 3 machines' },
        waitTargetMs: 10_000,
        decisions: [
          { machine: 'plan-m1', action: 'evict', model: 'old', reason: 'make room for flux (12.0 GB)', forecast: 0 },
          { machine: 'plan-m1', action: 'prefetch', model: 'flux', reason: 'forecast 3.4/bucket (holt+seasonal)', forecast: 3.4 },
        ],
      });

      await page.goto(`${stack.monitor!.url}/#/planner`);
      const pool = 'section[data-pool="e2e-plan"]';
      await visible(`${pool} tr[data-machine="plan-m1"]`);
      const cell = (model: string) => page.getAttribute(`${pool} tr[data-machine="plan-m1"] td[data-model="${model}"]`, 'data-cell');
      expect(await cell('sdxl')).toBe('loaded');
      expect(await cell('old')).toBe('evicting');
      expect(await cell('flux')).toBe('planned');
      expect(await cell('wan')).toBe('downloading');
      expect(await page.textContent(`${pool} tr[data-decision="prefetch flux plan-m1"]`)).toContain('forecast 3.4/bucket');
      expect(await page.getAttribute(`${pool} [data-capacity-hint]`, 'data-capacity-hint')).toMatch(/^\d+$/);
      await screenshot(page, 'planner');
    } finally {
      connection.disconnect();
    }
  }, 60_000);

  it('shows a worker that was killed as offline, keeps it on its machine card, and shows it restarted', async () => {
    await page.goto(`${stack.monitor!.url}/#/`);
    await visible('article[data-machine="local-sim"]');
    const victim = stack.agent.status().processes.find((p) => p.name === WORKER_PROCESS[1]);
    expect(victim?.pid, 'the second worker process is running').toBeTypeOf('number');
    process.kill(victim!.pid!, 'SIGKILL'); // no goodbye: what the OOM killer or a crash does
    // the agent sees it die and says so; the worker itself never could
    await visible(`article[data-machine="local-sim"] li[data-worker="${WORKER[1]}"][data-state="offline"]`);
    await visible(`article[data-machine="local-sim"] li[data-worker="${WORKER[0]}"][data-state="idle"]`);
    await screenshot(page, 'fleet-worker-offline');
    // the supervisor starts it again: the same card, the same worker, idle again
    await visible(`article[data-machine="local-sim"] li[data-worker="${WORKER[1]}"][data-state="idle"]`);
    // the machine's page (same page, no reload: the history arrived through the feed)
    await page.click('article[data-machine="local-sim"] a.card-title');
    await visible(`.history li:has-text("${WORKER_PROCESS[1]}")`);
    await page.selectOption('select[aria-label="theme"]', 'dark');
    await screenshot(page, 'machine-history-dark');
    // a freshly loaded machine page has no feed events from before it opened: the history it shows was recorded
    await page.reload();
    await visible('section.machine-page[data-machine="local-sim"]');
    await visible(`.history li:has-text("${WORKER_PROCESS[1]}"):has-text("exited")`);
    await screenshot(page, 'machine-history-reloaded');
    // a fresh page (a new snapshot) still lists the worker
    await page.goto(`${stack.monitor!.url}/#/`);
    await page.reload();
    await visible(`article[data-machine="local-sim"] li[data-worker="${WORKER[1]}"]`);
  });

  it('restarts the machine on an operator action, after asking, and shows the outcome', async () => {
    await page.goto(`${stack.monitor!.url}/#/machines/standard/local-sim`);
    await visible('section.machine-page');
    // the agent's processes' output, streamed from the machine's log stream
    await visible(`pre.logs .log-process:has-text("${WORKER_PROCESS[0]}")`);
    await page.click('button:has-text("Restart machine")');
    await visible('dialog.confirm');
    await page.fill('dialog.confirm input', 'e2e restart');
    await page.click('dialog.confirm button.primary');
    await visible('.notice:has-text("restart sent to local-sim")');
    await visible('.commands li[data-stage="done"]');
    expect(await page.textContent('.commands li[data-stage="done"]')).toContain(`restarted`);
    // every worker is back after the restart
    for (const worker of WORKER) await visible(`tr[data-worker="${worker}"][data-state="idle"]`);
    await screenshot(page, 'machine-restarted-dark');
  });

  it('resumes after a dropped connection: what happened meanwhile still reaches the open page', async () => {
    await page.goto(`${stack.monitor!.url}/#/jobs`);
    await visible('[data-connection="live"]');
    await visible('.jobs-table');
    // the list was read before this job existed: only the feed can bring its row
    await page.dblclick('[data-connection]');
    const job = await api('POST', '/v1/jobs', { service: 'simulation', payload: { duration_ms: 200 } });
    await visible(`tr[data-job="${job.id}"][data-state="succeeded"]`);
    await visible('[data-connection="live"]');
    await page.goto(`${stack.monitor!.url}/#/queues`);
    await visible('[data-pool="standard"]');
    await screenshot(page, 'queues-dark');
    await page.selectOption('select[aria-label="theme"]', 'light');
    await page.setViewportSize({ width: 1024, height: 760 });
    await page.goto(`${stack.monitor!.url}/#/submit`);
    await visible('section.submit');
    await screenshot(page, 'submit-laptop-light');
    // a job submitted with an expected duration is routed by it: fast has no worker here, so its neighbour standard takes it
    await page.fill('input[aria-label="expected duration in seconds"]', '5');
    await page.click('section.submit button[type="submit"]');
    await visible('section.job-page [data-routing="hint"]');
    expect(await page.textContent('[data-routing="hint"]')).toBe('routed to standard: expected_duration_s = 5 s; fast has no online worker');
    expect(pageErrors).toEqual([]);
  });
});
