import { type JobProgressView, type StreamEvent, eventView } from '@emp/core';

/** A plain text table: left-aligned columns, a header row, two spaces between columns. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** `key: value` lines with the keys aligned; undefined values are left out. */
export function fields(entries: Array<[string, string | undefined]>): string {
  const present = entries.filter((entry): entry is [string, string] => entry[1] !== undefined);
  const width = Math.max(0, ...present.map(([key]) => key.length));
  return present.map(([key, value]) => `${`${key}:`.padEnd(width + 2)}${value}`).join('\n');
}

/** A duration for humans: 850ms, 12.3s, 4m05s, 2h10m, 3d4h. */
export function duration(ms: number): string {
  if (!Number.isFinite(ms)) return '-';
  const sign = ms < 0 ? '-' : '';
  const abs = Math.abs(ms);
  if (abs < 1_000) return `${sign}${Math.round(abs)}ms`;
  if (abs < 60_000) return `${sign}${(abs / 1_000).toFixed(1)}s`;
  const s = Math.floor(abs / 1_000);
  if (s < 3_600) return `${sign}${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86_400) return `${sign}${Math.floor(s / 3_600)}h${String(Math.floor((s % 3_600) / 60)).padStart(2, '0')}m`;
  return `${sign}${Math.floor(s / 86_400)}d${Math.floor((s % 86_400) / 3_600)}h`;
}

/** A timestamp (ms) as local ISO-like time, with how long ago when `now` is given. */
export function timestamp(ms: number, now?: number): string {
  const date = new Date(ms);
  const pad = (n: number, width = 2) => String(n).padStart(width, '0');
  const text = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  return now === undefined ? text : `${text} (${duration(now - ms)} ago)`;
}

/** Time of day with milliseconds, for event lines. */
export function clockTime(ms: number): string {
  return timestamp(ms).slice(11);
}

/** The first characters of a content id: enough to tell classes apart in a table. */
export function shortId(id: string, length = 10): string {
  return id.length > length ? id.slice(0, length) : id;
}

/** `loading_model 40% (4/10) sampling`; the stage is left out when it only repeats `state`. */
export function progressText(progress: JobProgressView | undefined, state?: string): string {
  if (!progress) return '';
  const parts: string[] = progress.stage === state ? [] : [progress.stage];
  const percent = progressPercent(progress);
  if (percent !== undefined) parts.push(`${Math.round(percent)}%`);
  if (progress.value !== undefined && progress.max !== undefined) parts.push(`(${progress.value}/${progress.max})`);
  if (progress.message) parts.push(progress.message);
  return parts.join(' ');
}

export function progressPercent(progress: JobProgressView | undefined): number | undefined {
  if (!progress || progress.value === undefined || progress.max === undefined) return undefined;
  return Math.max(0, Math.min(100, (progress.value / progress.max) * 100));
}

/** `[##########----------]` for a percentage. */
export function bar(percent: number, width = 24): string {
  const filled = Math.round((Math.max(0, Math.min(100, percent)) / 100) * width);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
}

/** One line per event: time, pool, type, subject, the other fields (an entry this CLI does not know: as stored, marked). */
export function eventLine(event: StreamEvent): string {
  const { id: _id, pool, ts, type, job, worker, machine, class: requirementClass, state: _state, ...rest } = eventView(event);
  const text = (value: unknown) => (typeof value === 'string' ? value : undefined);
  const subject = text(job) ?? text(worker) ?? text(machine) ?? (typeof requirementClass === 'string' ? `class ${shortId(requirementClass)}` : '');
  const details = Object.entries(rest).map(([key, value]) => {
    if (key === 'progress' && event.type === 'job.progress') return `progress=${progressText(event.progress)}`;
    return `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`;
  });
  if (job && worker) details.unshift(`worker=${text(worker)}`);
  if (event.type === 'unknown') details.push(`(not a known event: ${event.problem})`);
  return [clockTime(ts), pool.padEnd(10), type.padEnd(18), subject, ...details].join(' ').trimEnd();
}

export function json(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
