import { type BrokerEvent, JobProgress, type JobProgressView } from '@emp/core';

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

/** One line per event: time, pool, type, subject, the other fields. */
export function eventLine(event: BrokerEvent): string {
  const { job, worker, machine, class: requirementClass, state: _state, ...rest } = event.fields;
  const subject = job ?? worker ?? machine ?? (requirementClass ? `class ${shortId(requirementClass)}` : '');
  const details = Object.entries(rest)
    .filter(([, value]) => value !== '')
    .map(([key, value]) => `${key}=${key === 'progress' ? progressText(parseProgress(value)) || value : value}`);
  if (job && worker) details.unshift(`worker=${worker}`);
  return [clockTime(event.ts), event.pool.padEnd(10), event.type.padEnd(18), subject, ...details].join(' ').trimEnd();
}

export function parseProgress(text: string | undefined): JobProgress | undefined {
  if (!text) return undefined;
  try {
    const parsed = JobProgress.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export function json(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
