import type { DeliveryLogEntry, WebhookEndpoint } from '@emp/core';

/**
 * The Webhooks view's figures, from what the API answers: the endpoints
 * (GET /v1/webhooks) and each one's recent attempts, newest first
 * (GET /v1/webhooks/:id/deliveries). The API keeps no rates; they are counted
 * here over the attempts read.
 */

/** Attempts read per endpoint: the window its success rate is over. */
export const RECENT_DELIVERIES = 50;

export type EndpointHealth = 'failing' | 'disabled' | 'ok' | 'idle';

export interface EndpointRow {
  endpoint: WebhookEndpoint;
  /** its recent attempts, newest first; undefined when they could not be read */
  deliveries: DeliveryLogEntry[] | undefined;
  /** why the deliveries could not be read */
  deliveriesError?: string;
  health: EndpointHealth;
  /** delivered / attempts over `attempts`; undefined without attempts */
  successRate: number | undefined;
  attempts: number;
  /** the newest attempt that was not delivered, with what went wrong */
  lastError: { at: number; text: string } | undefined;
  lastDeliveryAt: number | undefined;
}

/** What went wrong in an attempt that was not delivered: its error, else its HTTP status. */
export function attemptError(entry: DeliveryLogEntry): string | undefined {
  if (entry.outcome === 'delivered') return undefined;
  if (entry.error) return entry.error;
  return entry.status !== undefined ? `HTTP ${entry.status}` : entry.outcome;
}

/**
 * One endpoint's row. It is failing while the API says its attempts have failed
 * since a time (`failing_since`) or its newest attempt was not delivered;
 * disabled when it is off; idle with no attempt read.
 */
export function endpointRow(endpoint: WebhookEndpoint, deliveries: DeliveryLogEntry[] | undefined, deliveriesError?: string): EndpointRow {
  const list = deliveries ?? [];
  const delivered = list.filter((entry) => entry.outcome === 'delivered').length;
  const failed = list.find((entry) => entry.outcome !== 'delivered');
  const newest = list[0];
  let health: EndpointHealth;
  if (!endpoint.enabled) health = 'disabled';
  else if (endpoint.failing_since !== undefined || (newest && newest.outcome !== 'delivered')) health = 'failing';
  else health = newest ? 'ok' : 'idle';
  const row: EndpointRow = {
    endpoint,
    deliveries,
    health,
    successRate: list.length > 0 ? delivered / list.length : undefined,
    attempts: list.length,
    lastError: failed ? { at: failed.at, text: attemptError(failed)! } : undefined,
    lastDeliveryAt: newest?.at,
  };
  if (deliveriesError !== undefined) row.deliveriesError = deliveriesError;
  return row;
}

const HEALTH_ORDER: Record<EndpointHealth, number> = { failing: 0, disabled: 1, ok: 2, idle: 3 };

/** Failing endpoints first, then disabled ones, then the rest; within each, the lowest success rate first, then by tenant and URL. */
export function sortEndpointRows(rows: readonly EndpointRow[]): EndpointRow[] {
  return [...rows].sort(
    (a, b) =>
      HEALTH_ORDER[a.health] - HEALTH_ORDER[b.health] ||
      (a.successRate ?? 1) - (b.successRate ?? 1) ||
      (a.endpoint.tenant ?? '').localeCompare(b.endpoint.tenant ?? '') ||
      a.endpoint.url.localeCompare(b.endpoint.url) ||
      a.endpoint.id.localeCompare(b.endpoint.id),
  );
}

/** The attempts that carry a message's Resend button: the newest attempt of each message (the list is newest first). */
export function newestAttemptPerMessage(deliveries: readonly DeliveryLogEntry[]): Set<DeliveryLogEntry> {
  const seen = new Set<string>();
  const newest = new Set<DeliveryLogEntry>();
  for (const entry of deliveries) {
    if (seen.has(entry.message)) continue;
    seen.add(entry.message);
    newest.add(entry);
  }
  return newest;
}
