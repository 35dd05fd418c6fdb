import { FakeHttpServer, type RecordedRequest, waitFor } from '@emp/testkit';
import { BrokerHarness, POOL } from '@emp/testkit/worker';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { simulationConnector } from '../connectors/simulation';
import { Worker } from '../worker';
import { HttpLogShipper } from './http-log-shipper';

/** Fluent Bit's http input, as far as a client can tell: JSON on POST /<tag>, 201 on success. */
let receiver: FakeHttpServer;
const shippers: HttpLogShipper[] = [];
beforeEach(async () => {
  receiver = new FakeHttpServer({}, (_request, response) => {
    response.writeHead(201).end();
  });
  await receiver.listen();
});
afterEach(async () => {
  for (const shipper of shippers.splice(0)) await shipper.close();
  await receiver.close();
});

function shipper(options: Partial<ConstructorParameters<typeof HttpLogShipper>[0]> = {}): HttpLogShipper {
  const s = new HttpLogShipper({ url: `${receiver.url}/emp.worker`, flushIntervalMs: 20, maxBackoffMs: 50, ...options });
  shippers.push(s);
  return s;
}

const records = (requests: RecordedRequest[]) => requests.flatMap((r) => r.body as Array<Record<string, unknown>>);

describe('http log shipper', () => {
  it('ships pino records in batches, in order, as JSON arrays to the tag path', async () => {
    const s = shipper({ batchSize: 10 });
    const logger = pino({ level: 'debug' }, s);
    for (let i = 0; i < 25; i++) logger.debug({ i }, 'line');
    await waitFor('every record to arrive', () => s.shipped === 25);
    const posts = receiver.requestsTo('/emp.worker');
    expect(posts.every((p) => p.method === 'POST' && Array.isArray(p.body) && (p.body as unknown[]).length <= 10)).toBe(true);
    expect(records(posts).map((r) => r.i)).toEqual(Array.from({ length: 25 }, (_, i) => i));
    expect(records(posts)[0]).toMatchObject({ msg: 'line', level: 20 });
  });

  it('keeps records while the receiver fails and sends them once it is back', async () => {
    receiver.failNext('/emp.worker', 503, 'busy', 3);
    const s = shipper();
    const logger = pino({}, s);
    logger.info('first');
    logger.info('second');
    await waitFor('the records to arrive after the failures', () => s.shipped === 2);
    expect(records(receiver.requestsTo('/emp.worker')).slice(-2).map((r) => r.msg)).toEqual(['first', 'second']);
    expect(receiver.requestsTo('/emp.worker').length).toBeGreaterThanOrEqual(4);
  });

  it('drops the oldest records beyond its buffer and counts them, never blocking the logger', async () => {
    const url = receiver.url;
    await receiver.close(); // the receiver is gone
    const s = new HttpLogShipper({ url: `${url}/emp.worker`, maxBufferedRecords: 5, flushIntervalMs: 1_000 });
    shippers.push(s);
    const logger = pino({}, s);
    for (let i = 0; i < 12; i++) logger.info({ i }, 'x');
    expect(s.dropped).toBe(7);
    await s.flush();
    expect(s.shipped).toBe(0);
    expect(s.lastError).toBeDefined();
  });

  it('ships a worker’s job lifecycle with its identifying fields', async () => {
    const harness = await BrokerHarness.start();
    try {
      const s = shipper({ batchSize: 1_000 });
      const worker = new Worker({
        broker: harness.broker,
        id: 'w-logs',
        pool: POOL,
        machineId: 'm-1',
        deploymentEnv: 'test',
        region: 'local',
        capabilities: { services: ['simulation'] },
        connectors: [simulationConnector({ durationMs: 10, steps: 1 })],
        logger: pino({ level: 'debug' }, s),
      });
      await worker.start();
      const { id } = await harness.broker.submit({ service: 'simulation' });
      await harness.jobInState(id, ['succeeded']);
      await worker.stop({ graceMs: 0 });
      await s.flush();
      const lines = records(receiver.requestsTo('/emp.worker')).filter((r) => r.job_id === id);
      expect(lines.map((l) => l.msg)).toEqual(expect.arrayContaining(['job received', 'job started', 'job completed']));
      for (const line of lines) expect(line).toMatchObject({ worker_id: 'w-logs', machine_id: 'm-1', service_type: 'simulation', connector_id: 'simulation', deployment_env: 'test', region: 'local' });
    } finally {
      await harness.stop();
    }
  });
});

