import { Broker, WebhookOutbox } from '@emp/core';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { describe, expect, it } from 'vitest';
import { runEmp } from './testing/emp-process';

const { redis, url } = usePrivateRedis();

describe('emp webhooks', () => {
  it("deliveries --job lists a job's attempts; secret prints and rotates a tenant's secret", async () => {
    const outbox = new WebhookOutbox(await Broker.connect({ redis }));
    const job = 'standard.abcdefabcdef01';
    await outbox.enqueue({ id: 'msg_1', tenant: 'acme', url: 'https://example.com/h', job, type: 'job.succeeded', body: '{}' });
    const [claimed] = await outbox.claimDue(1, 60_000);
    await outbox.settle(claimed!, 'retry', { at: Date.now(), message: 'msg_1', type: 'job.succeeded', url: claimed!.url, attempt: 1, status: 503, latency_ms: 12.3, outcome: 'retry', error: 'busy', next_at: Date.now() + 5_000 }, 5_000);
    const env = { REDIS_URL: url() };

    const table = await runEmp(['webhooks', 'deliveries', '--job', job], env);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/TIME\s+EVENT\s+ATTEMPT\s+STATUS\s+LATENCY\s+OUTCOME\s+ERROR/);
    expect(table.stdout).toMatch(/job\.succeeded\s+1\s+503\s+12 ms\s+retry \(next [\d:.]+\)\s+busy\s+msg_1/);
    // a message still waiting for its retry is not resent
    const resend = await runEmp(['webhooks', 'resend', 'msg_1'], env);
    expect(resend.code).not.toBe(0);
    expect(resend.stderr).toMatch(/msg_1 not resent: it is still waiting or in flight/);
    const backlog = await runEmp(['webhooks', 'deliveries', '--json'], env);
    expect(JSON.parse(backlog.stdout)).toMatchObject({ messages: 1 });

    const secret = await runEmp(['webhooks', 'secret', '--tenant', 'acme', '--json'], env);
    expect(JSON.parse(secret.stdout)).toEqual({ tenant: 'acme', secret: (await outbox.secrets('acme')).current });
    const rotated = await runEmp(['webhooks', 'secret', '--tenant', 'acme', '--rotate', '--grace-seconds', '60'], env);
    expect(rotated.stdout).toMatch(/^whsec_\S+\n\(the previous secret is signed with too until /);
    expect((await runEmp(['webhooks', 'secret', '--rotate', '--grace-seconds', 'soon'], env)).code).not.toBe(0);
  });
});
