import type { DeliveryLogEntry, WebhookEndpoint } from '@emp/core';
import { describe, expect, it } from 'vitest';
import { endpointRow, newestAttemptPerMessage, sortEndpointRows } from './webhooks';

const endpoint = (id: string, fields: Partial<WebhookEndpoint> = {}): WebhookEndpoint => ({
  id,
  tenant: 'acme',
  scope: 'tenant',
  url: `https://example.com/${id}`,
  events: ['job.succeeded'],
  enabled: true,
  created_at: 1,
  updated_at: 1,
  ...fields,
});

const attempt = (message: string, at: number, fields: Partial<DeliveryLogEntry> = {}): DeliveryLogEntry => ({
  at,
  message,
  type: 'job.succeeded',
  url: 'https://example.com/hook',
  attempt: 1,
  status: 200,
  latency_ms: 20,
  outcome: 'delivered',
  ...fields,
});

describe('an endpoint row', () => {
  it('counts its success rate over the attempts read, and names the newest error and the last attempt', () => {
    const row = endpointRow(endpoint('ep_a'), [
      attempt('m3', 400),
      attempt('m2', 300, { status: 500, outcome: 'retry', error: 'the receiver answered 500' }),
      attempt('m2', 200, { status: undefined, outcome: 'retry', error: undefined }),
      attempt('m1', 100),
    ]);
    expect(row).toMatchObject({ health: 'ok', successRate: 0.5, attempts: 4, lastError: { at: 300, text: 'the receiver answered 500' }, lastDeliveryAt: 400 });
    expect(endpointRow(endpoint('ep_b'), [attempt('m1', 1, { status: 503, outcome: 'failed' })]).lastError).toEqual({ at: 1, text: 'HTTP 503' });
  });

  it('is failing while the API says so or its newest attempt failed; disabled when off; idle without attempts', () => {
    expect(endpointRow(endpoint('ep_a', { failing_since: 5 }), [attempt('m1', 10)]).health).toBe('failing');
    expect(endpointRow(endpoint('ep_a'), [attempt('m2', 10, { outcome: 'retry', status: 500 }), attempt('m1', 5)]).health).toBe('failing');
    expect(endpointRow(endpoint('ep_a', { enabled: false, disabled_reason: 'disabled by hand', failing_since: 5 }), []).health).toBe('disabled');
    expect(endpointRow(endpoint('ep_a'), [])).toMatchObject({ health: 'idle', successRate: undefined, lastError: undefined, lastDeliveryAt: undefined });
    expect(endpointRow(endpoint('ep_a'), undefined, 'FORBIDDEN: no')).toMatchObject({ health: 'idle', deliveries: undefined, deliveriesError: 'FORBIDDEN: no' });
  });
});

describe('the endpoint table', () => {
  it('lists failing endpoints first, then disabled ones, then the rest, the worst success rate first', () => {
    const rows = [
      endpointRow(endpoint('ep_idle', { tenant: 'a' }), []),
      endpointRow(endpoint('ep_good'), [attempt('m1', 1)]),
      endpointRow(endpoint('ep_half'), [attempt('m2', 2), attempt('m1', 1, { outcome: 'retry', status: 500 })]),
      endpointRow(endpoint('ep_off', { enabled: false }), []),
      endpointRow(endpoint('ep_failing'), [attempt('m1', 1, { outcome: 'retry', status: 500 })]),
    ];
    expect(sortEndpointRows(rows).map((row) => row.endpoint.id)).toEqual(['ep_failing', 'ep_off', 'ep_half', 'ep_good', 'ep_idle']);
  });

  it('puts the Resend button on the newest attempt of each message only', () => {
    const list = [attempt('m2', 3), attempt('m1', 2, { attempt: 2 }), attempt('m1', 1, { outcome: 'retry', status: 500 })];
    expect([...newestAttemptPerMessage(list)]).toEqual([list[0], list[1]]);
  });
});
