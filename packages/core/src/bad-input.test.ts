import { usePrivateRedis } from '@emp/testkit/private-redis';
import { beforeEach, describe, expect, it } from 'vitest';
import { Broker, type ClaimedJob, type Lease } from './broker';
import type { WorkerRegistration } from './capabilities';
import {
  EmpError,
  LeaseLostError,
  NotFoundError,
  NotRetryableError,
  PayloadTooLargeError,
  UnknownServiceError,
  UnknownWorkerError,
  ValidationError,
} from './errors';
import type { SubmitJobInput } from './job';

// Every bad input gets a clear, typed error naming what was wrong and where, and
// changes nothing: the dataset digest, the key count and the event stream are
// the same after the refused call as before it.

const POOL = 'standard';
const MISSING_ID = 'standard.0000000000000000';

// DEBUG DIGEST gives a hash of the whole dataset: "changes nothing" is checked on everything
const { redis } = usePrivateRedis({ args: ['--enable-debug-command', 'local'] });
let broker: Broker;
let queuedId: string;
let held: ClaimedJob;

beforeEach(async () => {
  broker = await Broker.connect({ redis, config: { maxPayloadBytes: 1024, maxResultBytes: 1024 } });
  await broker.registerWorker({ id: 'w', pool: POOL, capabilities: { services: ['simulation'] } });
  const first = await broker.submit({ service: 'simulation' });
  queuedId = (await broker.submit({ service: 'simulation' })).id;
  const claim = await broker.claim(POOL, 'w');
  if (claim.job?.id !== first.id) throw new Error('setup: expected to hold the first job');
  held = claim.job;
});

interface Snapshot {
  digest: unknown;
  keys: number;
  events: number;
}

async function snapshot(): Promise<Snapshot> {
  const [digest, keys, events] = await Promise.all([
    redis.call('DEBUG', 'DIGEST'),
    redis.dbsize(),
    redis.xlen(broker.keys.events(POOL)),
  ]);
  return { digest, keys, events };
}

interface Expected {
  /** the `what` of a ValidationError */
  what?: string;
  /** field path of the first issue */
  path?: string;
  message?: string | RegExp;
}

/** Runs `action`, expects it to fail with `ErrorClass` as described, and checks nothing changed. */
async function expectRefused(action: () => Promise<unknown>, ErrorClass: new (...args: never[]) => Error, expected: Expected = {}) {
  const before = await snapshot();
  const error = await action().then(
    (value) => new Error(`expected ${ErrorClass.name}, but the call succeeded with ${JSON.stringify(value)}`),
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ErrorClass);
  if (error instanceof ValidationError) {
    if (expected.what !== undefined) expect(error.what).toBe(expected.what);
    if (expected.path !== undefined) expect(error.issues.map((i) => i.path)).toContain(expected.path);
    expect(error.code).toBe('VALIDATION');
  }
  if (expected.message !== undefined) {
    if (typeof expected.message === 'string') expect((error as Error).message).toBe(expected.message);
    else expect((error as Error).message).toMatch(expected.message);
  }
  expect(await snapshot()).toEqual(before);
  return error;
}

function nested(depth: number): unknown {
  let value: unknown = 'x';
  for (let i = 0; i < depth; i++) value = { k: value };
  return value;
}

describe('submit: malformed jobs are refused with the field that is wrong', () => {
  const cases: Array<[string, unknown, string, RegExp?]> = [
    ['service of the wrong type', { service: 123 }, 'service', /expected string, received number/],
    ['no service', {}, 'service', /expected string, received undefined/],
    ['service in capitals', { service: 'Simulation' }, 'service', /a service name is lowercase letters/],
    ['an unknown top-level field', { service: 'simulation', colour: 'red' }, '', /Unrecognized key: "colour"/],
    ['requirements of the wrong type', { service: 'simulation', requirements: 'gpu' }, 'requirements'],
    ['an unknown requirement', { service: 'simulation', requirements: { gpu: 1 } }, 'requirements', /Unrecognized key: "gpu"/],
    ['negative gpu memory', { service: 'simulation', requirements: { hardware: { gpu_memory_gb: -24 } } }, 'requirements.hardware.gpu_memory_gb', /expected number to be >=0/],
    ['gpu memory as text', { service: 'simulation', requirements: { hardware: { gpu_memory_gb: '24' } } }, 'requirements.hardware.gpu_memory_gb', /expected number, received string/],
    ['an unknown hardware field', { service: 'simulation', requirements: { hardware: { tpu: 1 } } }, 'requirements.hardware', /Unrecognized key: "tpu"/],
    ['models not a list', { service: 'simulation', requirements: { models: 'sdxl' } }, 'requirements.models', /expected array/],
    ['33 models', { service: 'simulation', requirements: { models: Array.from({ length: 33 }, (_, i) => `m${i}`) } }, 'requirements.models', /<=32/],
    ['an empty model name', { service: 'simulation', requirements: { models: [''] } }, 'requirements.models.0'],
    ['65 custom nodes', { service: 'simulation', requirements: { custom_nodes: Array.from({ length: 65 }, (_, i) => `n${i}`) } }, 'requirements.custom_nodes', /<=64/],
    ['a constraint array of 65 values', { service: 'simulation', requirements: { constraints: { features: Array.from({ length: 65 }, (_, i) => `f${i}`) } } }, 'requirements.constraints.features'],
    ['a null constraint', { service: 'simulation', requirements: { constraints: { region: null } } }, 'requirements.constraints.region'],
    ['a constraint array holding objects', { service: 'simulation', requirements: { constraints: { gpus: [{ a: 1 }] } } }, 'requirements.constraints.gpus'],
    ['an empty constraint label', { service: 'simulation', requirements: { constraints: { '': 1 } } }, 'requirements.constraints.', /Invalid key/],
    ['an exclusion of the wrong type', { service: 'simulation', requirements: { exclude: ['cn'] } }, 'requirements.exclude'],
    ['an unknown isolation', { service: 'simulation', requirements: { isolation: 'total' } }, 'requirements.isolation'],
    ['a bad pool name', { service: 'simulation', requirements: { pool: 'Heavy_Lane' } }, 'requirements.pool', /a pool name is lowercase/],
    ['priority above 1000', { service: 'simulation', priority: 1001 }, 'priority', /<=1000/],
    ['a fractional priority', { service: 'simulation', priority: 1.5 }, 'priority', /expected int/],
    ['zero max attempts', { service: 'simulation', max_attempts: 0 }, 'max_attempts', />=1/],
    ['a bad tenant', { service: 'simulation', tenant: 'acme corp' }, 'tenant', /a tenant id is letters/],
    ['a negative queue ttl', { service: 'simulation', deadlines: { queue_ttl_ms: -5 } }, 'deadlines.queue_ttl_ms', />0/],
    ['an unknown deadline', { service: 'simulation', deadlines: { eta: 5 } }, 'deadlines', /Unrecognized key: "eta"/],
    ['a negative delay', { service: 'simulation', delay_ms: -1 }, 'delay_ms', />=0/],
    ['jitter above 1', { service: 'simulation', backoff: { jitter: 2 } }, 'backoff.jitter', /<=1/],
    ['a webhook that is not a URL', { service: 'simulation', webhook: { url: 'not a url' } }, 'webhook.url'],
    ['a file:// webhook', { service: 'simulation', webhook: { url: 'file:///etc/passwd' } }, 'webhook.url', /scheme file is not allowed; a webhook URL is http:\/\/ or https:\/\//],
    ['a gopher:// webhook', { service: 'simulation', webhook: { url: 'gopher://127.0.0.1:6379/_FLUSHALL' } }, 'webhook.url', /scheme gopher is not allowed/],
    ['an unknown webhook event', { service: 'simulation', webhook: { url: 'https://example.com/h', events: ['all'] } }, 'webhook.events.0'],
    ['an empty idempotency key', { service: 'simulation', idempotency_key: '' }, 'idempotency_key', />=1 characters/],
    ['a negative workflow step', { service: 'simulation', step: -1 }, 'step', />=0/],
  ];

  it.each(cases)('%s', async (_name, input, path, message) => {
    await expectRefused(() => broker.submit(input as SubmitJobInput), ValidationError, { what: 'job', path, ...(message ? { message } : {}) });
  });

  it('the error message names the field and the reason', async () => {
    const error = await expectRefused(
      () => broker.submit({ service: 'simulation', requirements: { hardware: { gpu_memory_gb: -24 } } }),
      ValidationError,
    );
    expect((error as Error).message).toBe('invalid job: requirements.hardware.gpu_memory_gb: Too small: expected number to be >=0');
  });

  it('reports every wrong field at once', async () => {
    const error = (await expectRefused(
      () => broker.submit({ service: 'simulation', priority: 5000, max_attempts: 0, tenant: '' } as SubmitJobInput),
      ValidationError,
    )) as ValidationError;
    expect(error.issues.map((i) => i.path).sort()).toEqual(['max_attempts', 'priority', 'tenant']);
  });

  it('a constraint nested 1,000 deep is refused as invalid requirements', async () => {
    await expectRefused(
      () => broker.submit({ service: 'simulation', requirements: { constraints: { deep: nested(1_000) as string } } }),
      ValidationError,
      { what: 'job' },
    );
  });

  it('a constraint nested 5,000 deep is refused as invalid requirements (not a stack overflow)', async () => {
    await expectRefused(
      () => broker.submit({ service: 'simulation', requirements: { constraints: { deep: nested(5_000) as string } } }),
      ValidationError,
      { what: 'job' },
    );
  });

  it('requirements with 10,000 constraint labels are refused', async () => {
    const constraints = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`label-${i}`, i]));
    await expectRefused(() => broker.submit({ service: 'simulation', requirements: { constraints } }), ValidationError, { what: 'job' });
  });

  it('a payload that is not JSON (a BigInt) is refused as invalid, not thrown as a TypeError', async () => {
    await expectRefused(() => broker.submit({ service: 'simulation', payload: { n: 10n } }), ValidationError, { what: 'job', path: 'payload' });
  });

  it('a job whose constraints Lua cannot decode never blocks the rest of its pool', async () => {
    await redis.flushall();
    broker = await Broker.connect({ redis });
    // whether or not the broker accepts it, it must not poison registration and claims
    await broker.submit({ service: 'simulation', requirements: { constraints: { deep: nested(1_100) as string } } }).catch(() => undefined);
    const normal = await broker.submit({ service: 'simulation' });
    await broker.registerWorker({ id: 'w', pool: POOL, capabilities: { services: ['simulation'] } });
    expect((await broker.claim(POOL, 'w')).job?.id).toBe(normal.id);
  });
  it('a refused submit leaves no idempotency record behind (no phantom duplicate on resubmit)', async () => {
    const request: SubmitJobInput = {
      service: 'simulation',
      idempotency_key: 'order-1',
      requirements: { constraints: { deep: nested(1_000) as string } },
    };
    await broker.submit(request).catch(() => undefined);
    const again = await broker.submit(request).then(
      (result) => result,
      (error: unknown) => error,
    );
    // refused again, or accepted for real: never a "duplicate" of a job that does not exist
    if (!(again instanceof Error)) {
      expect(await broker.getJob((again as { id: string }).id)).not.toBeNull();
    }
  });

  it('a worker whose labels Lua cannot decode never blocks submits or other workers', async () => {
    await broker
      .registerWorker({ id: 'deep', pool: POOL, capabilities: { services: ['simulation'], labels: { deep: nested(1_100) as string } } })
      .catch(() => undefined);
    await broker.registerWorker({ id: 'plain', pool: POOL, capabilities: { services: ['ollama'] } });
    // a job of a class no worker can run yet is checked against every profile ever registered
    expect((await broker.submit({ service: 'comfyui' })).routable).toBe(false);
    const job = await broker.submit({ service: 'ollama' });
    expect((await broker.claim(POOL, 'plain')).job?.id).toBe(job.id);
  });
});

describe('submit: unknown services and oversized payloads', () => {
  it('an unknown service is refused and the known ones are listed', async () => {
    await expectRefused(() => broker.submit({ service: 'dalle' }), UnknownServiceError, {
      message: "unknown service 'dalle'; known services: comfyui, comfyui-remote, http, ollama, openai, simulation",
    });
  });

  it('a service outside a narrowed config is unknown', async () => {
    const narrow = await Broker.connect({ redis, config: { services: ['ollama'] } });
    const error = await expectRefused(() => narrow.submit({ service: 'simulation' }), UnknownServiceError);
    expect((error as EmpError).code).toBe('UNKNOWN_SERVICE');
  });

  it('a payload over maxPayloadBytes is refused with its size and the limit', async () => {
    const payload = { blob: 'x'.repeat(2_000) }; // {"blob":"..."} = 2,011 bytes
    await expectRefused(() => broker.submit({ service: 'simulation', payload }), PayloadTooLargeError, {
      message: 'payload is 2011 bytes, over the 1024-byte limit',
    });
  });

  it('the limit counts bytes, not characters', async () => {
    const payload = { blob: '€'.repeat(400) }; // 411 characters, 1,211 bytes
    await expectRefused(() => broker.submit({ service: 'simulation', payload }), PayloadTooLargeError, {
      message: 'payload is 1211 bytes, over the 1024-byte limit',
    });
  });

  it('a payload of exactly maxPayloadBytes is accepted', async () => {
    const payload = { blob: 'x'.repeat(1024 - 11) };
    const result = await broker.submit({ service: 'simulation', payload });
    expect((await broker.getJob(result.id))?.payload).toEqual(payload);
  });

  it('one oversized job in a batch is that job\'s error; the rest are submitted', async () => {
    const results = await broker.submitMany([
      { service: 'simulation' },
      { service: 'simulation', payload: { blob: 'x'.repeat(2_000) } },
      { service: 'dalle' },
      { service: 'simulation', priority: 5_000 },
    ]);
    expect(results[0]).toMatchObject({ pool: POOL, duplicate: false });
    expect(results[1]).toBeInstanceOf(PayloadTooLargeError);
    expect(results[2]).toBeInstanceOf(UnknownServiceError);
    expect(results[3]).toBeInstanceOf(ValidationError);
  });
});

describe('job ids', () => {
  const badIds = ['nope', '', 'standard.', '.abcdefghijkl', 'Standard.abcdefghijkl', 'standard.ABCDEFGHIJKL', `standard.${'a'.repeat(41)}`, 'std pool.abcdefghijkl', 'standard.abc'];

  it.each(badIds)('getJob(%j) is a ValidationError', async (id) => {
    await expectRefused(() => broker.getJob(id), ValidationError, { what: 'job id', message: /a job id looks like <shard>\.<id>/ });
  });
  it.each(badIds)('cancel(%j) is a ValidationError', async (id) => {
    await expectRefused(() => broker.cancel(id), ValidationError, { what: 'job id' });
  });
  it.each(badIds)('retry(%j) is a ValidationError', async (id) => {
    await expectRefused(() => broker.retry(id), ValidationError, { what: 'job id' });
  });

  it('a well-formed id of no job: getJob is null, cancel and retry are NotFoundError', async () => {
    const before = await snapshot();
    expect(await broker.getJob(MISSING_ID)).toBeNull();
    expect(await snapshot()).toEqual(before);
    await expectRefused(() => broker.cancel(MISSING_ID), NotFoundError, { message: `job ${MISSING_ID} does not exist` });
    await expectRefused(() => broker.retry(MISSING_ID), NotFoundError, { message: `job ${MISSING_ID} does not exist` });
  });

  it('a job id of a pool that was never used is not found', async () => {
    await expectRefused(() => broker.cancel('elsewhere.0000000000000000'), NotFoundError);
  });

  it('retrying a job that has not finished is NotRetryableError', async () => {
    await expectRefused(() => broker.retry(queuedId), NotRetryableError, {
      message: `job ${queuedId} is queued; only failed, canceled or expired jobs can be retried`,
    });
    await expectRefused(() => broker.retry(held.id), NotRetryableError, { message: new RegExp(`job ${held.id} is starting`) });
  });
});

describe('leases', () => {
  const malformed: Array<[string, Partial<Lease>, string, RegExp?]> = [
    ['a token that is not a number', { token: 'abc' }, 'token', /a fencing token is a decimal number/],
    ['an empty token', { token: '' }, 'token', /a fencing token is a decimal number/],
    ['a negative token', { token: '-1' }, 'token'],
    ['a bad pool', { pool: 'Bad Pool' }, 'pool', /a pool name is lowercase/],
    ['a bad job id', { jobId: 'x' }, 'jobId', /a job id looks like/],
    ['an empty worker id', { workerId: '' }, 'workerId'],
  ];
  const calls: Array<[string, (lease: Lease) => Promise<unknown>]> = [
    ['start', (l) => broker.start(l)],
    ['progress', (l) => broker.progress(l, { stage: 'running', value: 1, max: 2 })],
    ['complete', (l) => broker.complete(l, { ok: true })],
    ['fail', (l) => broker.fail(l, { kind: 'retryable', message: 'x' })],
  ];

  for (const [call, run] of calls) {
    it.each(malformed)(`${call} with %s is a ValidationError`, async (_name, change, path, message) => {
      await expectRefused(() => run({ ...held.lease, ...change }), ValidationError, { what: 'lease', path, ...(message ? { message } : {}) });
    });

    it(`${call} with a token that is not the current attempt's is LeaseLostError`, async () => {
      await expectRefused(() => run({ ...held.lease, token: '999999' }), LeaseLostError, {
        message: `job ${held.id}: fencing token 999999 is not the current attempt's (state starting)`,
      });
    });

    it(`${call} on a job nobody has claimed is LeaseLostError`, async () => {
      await expectRefused(() => run({ ...held.lease, jobId: queuedId }), LeaseLostError, { message: /is not the current attempt's \(state queued\)/ });
    });

    it(`${call} on a job that does not exist is NotFoundError`, async () => {
      await expectRefused(() => run({ ...held.lease, jobId: MISSING_ID }), NotFoundError, { message: `job ${MISSING_ID} does not exist` });
    });
  }

  it('a lease whose pool is not its job\'s pool is refused as a bad lease (the job exists)', async () => {
    await expectRefused(() => broker.start({ ...held.lease, pool: 'other' }), ValidationError, { what: 'lease', path: 'pool' });
  });

  it('complete + claimNext for a worker that is not registered changes nothing', async () => {
    await expectRefused(() => broker.complete({ ...held.lease, workerId: 'ghost' }, { ok: true }, { claimNext: true }), UnknownWorkerError, {
      message: 'worker ghost is not registered in this shard',
    });
    expect((await broker.getJob(held.id))?.state).toBe('starting');
  });

  it('fail + claimNext for a worker that is not registered changes nothing', async () => {
    await expectRefused(
      () => broker.fail({ ...held.lease, workerId: 'ghost' }, { kind: 'retryable', message: 'x' }, { claimNext: true }),
      UnknownWorkerError,
    );
    expect((await broker.getJob(held.id))?.state).toBe('starting');
  });

  it('a result over maxResultBytes is refused with its size and the limit', async () => {
    await expectRefused(() => broker.complete(held.lease, { blob: 'x'.repeat(2_000) }), PayloadTooLargeError, {
      message: new RegExp(`^result of job ${held.id} is 2011 bytes, over the 1024-byte limit`),
    });
  });

  it('a result that is not JSON (a BigInt) is refused as invalid, not thrown as a TypeError', async () => {
    await expectRefused(() => broker.complete(held.lease, { n: 10n }), ValidationError);
  });

  const badErrors: Array<[string, unknown, string]> = [
    ['an unknown failure kind', { kind: 'oops', message: 'x' }, 'kind'],
    ['no message', { kind: 'retryable' }, 'message'],
    ['a message over 10,000 characters', { kind: 'retryable', message: 'x'.repeat(10_001) }, 'message'],
    ['an unknown field', { kind: 'retryable', message: 'x', retry: true }, ''],
  ];
  it.each(badErrors)('fail with %s is a ValidationError', async (_name, info, path) => {
    await expectRefused(() => broker.fail(held.lease, info as never), ValidationError, { what: 'job error', path });
  });
});

describe('progress', () => {
  const bad: Array<[string, unknown, string, RegExp?]> = [
    ['an unknown stage', { stage: 'cooking' }, 'stage'],
    ['no stage', { value: 1 }, 'stage'],
    ['a negative value', { stage: 'running', value: -1 }, 'value', />=0/],
    ['an infinite value', { stage: 'running', value: Infinity }, 'value'],
    ['NaN', { stage: 'running', value: Number.NaN }, 'value'],
    ['a max of zero', { stage: 'running', max: 0 }, 'max', />0/],
    ['a message over 1,000 characters', { stage: 'running', message: 'x'.repeat(1_001) }, 'message'],
    ['a preview over 2,000 characters', { stage: 'running', preview: 'x'.repeat(2_001) }, 'preview'],
    ['an unknown field', { stage: 'running', percent: 50 }, '', /Unrecognized key: "percent"/],
    ['not an object', 'half done', ''],
  ];
  it.each(bad)('%s is a ValidationError', async (_name, progress, path, message) => {
    await expectRefused(() => broker.progress(held.lease, progress as never), ValidationError, {
      what: 'progress',
      path,
      ...(message ? { message } : {}),
    });
  });
});

describe('worker registrations', () => {
  const good: WorkerRegistration = { id: 'w2', pool: POOL, capabilities: { services: ['simulation'] } };
  const bad: Array<[string, unknown, string, RegExp?]> = [
    ['an id with spaces', { ...good, id: 'worker one' }, 'id', /a worker id is letters/],
    ['an empty id', { ...good, id: '' }, 'id'],
    ['no pool', { id: 'w2', capabilities: good.capabilities }, 'pool'],
    ['a bad pool', { ...good, pool: 'Bad' }, 'pool', /a pool name is lowercase/],
    ['a bad machine id', { ...good, machine_id: 'machine one' }, 'machine_id'],
    ['no capabilities', { id: 'w2', pool: POOL }, 'capabilities'],
    ['no services', { ...good, capabilities: { services: [] } }, 'capabilities.services', />=1/],
    ['a bad service name', { ...good, capabilities: { services: ['SIM'] } }, 'capabilities.services.0'],
    ['negative gpu memory', { ...good, capabilities: { services: ['simulation'], hardware: { gpu_memory_gb: -8 } } }, 'capabilities.hardware.gpu_memory_gb'],
    ['models that are neither a list nor *', { ...good, capabilities: { services: ['simulation'], models: { simulation: 'all' } } }, 'capabilities.models.simulation'],
    ['tenants.allowed as text', { ...good, capabilities: { services: ['simulation'], tenants: { allowed: 'acme' } } }, 'capabilities.tenants.allowed'],
    ['an unknown capability', { ...good, capabilities: { services: ['simulation'], gpus: 2 } }, 'capabilities', /Unrecognized key: "gpus"/],
    ['an unknown field', { ...good, zone: 'eu' }, '', /Unrecognized key: "zone"/],
    ['zero concurrency', { ...good, concurrency: 0 }, 'concurrency', />=1/],
    ['fractional concurrency', { ...good, concurrency: 1.5 }, 'concurrency'],
    ['a null label', { ...good, capabilities: { services: ['simulation'], labels: { gpu: null } } }, 'capabilities.labels.gpu'],
  ];
  it.each(bad)('%s is a ValidationError', async (_name, registration, path, message) => {
    await expectRefused(() => broker.registerWorker(registration as WorkerRegistration), ValidationError, {
      what: 'worker registration',
      path,
      ...(message ? { message } : {}),
    });
  });

  it('an empty allowed-tenants list is refused or honoured, never read as "every tenant"', async () => {
    const registered = await broker
      .registerWorker({ id: 'nobody', pool: 'iso', capabilities: { services: ['simulation'], tenants: { allowed: [] } } })
      .then(
        () => true,
        (error: unknown) => {
          expect(error).toBeInstanceOf(ValidationError);
          return false;
        },
      );
    if (registered) {
      await broker.submit({ service: 'simulation', tenant: 'acme', requirements: { pool: 'iso' } });
      expect((await broker.claim('iso', 'nobody')).job).toBeNull();
    }
  });

  it('labels nested 1,000 deep are refused', async () => {
    await expectRefused(
      () => broker.registerWorker({ ...good, capabilities: { services: ['simulation'], labels: { deep: nested(1_000) as string } } }),
      ValidationError,
      { what: 'worker registration' },
    );
  });
});

describe('worker calls', () => {
  it('claim, heartbeat and state changes of an unregistered worker are UnknownWorkerError', async () => {
    const message = 'worker ghost is not registered in this shard';
    await expectRefused(() => broker.claim(POOL, 'ghost'), UnknownWorkerError, { message });
    await expectRefused(() => broker.heartbeat(POOL, 'ghost', []), UnknownWorkerError, { message });
    await expectRefused(() => broker.setWorkerState(POOL, 'ghost', 'draining'), UnknownWorkerError, { message });
  });

  it('a worker may not set itself busy', async () => {
    await expectRefused(() => broker.setWorkerState(POOL, 'w', 'busy' as never), ValidationError, { what: 'worker state' });
  });

  const badPool = 'Bad Pool';
  const poolCalls: Array<[string, () => Promise<unknown>]> = [
    ['queueStats', () => broker.queueStats(badPool)],
    ['registerMachine', () => broker.registerMachine(badPool, 'm1', 'ready')],
    ['claim', () => broker.claim(badPool, 'w')],
    ['heartbeat', () => broker.heartbeat(badPool, 'w', [])],
    ['setWorkerState', () => broker.setWorkerState(badPool, 'w', 'idle')],
    ['tick', () => broker.tick(badPool)],
  ];
  it.each(poolCalls)('%s with a malformed pool name is a ValidationError', async (_name, call) => {
    await expectRefused(call, ValidationError, { what: 'pool' });
  });

  it.each([['an empty machine id', ''], ['a machine id with spaces', 'machine one']])('registerMachine with %s is a ValidationError', async (_name, id) => {
    await expectRefused(() => broker.registerMachine(POOL, id, 'ready'), ValidationError);
  });

  it('registerMachine with a state the machine events do not declare is a ValidationError', async () => {
    await expectRefused(() => broker.registerMachine(POOL, 'm1', 'idle' as never), ValidationError, { what: 'machine state' });
  });
});

describe('a virtual clock that does not read whole ms', () => {
  it('is refused at the first call, before anything is written', async () => {
    const broker = await Broker.connect({ redis, clock: () => 1_000.5 });
    await expect(broker.submit({ service: 'simulation' })).rejects.toThrow(/invalid virtual clock: a clock reads whole ms since the epoch, not 1000.5/);
    await expect(broker.submit({ service: 'simulation' })).rejects.toBeInstanceOf(ValidationError);
    const whole = await Broker.connect({ redis, clock: () => 1_000 });
    expect((await whole.submit({ service: 'simulation' })).id).toMatch(/^standard\./);
  });
});
