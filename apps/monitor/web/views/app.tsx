import { EmpApiError } from '@emp/client';
import { useCallback, useEffect, useState } from 'react';
import { Connection, type Settings, describeError, loadSettings, saveSettings } from '../api/connection';
import { type MonitorStatus, useLiveMonitor, useNow } from '../live/use-live-monitor';
import { NoticeProvider, useRoute } from './common';
import { FleetView } from './fleet';
import { ago } from './format';
import { JobPage } from './job-page';
import { JobsView } from './jobs';
import { MachinePage } from './machine-page';
import { QueuesView } from './queues';
import { SubmitView } from './submit';
import { PlannerView } from './planner';
import { WebhooksView } from './webhooks';
import { WorkflowPage, WorkflowsView } from './workflows';

type Theme = 'auto' | 'light' | 'dark';
const THEME_ITEM = 'emp.monitor.theme';

function useTheme(): [Theme, (theme: Theme) => void] {
  const [theme, setTheme] = useState<Theme>(() => (localStorage.getItem(THEME_ITEM) as Theme | null) ?? 'auto');
  useEffect(() => {
    localStorage.setItem(THEME_ITEM, theme);
    const system = window.matchMedia('(prefers-color-scheme: dark)');
    const apply = () => (document.documentElement.dataset.theme = theme === 'auto' ? (system.matches ? 'dark' : 'light') : theme);
    apply();
    system.addEventListener('change', apply);
    return () => system.removeEventListener('change', apply);
  }, [theme]);
  return [theme, setTheme];
}

type Opening = { kind: 'loading' } | { kind: 'ready'; connection: Connection } | { kind: 'needs-key'; settings: Settings; message: string } | { kind: 'error'; settings?: Settings; message: string };

/** The page: finds the API and the key's role, then the views for that role. */
export function App() {
  const [opening, setOpening] = useState<Opening>({ kind: 'loading' });
  const open = useCallback(async () => {
    setOpening({ kind: 'loading' });
    let settings: Settings | undefined;
    try {
      settings = await loadSettings();
      setOpening({ kind: 'ready', connection: await Connection.open(settings) });
    } catch (error) {
      if (settings && error instanceof EmpApiError && error.status === 401) {
        setOpening({ kind: 'needs-key', settings, message: settings.apiKey ? `The API refused this key: ${error.message}` : 'This API requires a key.' });
      } else {
        setOpening({ kind: 'error', settings, message: settings ? `Cannot reach the API at ${settings.apiUrl}: ${describeError(error)}` : describeError(error) });
      }
    }
  }, []);
  useEffect(() => void open(), [open]);

  return (
    <NoticeProvider>
      {opening.kind === 'ready' ? (
        <Shell connection={opening.connection} reopen={open} />
      ) : (
        <div className="app">
          <header className="topbar">
            <span className="brand">EMP Monitor</span>
          </header>
          <main className="content narrow">
            {opening.kind === 'loading' && <p className="muted">Connecting…</p>}
            {(opening.kind === 'needs-key' || opening.kind === 'error') && (
              <>
                <p className={opening.kind === 'error' ? 'unknown' : ''}>{opening.message}</p>
                <KeyForm settings={opening.settings} onSaved={open} />
              </>
            )}
          </main>
        </div>
      )}
    </NoticeProvider>
  );
}

function KeyForm({ settings, onSaved }: { settings: Settings | undefined; onSaved: () => void }) {
  const [key, setKey] = useState(settings?.apiKey ?? '');
  const [apiUrl, setApiUrl] = useState(localStorage.getItem('emp.monitor.apiUrl') ?? '');
  return (
    <form
      className="panel key-form"
      aria-label="API key"
      onSubmit={(e) => {
        e.preventDefault();
        saveSettings({ apiKey: key.trim(), apiUrl: apiUrl.trim() });
        onSaved();
      }}
    >
      <label className="stacked">
        API key (kept in this browser only)
        <input type="password" value={key} onChange={(e) => setKey(e.target.value)} placeholder="emp_…" autoComplete="off" />
      </label>
      <label className="stacked">
        API address (leave empty for {settings?.apiUrl ?? 'the one this server names'})
        <input value={apiUrl} onChange={(e) => setApiUrl(e.target.value)} placeholder={settings?.apiUrl ?? 'http://127.0.0.1:3331'} />
      </label>
      <div className="actions">
        {settings?.apiKey && (
          <button
            type="button"
            onClick={() => {
              saveSettings({ apiUrl: apiUrl.trim() });
              onSaved();
            }}
          >
            Forget key
          </button>
        )}
        <button type="submit" className="primary">
          Connect
        </button>
      </div>
    </form>
  );
}

const TABS = [
  { path: '', label: 'Fleet', fleet: true },
  { path: 'queues', label: 'Queues', fleet: true },
  { path: 'planner', label: 'Planner', fleet: true, operator: true },
  { path: 'jobs', label: 'Jobs', fleet: false },
  { path: 'workflows', label: 'Workflows', fleet: false },
  { path: 'webhooks', label: 'Webhooks', fleet: false },
  { path: 'submit', label: 'Submit', fleet: false },
] as const;

function Shell({ connection, reopen }: { connection: Connection; reopen: () => void }) {
  const route = useRoute();
  const now = useNow();
  const { store, status, feed } = useLiveMonitor(connection);
  const [theme, setTheme] = useTheme();
  const [settingsOpen, setSettingsOpen] = useState(false);
  const [section = connection.seesFleet ? '' : 'jobs', ...rest] = route.parts;
  const { identity } = connection;

  let view;
  if (section === 'machines' && rest.length >= 2) view = <MachinePage connection={connection} store={store} pool={rest[0]!} id={rest[1]!} now={now} />;
  else if (section === 'jobs' && rest[0]) view = <JobPage connection={connection} store={store} id={rest[0]} />;
  else if (section === 'jobs') view = <JobsView connection={connection} store={store} now={now} />;
  else if (section === 'workflows' && rest[0]) view = <WorkflowPage connection={connection} id={rest[0]} now={now} />;
  else if (section === 'workflows') view = <WorkflowsView connection={connection} now={now} />;
  else if (section === 'submit') view = <SubmitView connection={connection} />;
  else if (section === 'webhooks') view = <WebhooksView connection={connection} selected={rest[0]} now={now} />;
  else if (section === 'planner') view = <PlannerView connection={connection} now={now} />;
  else if (section === 'queues') view = <QueuesView connection={connection} store={store} now={now} />;
  else view = connection.seesFleet ? <FleetView connection={connection} store={store} now={now} /> : <JobsView connection={connection} store={store} now={now} />;

  return (
    <div className="app">
      <header className="topbar">
        <span className="brand">EMP Monitor</span>
        <nav className="tabs" aria-label="sections">
          {TABS.filter((tab) => (connection.seesFleet || !tab.fleet) && (connection.isOperator || !('operator' in tab))).map((tab) => (
            <a key={tab.label} href={`#/${tab.path}`} className={section === tab.path || (tab.path === '' && section === 'machines') ? 'active' : ''}>
              {tab.label}
            </a>
          ))}
        </nav>
        <div className="spacer" />
        <ConnectionIndicator status={status} now={now} onDrop={feed ? () => feed.dropConnection() : undefined} />
        <button type="button" className="plain identity" onClick={() => setSettingsOpen((v) => !v)} title="API key and address">
          {identity.role}
          {identity.tenant ? ` · ${identity.tenant}` : ''}
          {identity.auth ? '' : ' · auth off'}
        </button>
        <select className="theme" value={theme} onChange={(e) => setTheme(e.target.value as Theme)} aria-label="theme">
          <option value="auto">auto</option>
          <option value="light">light</option>
          <option value="dark">dark</option>
        </select>
      </header>
      <main className="content">
        {settingsOpen && <KeyForm settings={connection.settings} onSaved={reopen} />}
        {view}
      </main>
    </div>
  );
}

function ConnectionIndicator({ status, now, onDrop }: { status: MonitorStatus; now: number; onDrop: (() => void) | undefined }) {
  const tone = { live: 'ok', connecting: 'warn', reconnecting: 'warn', refused: 'bad', stopped: 'muted', polling: 'info' }[status.state];
  let text: string = status.state;
  if (status.state === 'live') text = `live · ${status.rate} ev/s`;
  if (status.state === 'reconnecting') {
    const wait = 'retryAt' in status && status.retryAt ? Math.max(0, Math.ceil((status.retryAt - now) / 1_000)) : 0;
    text = `reconnecting${wait ? ` in ${wait}s` : '…'} (attempt ${status.attempts})`;
  }
  const title = `${status.message ?? status.state}; since ${ago(status.since, now)}${onDrop ? ' — double-click to drop the connection and watch it resume' : ''}`;
  return (
    <span className={`connection tone-${tone}`} data-connection={status.state} title={title} onDoubleClick={onDrop} role="status">
      <span className={`dot tone-${tone}`} />
      {text}
    </span>
  );
}
