import { type ReactNode, createContext, useCallback, useContext, useEffect, useRef, useState, useSyncExternalStore } from 'react';

// ---------------------------------------------------------------- routing

export interface Route {
  parts: string[];
  query: URLSearchParams;
}

function readRoute(): Route {
  const hash = window.location.hash.replace(/^#\/?/, '');
  const [path = '', search = ''] = hash.split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(search) };
}

let cachedHash: string | undefined;
let cachedRoute: Route = { parts: [], query: new URLSearchParams() };
const subscribeHash = (listener: () => void) => {
  window.addEventListener('hashchange', listener);
  return () => window.removeEventListener('hashchange', listener);
};

/** The page's location after `#/`, e.g. `machines/standard/m1` or `jobs?state=failed`. */
export function useRoute(): Route {
  return useSyncExternalStore(subscribeHash, () => {
    if (window.location.hash !== cachedHash) {
      cachedHash = window.location.hash;
      cachedRoute = readRoute();
    }
    return cachedRoute;
  });
}

export function href(...parts: string[]): string {
  return `#/${parts.map(encodeURIComponent).join('/')}`;
}

export function navigate(target: string): void {
  window.location.hash = target.replace(/^#/, '');
}

// ---------------------------------------------------------------- small pieces

export const STATE_TONES: Record<string, string> = {
  ready: 'ok', idle: 'ok', running: 'info', busy: 'info', starting: 'warn', queued: 'muted', retrying: 'warn',
  succeeded: 'ok', failed: 'bad', canceled: 'muted', expired: 'bad', offline: 'bad', draining: 'warn',
  restarting: 'warn', stopping: 'warn', exited: 'bad', started: 'ok', unknown: 'muted', degraded: 'warn', ok: 'ok',
  // webhook endpoints and delivery attempts
  failing: 'bad', disabled: 'muted', delivered: 'ok', retry: 'warn',
  // workflow steps
  pending: 'muted',
};

export function StateBadge({ state, title }: { state: string; title?: string }) {
  return (
    <span className={`badge tone-${STATE_TONES[state] ?? 'muted'}`} data-state={state} title={title}>
      {state}
    </span>
  );
}

/** A horizontal meter (GPU memory, utilisation, job progress). */
export function Meter({ value, max, label, tone }: { value: number; max: number; label?: string; tone?: string }) {
  const fraction = max > 0 ? Math.max(0, Math.min(1, value / max)) : 0;
  return (
    <span className="meter" role="meter" aria-valuenow={value} aria-valuemin={0} aria-valuemax={max} aria-label={label}>
      <span className={`meter-fill ${tone ? `tone-${tone}` : ''}`} style={{ width: `${(fraction * 100).toFixed(1)}%` }} />
    </span>
  );
}

/** A hand-drawn SVG line over time, with its area shaded. */
/**
 * An id or name that fits its column: cut in the middle (`standard.01J…x7Q2`)
 * or at the end, the full value in its title; a click copies it (a link
 * navigates instead, and its title still shows the whole).
 */
export function ShortId({ value, keep = 18, end = false, href: link }: { value: string; keep?: number; end?: boolean; href?: string }) {
  const notice = useNotice();
  const short = shorten(value, keep, end);
  if (link) {
    return (
      <a className="mono short-id" href={link} title={value}>
        {short}
      </a>
    );
  }
  const copy = () => {
    void navigator.clipboard?.writeText(value).then(
      () => notice('info', `copied ${value}`),
      () => undefined,
    );
  };
  return (
    <span className="mono short-id copyable" title={`${value} (click to copy)`} onClick={copy} data-full={value}>
      {short}
    </span>
  );
}

/** The value cut to `keep` characters with an ellipsis in the middle (or at the end), whole when it fits. */
export function shorten(value: string, keep: number, end = false): string {
  if (value.length <= keep) return value;
  if (end) return `${value.slice(0, keep - 1)}…`;
  const tail = Math.floor((keep - 1) / 2);
  return `${value.slice(0, keep - 1 - tail)}…${value.slice(value.length - tail)}`;
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}

export function Field({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="field">
      <dt>{label}</dt>
      <dd>{children}</dd>
    </div>
  );
}

// ---------------------------------------------------------------- notices (outcomes of actions)

export interface Notice {
  id: number;
  tone: 'ok' | 'bad' | 'info';
  text: string;
}

const NoticeContext = createContext<(tone: Notice['tone'], text: string) => void>(() => undefined);

export function NoticeProvider({ children }: { children: ReactNode }) {
  const [notices, setNotices] = useState<Notice[]>([]);
  const next = useRef(0);
  const push = useCallback((tone: Notice['tone'], text: string) => {
    const id = (next.current += 1);
    setNotices((list) => [...list.slice(-4), { id, tone, text }]);
    setTimeout(() => setNotices((list) => list.filter((n) => n.id !== id)), tone === 'bad' ? 12_000 : 6_000);
  }, []);
  return (
    <NoticeContext.Provider value={push}>
      {children}
      <div className="notices" role="status" aria-live="polite">
        {notices.map((n) => (
          <div key={n.id} className={`notice tone-${n.tone}`}>
            {n.text}
          </div>
        ))}
      </div>
    </NoticeContext.Provider>
  );
}

export const useNotice = () => useContext(NoticeContext);

// ---------------------------------------------------------------- confirmation

/** A button that asks first (with an optional reason), runs the action, and reports its outcome. */
export function ConfirmButton({
  label,
  title,
  description,
  confirmLabel,
  danger,
  askReason,
  run,
}: {
  label: string;
  title: string;
  description: ReactNode;
  confirmLabel?: string;
  danger?: boolean;
  askReason?: boolean;
  run: (reason: string) => Promise<string>;
}) {
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState(false);
  const [reason, setReason] = useState('');
  const notice = useNotice();
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    if (open) dialog.current?.showModal();
    else dialog.current?.close();
  }, [open]);
  const confirm = async () => {
    setBusy(true);
    try {
      notice('ok', await run(reason.trim()));
      setOpen(false);
      setReason('');
    } catch (error) {
      notice('bad', `${title} failed: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <button type="button" className={danger ? 'danger' : ''} onClick={() => setOpen(true)}>
        {label}
      </button>
      {open && (
        <dialog ref={dialog} className="confirm" onClose={() => setOpen(false)} aria-label={title}>
          <h3>{title}</h3>
          <div className="confirm-body">{description}</div>
          {askReason && (
            <label className="stacked">
              Reason (recorded with the command)
              <input value={reason} onChange={(e) => setReason(e.target.value)} maxLength={200} placeholder="optional" />
            </label>
          )}
          <div className="actions">
            <button type="button" onClick={() => setOpen(false)} disabled={busy}>
              Cancel
            </button>
            <button type="button" className={danger ? 'danger primary' : 'primary'} onClick={() => void confirm()} disabled={busy}>
              {busy ? 'Working…' : (confirmLabel ?? label)}
            </button>
          </div>
        </dialog>
      )}
    </>
  );
}
