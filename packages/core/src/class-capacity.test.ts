import { usePrivateRedis } from '@emp/testkit/private-redis';
import { describe, expect, it } from 'vitest';
import { Broker } from './broker';
import { requirementClass } from './requirements';

const { redis } = usePrivateRedis();

describe('class capacity', () => {
  it('sums the concurrency of the online workers able to run each class, not draining or offline ones, nothing for a paused service', async () => {
    const b = await Broker.connect({ redis });
    const gpu = { services: ['simulation'], hardware: { gpu_memory_gb: 80 } };
    await b.registerWorker({ id: 'big', pool: 'standard', capabilities: gpu, concurrency: 3 });
    await b.registerWorker({ id: 'small', pool: 'standard', capabilities: { services: ['simulation'] }, concurrency: 2 });
    await b.registerWorker({ id: 'draining', pool: 'standard', capabilities: gpu, concurrency: 50 });
    await b.setWorkerState('standard', 'draining', 'draining');
    await b.registerWorker({ id: 'gone', pool: 'standard', capabilities: gpu, concurrency: 70 });
    await b.setWorkerState('standard', 'gone', 'offline');
    await b.registerWorker({ id: 'llm', pool: 'standard', capabilities: { services: ['ollama'] } });

    const anyGpu = await b.submit({ service: 'simulation' });
    const bigGpu = await b.submit({ service: 'simulation', requirements: { hardware: { gpu_memory_gb: 40 } } });
    const nobody = await b.submit({ service: 'simulation', requirements: { constraints: { gpu: 'tpu' } } });
    const classOf = async (id: string) => (await b.getJob(id))!.requirement_class;
    const classes = [await classOf(anyGpu.id), await classOf(bigGpu.id), await classOf(nobody.id), 'no-such-class'];
    expect(await b.classCapacity('standard', classes)).toEqual([5, 3, 0, 0]);

    await b.setServicePaused('standard', 'simulation', true);
    expect(await b.classCapacity('standard', classes)).toEqual([0, 0, 0, 0]);
    const llm = requirementClass({ service: 'ollama', tenant: 'default', requirements: {} }).id;
    await b.submit({ service: 'ollama' });
    expect(await b.classCapacity('standard', [llm])).toEqual([1]);
    expect(await b.classCapacity('standard', [])).toEqual([]);
  });
});
