import { ModelName, ServiceName, TenantId } from '@emp/core';
import { z } from 'zod';
import { JOB_CLASSES, type SimJob } from './workload';

/** The columns of a trace file, in this order, under a header line naming them; `class` may be left out. */
export const TRACE_COLUMNS = ['arrival_s', 'service', 'model', 'duration_s', 'tenant'] as const;
const OPTIONAL_COLUMN = 'class';

const seconds = z.coerce.number({ error: 'expected a number of seconds' }).finite('expected a finite number').nonnegative('expected 0 or more');
const TraceRow = z.object({
  arrival_s: seconds,
  service: ServiceName,
  model: ModelName,
  duration_s: seconds,
  tenant: TenantId,
  class: z.enum(JOB_CLASSES).optional(),
});

export class TraceError extends Error {
  override name = 'TraceError';
}

/**
 * Reads a trace (CSV: `arrival_s,service,model,duration_s,tenant[,class]`, one
 * job a line, `#` lines and blank lines skipped; no quoting, so no commas in a
 * field). A job's class, when not given, is `text` for ollama and openai jobs,
 * `image` otherwise. Every bad line is reported as `<file>:<line>: <column>: <why>`.
 */
export function parseTrace(text: string, file = 'trace'): SimJob[] {
  const lines = text.split(/\r?\n/);
  const headerAt = lines.findIndex((line) => line.trim() !== '' && !line.startsWith('#'));
  if (headerAt < 0) throw new TraceError(`${file}: empty; expected a header line: ${TRACE_COLUMNS.join(',')}`);
  const header = lines[headerAt]!.split(',').map((c) => c.trim());
  const expected = [...TRACE_COLUMNS];
  const withClass = header.length === expected.length + 1;
  if (header.join(',') !== (withClass ? [...expected, OPTIONAL_COLUMN] : expected).join(',')) {
    throw new TraceError(`${file}:${headerAt + 1}: the header is "${header.join(',')}"; expected "${expected.join(',')}" (and optionally ",${OPTIONAL_COLUMN}")`);
  }
  const problems: string[] = [];
  const jobs: SimJob[] = [];
  for (let i = headerAt + 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === '' || line.startsWith('#')) continue;
    const cells = line.split(',').map((c) => c.trim());
    if (cells.length !== header.length) {
      problems.push(`${file}:${i + 1}: ${cells.length} fields; expected ${header.length} (${header.join(',')})`);
      continue;
    }
    const parsed = TraceRow.safeParse(Object.fromEntries(header.map((name, k) => [name, cells[k] === '' && name === OPTIONAL_COLUMN ? undefined : cells[k]])));
    if (!parsed.success) {
      for (const issue of parsed.error.issues) problems.push(`${file}:${i + 1}: ${issue.path.join('.')}: ${issue.message}`);
      continue;
    }
    const row = parsed.data;
    jobs.push({
      arrivalMs: Math.round(row.arrival_s * 1000),
      jobClass: row.class ?? (row.service === 'ollama' || row.service === 'openai' ? 'text' : 'image'),
      service: row.service,
      model: row.model,
      durationMs: Math.round(row.duration_s * 1000),
      tenant: row.tenant,
    });
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 20);
    if (problems.length > shown.length) shown.push(`... and ${problems.length - shown.length} more`);
    throw new TraceError(shown.join('\n'));
  }
  // a stable sort: jobs arriving at the same time keep the file's order
  return jobs.map((job, k) => ({ job, k })).sort((a, b) => a.job.arrivalMs - b.job.arrivalMs || a.k - b.k).map(({ job }) => job);
}
