/**
 * `npm run flood -w @emp/monitor`: floods the monitor page and says how it
 * held up. Starts the local stack (private redis-server), registers a fleet
 * of 50 machines / 200 workers around it, drives a few hundred events a second
 * (jobs on 16 fast simulated workers, fleet workers flipping busy/idle), and
 * watches the page in headless Chromium: frames painted, the longest gap
 * between two frames, long tasks, and the event rate the page shows.
 * A development aid, not a test: it asserts nothing and prints what it saw.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Broker } from '@emp/core';
import { startRedis } from '@emp/testkit';
import { startLocalStack } from '@emp/testkit/stack';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { launchChromium, screenshot } from '../testing/browser';

const SECONDS = Number(process.env.FLOOD_SECONDS ?? 20);
const MACHINES = 50;
const WORKERS_PER_MACHINE = 4;
const POOLS = ['fast-lane', 'standard', 'heavy'];

const redis = await startRedis();
const stateDir = await mkdtemp(join(tmpdir(), 'emp-flood-'));
const logger = pino({ level: 'warn' });
const stack = await startLocalStack({
  redis: { url: redis.url, source: 'env' },
  stateDir,
  redisPort: 0,
  workers: 16,
  jobDurationMs: { min: 20, max: 120 },
  graceMs: 500,
  api: { host: '127.0.0.1', port: 0, auth: false },
  monitor: { port: 0 },
  logger,
});
const connection = new Redis(redis.url);
const broker = await Broker.connect({ redis: connection });

const gpus = (m: number, t: number) =>
  JSON.stringify([0, 1, 2, 3].map((index) => ({ index, name: 'NVIDIA RTX 4090', memory_total_mb: 24_564, memory_used_mb: (m * 977 + index * 3_000 + t * 50) % 24_564, utilization_pct: (m * 13 + index * 29 + t * 7) % 100 })));
for (let m = 0; m < MACHINES; m += 1) {
  const pool = POOLS[m % POOLS.length]!;
  await broker.registerMachine(pool, `gpu-${m}`, 'ready', { region: ['eu-west', 'us-east', 'ap-south'][m % 3]!, agent_started_at: String(Date.now() - m * 600_000), gpus: gpus(m, 0), models: JSON.stringify(['sdxl-base-1.0.safetensors', 'flux1-dev.safetensors']) });
  for (let w = 0; w < WORKERS_PER_MACHINE; w += 1) {
    await broker.registerWorker({ id: `gpu-${m}-w${w}`, pool, machine_id: `gpu-${m}`, capabilities: { services: ['comfyui'] } });
  }
}

const browser = await launchChromium();
const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
page.on('console', (message) => console.log(`page ${message.type()}: ${message.text()}`));
page.on('pageerror', (error) => console.log(`page error: ${error.message}`));
await page.goto(stack.monitor!.url);
await page.locator('[data-connection="live"]').waitFor({ timeout: 30_000 });
// count painted frames and the longest gap between two of them, and long tasks (over 50 ms)
// (browser code as text: this file is type-checked for Node, without the DOM's types)
await page.evaluate(`(() => {
  const flood = (window.flood = { frames: 0, maxGap: 0, longTasks: 0, longest: 0 });
  let last = performance.now();
  const tick = (now) => {
    flood.frames += 1;
    flood.maxGap = Math.max(flood.maxGap, now - last);
    last = now;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      flood.longTasks += 1;
      flood.longest = Math.max(flood.longest, entry.duration);
    }
  }).observe({ entryTypes: ['longtask'] });
})()`);

const started = Date.now();
let submitted = 0;
let flips = 0;
const rates: string[] = [];
while (Date.now() - started < SECONDS * 1_000) {
  const second = Math.floor((Date.now() - started) / 1_000);
  await broker.submitMany(Array.from({ length: 12 }, () => ({ service: 'simulation', payload: { steps: 3 } })));
  submitted += 12;
  for (let i = 0; i < 10; i += 1) {
    const m = (flips + i) % MACHINES;
    await broker.setWorkerState(POOLS[m % POOLS.length]!, `gpu-${m}-w${flips % WORKERS_PER_MACHINE}`, flips % 2 ? 'idle' : 'draining');
  }
  flips += 1;
  if (flips % 10 === 0) {
    for (let m = 0; m < MACHINES; m += 1) await broker.registerMachine(POOLS[m % POOLS.length]!, `gpu-${m}`, 'ready', { gpus: gpus(m, second) });
    rates.push((await page.textContent('[data-connection]')) ?? '');
    if (rates.length === 3) await page.goto(`${stack.monitor!.url}/#/jobs`);
    if (rates.length === 6) await page.goto(`${stack.monitor!.url}/#/queues`);
    if (rates.length === 9) await page.goto(`${stack.monitor!.url}/#/`);
  }
  await sleep(100);
}
const seen = await page.evaluate('window.flood');
const shot = await screenshot(page, 'flood-fleet', { fullPage: false });
console.log(JSON.stringify({ seconds: SECONDS, submitted, workerFlips: flips * 10, indicator: rates, page: seen, screenshot: shot }, null, 2));

await browser.close();
connection.disconnect();
await stack.stop();
await redis.stop();
await rm(stateDir, { recursive: true, force: true });
