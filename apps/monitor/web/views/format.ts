/** Short human forms of times, durations and sizes, the same on every view. */

export function duration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  const s = ms / 1_000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.round(s % 60)}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export function ago(ts: number | undefined, now: number): string {
  if (ts === undefined) return '–';
  const ms = now - ts;
  if (ms < 2_000) return 'just now';
  return `${duration(ms)} ago`;
}

export function clock(ts: number | undefined): string {
  if (ts === undefined) return '–';
  const d = new Date(ts);
  const pad = (n: number, width = 2) => String(n).padStart(width, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function dateTime(ts: number | undefined): string {
  if (ts === undefined) return '–';
  return new Date(ts).toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function megabytes(mb: number | undefined): string {
  if (mb === undefined) return '–';
  return mb >= 1_024 ? `${(mb / 1_024).toFixed(1)} GB` : `${Math.round(mb)} MB`;
}

export function bytes(n: number | undefined): string {
  if (n === undefined) return '–';
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

export function count(n: number): string {
  return n >= 10_000 ? `${(n / 1_000).toFixed(1)}k` : String(n);
}
