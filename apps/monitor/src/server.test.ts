import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MonitorServer, originsOf, startMonitorServer } from './server';

const logger = pino({ level: 'silent' });
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emp-monitor-dist-'));
  await mkdir(join(dir, 'assets'));
  await writeFile(join(dir, 'index.html'), '<!doctype html><div id="root"></div>');
  await writeFile(join(dir, 'assets', 'index-abc123.js'), 'console.log(1)');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the monitor server', () => {
  let server: MonitorServer;
  afterAll(async () => {
    await server?.close();
  });

  it('serves the page (read again after a rebuild) and its hashed assets (cached for good)', async () => {
    server = await startMonitorServer({ port: 0, logger, dir });
    const page = await fetch(`${server.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('cache-control')).toBe('no-cache');
    expect(await page.text()).toContain('<div id="root"></div>');
    const asset = await fetch(`${server.url}/assets/index-abc123.js`);
    expect(asset.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect((await fetch(`${server.url}/nothing-here.js`)).status).toBe(404);
  });

  it('tells the page where the API is once it listens, and not before', async () => {
    const early = await fetch(`${server.url}/config.json`);
    expect(early.status).toBe(503);
    expect(((await early.json()) as { error: { code: string } }).error.code).toBe('UNAVAILABLE');
    server.setApi({ url: 'http://127.0.0.1:3331', auth: true });
    const config = await fetch(`${server.url}/config.json`);
    expect(config.headers.get('cache-control')).toBe('no-store');
    expect(await config.json()).toEqual({ api_url: 'http://127.0.0.1:3331', auth: true });
  });

  it('takes a free port when the one asked for is in use', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const taken = (blocker.address() as { port: number }).port;
    const other = await startMonitorServer({ port: taken, logger, dir });
    try {
      expect(other.port).not.toBe(taken);
      expect((await fetch(`${other.url}/health`)).status).toBe(200);
    } finally {
      await other.close();
      blocker.close();
    }
  });
});

describe('originsOf', () => {
  it('names both loopback spellings a browser may show', () => {
    expect(originsOf('http://127.0.0.1:3333')).toEqual(['http://127.0.0.1:3333', 'http://localhost:3333']);
    expect(originsOf('http://monitor.internal:8080')).toEqual(['http://monitor.internal:8080']);
  });
});
