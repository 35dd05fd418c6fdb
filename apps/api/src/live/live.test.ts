import { CLOSE_SLOW_CONSUMER, type LiveServerMessage } from '@emp/core';
import { call } from '@emp/testkit';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import WebSocket from 'ws';

let stack: ApiStack;
let operator: string;
let client: string;

beforeAll(async () => {
  stack = await startApiStack({ worker: { durationMs: 100, steps: 3 } });
  operator = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
  client = (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'acme' })).key;
});
afterAll(async () => {
  await stack?.stop();
});

/** A socket on /v1/live whose messages are awaited in order. */
async function open(key: string, base = stack.url): Promise<{ socket: WebSocket; next(predicate?: (m: LiveServerMessage) => boolean): Promise<LiveServerMessage>; send(m: unknown): void }> {
  const socket = new WebSocket(`${base.replace('http', 'ws')}/v1/live?api_key=${key}`);
  const received: LiveServerMessage[] = [];
  const waiters: Array<() => void> = [];
  socket.on('message', (data) => {
    received.push(JSON.parse(data.toString()) as LiveServerMessage);
    waiters.splice(0).forEach((wake) => wake());
  });
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
  return {
    socket,
    send: (m) => socket.send(typeof m === 'string' ? m : JSON.stringify(m)),
    async next(predicate = () => true) {
      for (;;) {
        const index = received.findIndex(predicate);
        if (index >= 0) return received.splice(0, index + 1).at(-1)!;
        await new Promise<void>((wake) => waiters.push(wake));
      }
    },
  };
}

const isEvent = (type: string) => (m: LiveServerMessage) => m.type === 'event' && m.event === type;

describe('following a job over WebSocket', () => {
  it('sends a snapshot, then the job\'s events, the terminal one with the result', async () => {
    const live = await open(client);
    const job = await call(stack.url, 'POST', '/v1/jobs', { key: client, body: { service: 'simulation', payload: { duration_ms: 300 } } });
    live.send({ type: 'subscribe', job: job.body.id });
    const snapshot = await live.next();
    expect(snapshot).toMatchObject({ type: 'snapshot', job: { id: job.body.id, tenant: 'acme' }, cursor: expect.stringMatching(/^\d+-\d+$/) });
    const done = await live.next(isEvent('job.succeeded'));
    expect(done).toMatchObject({ job: job.body.id, state: 'succeeded', result: { simulated: true } });
    live.socket.close();
  });

  it('tells a queued job its position as the queue moves', async () => {
    const live = await open(client);
    const ahead = await call(stack.url, 'POST', '/v1/jobs', { key: client, body: { service: 'simulation', payload: { duration_ms: 400 } } });
    const middle = await call(stack.url, 'POST', '/v1/jobs', { key: client, body: { service: 'simulation', payload: { duration_ms: 1_000 } } });
    const last = await call(stack.url, 'POST', '/v1/jobs', { key: client, body: { service: 'simulation', payload: { duration_ms: 10 } } });
    live.send({ type: 'subscribe', job: last.body.id });
    const snapshot = await live.next();
    expect(snapshot.type === 'snapshot' && snapshot.job.position).toBeGreaterThan(0);
    expect(await live.next((m) => m.type === 'position')).toMatchObject({ type: 'position', job: last.body.id, position: 0 });
    await live.next(isEvent('job.succeeded'));
    expect([ahead.body.id, middle.body.id]).toHaveLength(2);
    live.socket.close();
  });

  it('never shows another tenant\'s job, and answers bad messages with a coded error', async () => {
    const other = (await stack.server.app.apiKeys.create({ role: 'client', tenant: 'globex' })).key;
    const job = await call(stack.url, 'POST', '/v1/jobs', { key: client, body: { service: 'simulation' } });
    const live = await open(other);
    live.send({ type: 'subscribe', job: job.body.id, after: 'start' });
    expect(await live.next()).toMatchObject({ type: 'error', code: 'NOT_FOUND' });
    live.send({ type: 'monitor' });
    expect(await live.next()).toMatchObject({ type: 'error', code: 'FORBIDDEN' });
    live.send('not json');
    expect(await live.next()).toMatchObject({ type: 'error', code: 'VALIDATION' });
    live.send({ type: 'subscribe', job: 'nope' });
    expect(await live.next()).toMatchObject({ type: 'error', code: 'VALIDATION', issues: [{ path: 'job', message: expect.stringContaining('job id') }] });
    live.socket.close();
    const refused = new WebSocket(`${stack.url.replace('http', 'ws')}/v1/live`);
    const status = await new Promise((resolve) =>
      refused.on('unexpected-response', (_request, response) => {
        response.destroy();
        resolve(response.statusCode);
      }),
    );
    expect(status).toBe(401);
  });

  it('closes a consumer that does not read with 4008 instead of buffering without bound', async () => {
    const small = await startApiStack({ worker: false, server: { live: { maxBufferedBytes: 64 * 1024 } } });
    try {
      // a backlog of large events (~3 KB each, ~18 MB in all: more than the kernel's socket buffers hold)
      await small.broker.registerWorker({ id: 'w', pool: 'standard', capabilities: { services: ['http'] } });
      await small.broker.submit({ service: 'http' });
      const claim = await small.broker.claim('standard', 'w');
      const progress = { stage: 'running' as const, message: 'm'.repeat(1_000), preview: 'p'.repeat(2_000) };
      for (let batch = 0; batch < 6; batch++) {
        await Promise.all(Array.from({ length: 1_000 }, (_, i) => small.broker.progress(claim.job!.lease, { ...progress, value: batch * 1_000 + i })));
      }
      const key = (await small.server.app.apiKeys.create({ role: 'operator' })).key;
      const live = await open(key, small.url);
      const closed = new Promise<number>((resolve) => live.socket.once('close', resolve));
      live.socket.pause();
      live.send({ type: 'monitor', after: { standard: '0-0' } });
      // read nothing until the server has given up on this socket
      const serverSide = () => [...small.server.app.websocketServer.clients][0];
      while (serverSide() && serverSide()!.readyState === WebSocket.OPEN) await new Promise((resolve) => setTimeout(resolve, 20));
      live.socket.resume();
      expect(await closed).toBe(CLOSE_SLOW_CONSUMER);
    } finally {
      await small.stop();
    }
  });
});

describe('following a workflow over WebSocket', () => {
  it("sends every event of the workflow and of its steps' jobs, from its submission, and keeps tenants apart", async () => {
    const workflow = await call(stack.url, 'POST', '/v1/workflows', {
      key: client,
      body: { steps: { a: { service: 'simulation', payload: { duration_ms: 50 } }, b: { service: 'simulation', needs: ['a'], payload: { duration_ms: 50 } } } },
    });
    const live = await open(client);
    live.send({ type: 'subscribe_workflow', workflow: workflow.body.id });
    const first = await live.next();
    expect(first).toMatchObject({ type: 'event', event: 'workflow.submitted', workflow: workflow.body.id, tenant: 'acme' });
    const done = await live.next(isEvent('workflow.succeeded'));
    expect(done).toMatchObject({ workflow: workflow.body.id, state: 'succeeded' });
    live.socket.close();

    const other = await stack.server.app.apiKeys.create({ role: 'client', tenant: 'globex' });
    const stranger = await open(other.key);
    stranger.send({ type: 'subscribe_workflow', workflow: workflow.body.id });
    expect(await stranger.next()).toMatchObject({ type: 'error', code: 'NOT_FOUND', workflow: workflow.body.id });
    stranger.socket.close();
  });

  it('delivers step job events in between, in stream order', async () => {
    const workflow = await call(stack.url, 'POST', '/v1/workflows', { key: client, body: { steps: { only: { service: 'simulation', payload: { duration_ms: 50 } } } } });
    const live = await open(client);
    live.send({ type: 'subscribe_workflow', workflow: workflow.body.id, after: 'start' });
    const events: string[] = [];
    for (;;) {
      const message = await live.next((m) => m.type === 'event');
      if (message.type === 'event') events.push(message.event);
      if (message.type === 'event' && message.event === 'workflow.succeeded') break;
    }
    expect(events[0]).toBe('workflow.submitted');
    expect(events.indexOf('job.queued')).toBeGreaterThan(0);
    expect(events.indexOf('job.succeeded')).toBeLessThan(events.indexOf('workflow.step_succeeded'));
    live.socket.close();
  });
});

describe('a client sending bad frames in a loop', () => {
  it('a cursor past what Redis takes is refused as bad input, naming the limit', async () => {
    const key = (await stack.server.app.apiKeys.create({ role: 'operator' })).key;
    const live = await open(key);
    live.send({ type: 'monitor', after: { standard: '99999999999999999999-0' } });
    expect(await live.next()).toMatchObject({ type: 'error', code: 'VALIDATION', message: expect.stringMatching(/at most 18446744073709551615/) });
    live.socket.close();
  });


  it('cannot flood the log: the first lines, then one summary per interval with the count; every refused frame is counted in the metrics', async () => {
    const lines: Array<{ level: number; msg: string; suppressed?: number }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const noisy = await startApiStack({ worker: false, server: { logger, live: { errorLogBurst: 3, errorLogIntervalMs: 300 } } });
    try {
      const key = (await noisy.server.app.apiKeys.create({ role: 'operator' })).key;
      const live = await open(key, noisy.url);
      // not a message at all, and a resume from a cursor while Redis is unreachable (the server fails on it)
      noisy.connection.disconnect();
      const frames = ['not json', JSON.stringify({ type: 'monitor', after: { standard: '0-0' } })];
      for (let i = 0; i < 200; i++) live.send(frames[i % 2]);
      for (let i = 0; i < 200; i++) expect((await live.next()).type).toBe('error');
      const errors = () => lines.filter((line) => line.level >= 50);
      expect(errors().length).toBe(3);
      expect(lines.filter((line) => line.suppressed !== undefined)).toEqual([]);
      await new Promise((resolve) => setTimeout(resolve, 350));
      live.send(frames[1]);
      await live.next();
      const summaries = lines.filter((line) => line.suppressed !== undefined);
      expect(summaries).toEqual([expect.objectContaining({ level: 40, suppressed: 98, msg: expect.stringMatching(/^98 more error lines of this client suppressed/) })]);
      expect(errors().length).toBe(3);
      await noisy.connection.connect();
      const metrics = (await call(noisy.url, 'GET', '/metrics')).body as string;
      expect(metrics).toMatch(/^emp_api_live_invalid_frames_total\{reason="validation"\} 100$/m);
      expect(metrics).toMatch(/^emp_api_live_invalid_frames_total\{reason="error"\} 101$/m);
      live.socket.close();
    } finally {
      await noisy.stop();
    }
  });
});

describe('many subscribers', () => {
  it('share one Redis reader per pool however many sockets follow jobs, and each socket gets only its job', async () => {
    const jobs = await Promise.all(Array.from({ length: 20 }, () => call(stack.url, 'POST', '/v1/jobs', { key: client, body: { service: 'simulation', payload: { duration_ms: 5 } } })));
    const sockets = await Promise.all(Array.from({ length: 200 }, () => open(client)));
    sockets.forEach((live, i) => live.send({ type: 'subscribe', job: jobs[i % jobs.length]!.body.id, after: 'start' }));
    const finished = await Promise.all(sockets.map((live) => live.next(isEvent('job.succeeded'))));
    finished.forEach((message, i) => expect(message).toMatchObject({ job: jobs[i % jobs.length]!.body.id }));
    const clients = ((await stack.connection.call('CLIENT', 'LIST')) as string).split('\n');
    expect(clients.filter((line) => / cmd=xread /.test(line))).toHaveLength(1);
    for (const live of sockets) live.socket.close();
  });
});

describe('the monitor feed', () => {
  it('gives an operator a snapshot, then every event, and resumes from its cursors', async () => {
    const monitor = await open(operator);
    monitor.send({ type: 'monitor' });
    const snapshot = await monitor.next();
    if (snapshot.type !== 'monitor.snapshot') throw new Error(`expected a snapshot, got ${snapshot.type}`);
    expect(snapshot.cursors).toHaveProperty('standard');
    expect(snapshot.workers).toContainEqual(expect.objectContaining({ id: 'api-test-worker' }));
    expect(snapshot.machines).toContainEqual(expect.objectContaining({ id: 'api-test-machine' }));
    const job = await call(stack.url, 'POST', '/v1/jobs?wait=30', { key: client, body: { service: 'simulation' } });
    const queued = await monitor.next((m) => m.type === 'event' && m.event === 'job.queued' && m.job === job.body.id);
    await monitor.next((m) => m.type === 'event' && m.event === 'job.succeeded' && m.job === job.body.id);
    monitor.socket.close();

    // reconnecting with the cursor of an event replays what followed it, without a snapshot
    const again = await open(operator);
    again.send({ type: 'monitor', after: { standard: queued.type === 'event' ? queued.id : '' } });
    expect((await again.next()).type).toBe('event');
    const next = await again.next((m) => m.type === 'event' && m.job === job.body.id);
    expect(next).toMatchObject({ event: 'job.starting' });
    again.socket.close();
  });
});

/** Reads an SSE response to its end: the events as [id, event type, data]. */
async function readSse(response: Response): Promise<Array<[string, string, Record<string, unknown>]>> {
  const text = await response.text();
  return text
    .split('\n\n')
    .filter((block) => block.startsWith('id: '))
    .map((block) => {
      const fields = Object.fromEntries(block.split('\n').map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 2)]));
      return [fields.id!, fields.event!, JSON.parse(fields.data!) as Record<string, unknown>];
    });
}

describe('Server-Sent Events of a job', () => {
  it('streams every event with its id, ends after the terminal one, and resumes after Last-Event-ID', async () => {
    const job = await call(stack.url, 'POST', '/v1/jobs', { key: client, body: { service: 'simulation', payload: { duration_ms: 200 } } });
    const stream = await fetch(`${stack.url}/v1/jobs/${job.body.id}/stream`, { headers: { authorization: `Bearer ${client}` } });
    expect(stream.headers.get('content-type')).toBe('text/event-stream');
    const events = await readSse(stream);
    const history = (await call(stack.url, 'GET', `/v1/jobs/${job.body.id}/events`, { key: client })).body.events;
    expect(events.map(([id, type]) => `${id} ${type}`)).toEqual(history.map((e: { id: string; type: string }) => `${e.id} ${e.type}`));
    expect(events.at(-1)![2]).toMatchObject({ type: 'job.succeeded', result: { simulated: true } });

    const resumed = await fetch(`${stack.url}/v1/jobs/${job.body.id}/stream`, { headers: { authorization: `Bearer ${client}`, 'last-event-id': events[1]![0] } });
    expect((await readSse(resumed)).map(([id]) => id)).toEqual(events.slice(2).map(([id]) => id));
  });
});

describe('Server-Sent Events of a job, filtered by type', () => {
  it('sends only the types and families asked for, still ends after the terminal event, and refuses an unknown type by name', async () => {
    const job = await call(stack.url, 'POST', '/v1/jobs', { key: client, body: { service: 'simulation', payload: { duration_ms: 100, steps: 2 } } });
    const stream = await fetch(`${stack.url}/v1/jobs/${job.body.id}/stream?events=job.running,job.succeeded`, { headers: { authorization: `Bearer ${client}` } });
    expect((await readSse(stream)).map(([, type]) => type)).toEqual(['job.running', 'job.succeeded']);
    const family = await fetch(`${stack.url}/v1/jobs/${job.body.id}/stream?events=job.*`, { headers: { authorization: `Bearer ${client}` } });
    expect((await readSse(family)).map(([, type]) => type)).toContain('job.progress');

    const refused = await call(stack.url, 'GET', `/v1/jobs/${job.body.id}/stream?events=job.running,job.finished`, { key: client });
    expect(refused.status).toBe(400);
    expect(JSON.stringify(refused.body)).toMatch(/unknown event type 'job\.finished': expected one of job\.queued, /);
  });
});

describe('resuming from a cursor older than the trimmed stream', () => {
  it('says events were missed, with the first event still kept, over SSE and WebSocket; a cursor still kept resumes silently', async () => {
    const job = await call(stack.url, 'POST', '/v1/jobs?wait=30', { key: client, body: { service: 'simulation', payload: { duration_ms: 50, steps: 3 } } });
    const events = (await call(stack.url, 'GET', `/v1/jobs/${job.body.id}/events`, { key: client })).body.events as Array<{ id: string; type: string }>;
    expect(events.length).toBeGreaterThan(4);
    // exactly what trimming does to the oldest entries, here up to the job's third event
    await stack.connection.xtrim(stack.broker.keys.events('standard'), 'MINID', events[2]!.id);
    const gone = events[0]!.id;

    const resumed = await fetch(`${stack.url}/v1/jobs/${job.body.id}/stream`, { headers: { authorization: `Bearer ${client}`, 'last-event-id': gone } });
    const blocks = (await resumed.text()).split('\n\n').filter((block) => block.startsWith('event: ') || block.startsWith('id: '));
    expect(blocks[0]).toBe(`event: events.missed\ndata: ${JSON.stringify({ type: 'events.missed', pool: 'standard', after: gone, first_id: events[2]!.id, job: job.body.id })}`);
    expect(blocks.slice(1).map((block) => block.split('\n')[0])).toEqual(events.slice(2).map((e) => `id: ${e.id}`));
    const kept = await fetch(`${stack.url}/v1/jobs/${job.body.id}/stream`, { headers: { authorization: `Bearer ${client}`, 'last-event-id': events[2]!.id } });
    expect(await kept.text()).not.toContain('events.missed');

    const live = await open(client);
    live.send({ type: 'subscribe', job: job.body.id, after: gone });
    expect(await live.next()).toEqual({ type: 'events.missed', pool: 'standard', job: job.body.id, after: gone, first_id: events[2]!.id });
    expect(await live.next()).toMatchObject({ type: 'event', id: events[2]!.id });
    live.socket.close();
    const again = await open(client);
    again.send({ type: 'subscribe', job: job.body.id, after: events[3]!.id });
    expect(await again.next()).toMatchObject({ type: 'event', id: events[4]!.id });
    again.socket.close();

    const monitor = await open(operator);
    monitor.send({ type: 'monitor', after: { standard: gone } });
    expect(await monitor.next()).toEqual({ type: 'events.missed', pool: 'standard', after: gone, first_id: expect.stringMatching(/^\d+-\d+$/) });
    monitor.socket.close();
  });

  it('notices trimming by the broker itself (eventsMaxLen, trimmed by whole nodes)', async () => {
    const small = await startApiStack({ worker: false, broker: { eventsMaxLen: 100 } });
    try {
      await small.broker.registerWorker({ id: 'w', pool: 'standard', capabilities: { services: ['http'] } });
      const { id } = await small.broker.submit({ service: 'http' });
      const first = (await small.broker.jobEvents(id)).events[0]!.id;
      const claim = await small.broker.claim('standard', 'w');
      for (let i = 0; i < 400; i++) await small.broker.progress(claim.job!.lease, { stage: 'running', value: i });
      await small.broker.complete(claim.job!.lease, null);
      expect(await small.connection.xlen(small.broker.keys.events('standard'))).toBeLessThan(400);
      const stream = await fetch(`${small.url}/v1/jobs/${id}/stream`, { headers: { 'last-event-id': first, authorization: `Bearer ${(await small.server.app.apiKeys.create({ role: 'operator' })).key}` } });
      const text = await stream.text();
      expect(text.split('\n\n')[1]).toMatch(/^event: events\.missed\ndata: .*"after":"\d+-\d+"/);
      expect(text).toContain('event: job.succeeded');
    } finally {
      await small.stop();
    }
  });
});
