import { useCallback, useEffect, useRef, useState } from 'react';
import { type Connection, describeError } from '../api/connection';
import { type EndpointRow, RECENT_DELIVERIES, attemptError, endpointRow, newestAttemptPerMessage, sortEndpointRows } from '../state/webhooks';
import { ConfirmButton, Empty, Field, StateBadge, href, navigate, useNotice } from './common';
import { ago, dateTime, duration } from './format';

/** How often the endpoints and their deliveries are read again (the live feed does not carry deliveries). */
const READ_EVERY_MS = 3_000;

/** The endpoints the key sees with their recent attempts, read every few seconds; `refresh` reads at once (after an action). */
function useWebhookEndpoints(connection: Connection): { rows: EndpointRow[] | undefined; error: string | undefined; readAt: number | undefined; refresh: () => Promise<void> } {
  const [rows, setRows] = useState<EndpointRow[]>();
  const [error, setError] = useState<string>();
  const [readAt, setReadAt] = useState<number>();
  const reading = useRef<Promise<void> | undefined>(undefined);
  const read = useCallback(async () => {
    try {
      const { endpoints } = await connection.client.webhookEndpoints();
      const deliveries = await Promise.allSettled(endpoints.map((endpoint) => connection.client.webhookDeliveries(endpoint.id, { limit: RECENT_DELIVERIES })));
      setRows(
        sortEndpointRows(
          endpoints.map((endpoint, i) => {
            const answer = deliveries[i]!;
            return answer.status === 'fulfilled' ? endpointRow(endpoint, answer.value.deliveries) : endpointRow(endpoint, undefined, describeError(answer.reason));
          }),
        ),
      );
      setError(undefined);
      setReadAt(Date.now());
    } catch (e) {
      setError(describeError(e));
    }
  }, [connection]);
  // one read at a time: a timer tick during a read waits for it
  const refresh = useCallback(() => (reading.current ??= read().finally(() => (reading.current = undefined))), [read]);
  useEffect(() => {
    setRows(undefined);
    void refresh();
    const timer = setInterval(() => void refresh(), READ_EVERY_MS);
    return () => clearInterval(timer);
  }, [refresh]);
  return { rows, error, readAt, refresh };
}

const percent = (rate: number | undefined): string => (rate === undefined ? '–' : `${Math.round(rate * 100)} %`);

/**
 * Webhook endpoints: every endpoint the key sees (an operator: every tenant's
 * and the operator-scoped ones) with its success rate over the recent
 * attempts, last error and last attempt, failing and disabled ones first;
 * the selected one's recent deliveries with a Resend button per message,
 * and Enable/Disable and Send test.
 */
export function WebhooksView({ connection, selected, now }: { connection: Connection; selected: string | undefined; now: number }) {
  const { rows, error, readAt, refresh } = useWebhookEndpoints(connection);
  const current = rows?.find((row) => row.endpoint.id === selected);
  return (
    <section aria-label="webhooks">
      <div className="page-head">
        <h2>Webhooks</h2>
        <span className="muted">success rate over each endpoint's last {RECENT_DELIVERIES} attempts</span>
      </div>
      {error && <p className="unknown">Webhook endpoints could not be listed: {error}</p>}
      {!rows && !error && <Empty>Loading webhook endpoints…</Empty>}
      {rows && rows.length === 0 && <Empty>No webhook endpoint is registered. Register one with POST /v1/webhooks or `emp webhooks create`.</Empty>}
      {rows && rows.length > 0 && (
        <div className="table-wrap">
          <table className="webhooks-table">
            <thead>
              <tr>
                <th>tenant</th>
                <th>URL</th>
                <th>events</th>
                <th>state</th>
                <th className="num">success</th>
                <th>last error</th>
                <th>last attempt</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((row) => {
                const { endpoint } = row;
                return (
                  <tr
                    key={endpoint.id}
                    data-endpoint={endpoint.id}
                    data-health={row.health}
                    className={`clickable${endpoint.id === selected ? ' selected' : ''}`}
                    onClick={() => navigate(href('webhooks', endpoint.id))}
                  >
                    <td>{endpoint.tenant ?? <span className="muted">operator</span>}</td>
                    <td className="mono url-cell">
                      <a href={href('webhooks', endpoint.id)}>{endpoint.url}</a>
                    </td>
                    <td className="small">{endpoint.events.join(', ')}</td>
                    <td>
                      <StateBadge state={row.health} title={endpoint.disabled_reason ?? (endpoint.failing_since ? `failing since ${dateTime(endpoint.failing_since)}` : undefined)} />
                      {endpoint.disabled_reason && <div className="muted small">{endpoint.disabled_reason}</div>}
                    </td>
                    <td className="num" title={`${row.attempts} attempts read`}>
                      {percent(row.successRate)}
                    </td>
                    <td className="error-cell">
                      {row.deliveriesError ? (
                        <span className="unknown">deliveries unreadable: {row.deliveriesError}</span>
                      ) : row.lastError ? (
                        <>
                          <span className="bad-text">{row.lastError.text}</span> <span className="muted small">{ago(row.lastError.at, now)}</span>
                        </>
                      ) : (
                        '–'
                      )}
                    </td>
                    <td className="muted">{ago(row.lastDeliveryAt, now)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {selected && rows && !current && <p className="unknown">Webhook endpoint {selected} is not among those this key sees.</p>}
      {current && <EndpointPanel connection={connection} row={current} now={now} refresh={refresh} />}
      {readAt && (
        <p className="muted small">
          {rows?.length ?? 0} endpoint{rows?.length === 1 ? '' : 's'}, read {ago(readAt, now)}; read again every {duration(READ_EVERY_MS)}.
        </p>
      )}
    </section>
  );
}

function EndpointPanel({ connection, row, now, refresh }: { connection: Connection; row: EndpointRow; now: number; refresh: () => Promise<void> }) {
  const { endpoint } = row;
  const notice = useNotice();
  const [busy, setBusy] = useState<string>();
  /** Runs an action of this panel, says how it went, and reads the endpoints again. */
  const act = async (name: string, action: () => Promise<string>) => {
    setBusy(name);
    try {
      notice('ok', await action());
    } catch (error) {
      notice('bad', `${name} failed: ${describeError(error)}`);
    } finally {
      setBusy(undefined);
      void refresh();
    }
  };
  const resendable = newestAttemptPerMessage(row.deliveries ?? []);
  return (
    <div className="panel endpoint-panel" aria-label="webhook endpoint" data-endpoint={endpoint.id} data-health={row.health}>
      <div className="panel-head">
        <h3 className="mono">{endpoint.url}</h3>
        <StateBadge state={row.health} />
        <div className="spacer" />
        <button type="button" onClick={() => void act('Send test', async () => `test event queued for ${endpoint.id} (${(await connection.client.testWebhookEndpoint(endpoint.id)).message_id})`)} disabled={!endpoint.enabled || busy !== undefined}>
          Send test
        </button>
        {endpoint.enabled ? (
          <ConfirmButton
            label="Disable"
            title={`Disable ${endpoint.id}?`}
            description={<p>Its messages not yet sent are dropped, and no new ones are made until it is enabled again.</p>}
            danger
            run={async () => {
              await connection.client.setWebhookEndpointEnabled(endpoint.id, false);
              void refresh();
              return `${endpoint.id} disabled`;
            }}
          />
        ) : (
          <button type="button" onClick={() => void act('Enable', async () => (await connection.client.setWebhookEndpointEnabled(endpoint.id, true), `${endpoint.id} enabled`))} disabled={busy !== undefined}>
            Enable
          </button>
        )}
      </div>
      <dl className="fields">
        <Field label="id">
          <span className="mono">{endpoint.id}</span>
        </Field>
        <Field label="tenant">{endpoint.tenant ?? 'operator-scoped'}</Field>
        <Field label="events">{endpoint.events.join(', ')}</Field>
        {endpoint.services && <Field label="services">{endpoint.services.join(', ')}</Field>}
        {endpoint.workflows && <Field label="workflows">{endpoint.workflows.join(', ')}</Field>}
        {endpoint.rate_limit !== undefined && <Field label="rate limit">{endpoint.rate_limit} / s</Field>}
        {endpoint.disabled_reason && <Field label="disabled">{`${endpoint.disabled_reason}${endpoint.disabled_at ? `, ${dateTime(endpoint.disabled_at)}` : ''}`}</Field>}
        {endpoint.failing_since !== undefined && <Field label="failing since">{dateTime(endpoint.failing_since)}</Field>}
        <Field label="success">{`${percent(row.successRate)} of ${row.attempts} attempts`}</Field>
        {endpoint.description && <Field label="description">{endpoint.description}</Field>}
      </dl>
      <h4>Recent deliveries</h4>
      {row.deliveriesError && <p className="unknown">Deliveries could not be read: {row.deliveriesError}</p>}
      {row.deliveries?.length === 0 && <Empty>No delivery attempt yet. Send a test to try the endpoint.</Empty>}
      {row.deliveries && row.deliveries.length > 0 && (
        <table className="deliveries-table">
          <thead>
            <tr>
              <th>time</th>
              <th>event</th>
              <th>outcome</th>
              <th className="num">status</th>
              <th className="num">latency</th>
              <th className="num">attempt</th>
              <th>error</th>
              <th>message</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {row.deliveries.map((entry) => (
              <tr key={`${entry.message}/${entry.attempt}/${entry.at}`} data-message={entry.message} data-outcome={entry.outcome}>
                <td className="muted" title={dateTime(entry.at)}>
                  {ago(entry.at, now)}
                </td>
                <td className="mono">{entry.type}</td>
                <td>
                  <StateBadge state={entry.outcome} title={entry.next_at ? `next attempt ${dateTime(entry.next_at)}` : undefined} />
                </td>
                <td className="num">{entry.status ?? '–'}</td>
                <td className="num">{duration(entry.latency_ms)}</td>
                <td className="num">{entry.attempt}</td>
                <td className="error-cell">{attemptError(entry) ? <span className="bad-text">{attemptError(entry)}</span> : '–'}</td>
                <td className="mono muted small">{entry.job?.startsWith('test:') ? 'test' : entry.job ? <a href={href('jobs', entry.job)}>{entry.job}</a> : entry.message}</td>
                <td className="actions-cell">
                  {resendable.has(entry) && (
                    <button
                      type="button"
                      title={`send ${entry.message} again: same webhook-id and body, attempts from 1`}
                      disabled={busy !== undefined}
                      onClick={() => void act('Resend', async () => `${(await connection.client.resendWebhookMessage(endpoint.id, entry.message)).message_id} queued again`)}
                    >
                      Resend
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
