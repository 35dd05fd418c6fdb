import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type RedisProcess, startRedis } from '@emp/testkit';
import { type LocalStack, startLocalStack } from '@emp/testkit/stack';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';

/**
 * The dashboard and the alerting rules in ops/ are checked against what the
 * project exports: promtool (Debian's prometheus package) checks the rules, and
 * every metric an alert or a panel names must be one that the API, the machine
 * agent or the webhook service of the real local stack lists at its /metrics.
 */

const RULES = new URL('./prometheus/emp-alerts.yml', import.meta.url).pathname;
const DASHBOARD = new URL('./grafana/emp-dashboard.json', import.meta.url).pathname;

function promtoolMissing(): string | undefined {
  if (spawnSync('promtool', ['--version']).status === 0) return undefined;
  if (process.env.CI === 'true') return undefined; // the check runs and fails with the reason
  return 'promtool check skipped: no promtool on PATH; install it with `apt-get install -y prometheus`';
}

/** The metric names an exposition text declares (`# TYPE`), with the series a histogram or summary adds. */
function declaredNames(exposition: string): string[] {
  const names: string[] = [];
  for (const match of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = match as unknown as [string, string, string];
    names.push(name);
    if (type === 'histogram') names.push(`${name}_bucket`, `${name}_sum`, `${name}_count`);
    if (type === 'summary') names.push(`${name}_sum`, `${name}_count`);
  }
  return names;
}

/** PromQL's functions, aggregations and keywords: every other bare word of an expression is a metric name. */
const PROMQL_WORDS = new Set([
  'sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'count_values', 'group',
  'rate', 'irate', 'increase', 'delta', 'idelta', 'deriv', 'histogram_quantile', 'clamp_min', 'clamp_max', 'abs', 'absent',
  'avg_over_time', 'max_over_time', 'min_over_time', 'sum_over_time', 'count_over_time', 'changes', 'resets', 'time', 'vector', 'scalar',
  'and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'label_values',
]);

/** The metric names a PromQL expression (or a Grafana label_values query) refers to. */
export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // label values
    .replace(/\{[^}]*\}/g, '') // label matchers
    .replace(/\[[^\]]*\]/g, '') // ranges
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '') // label lists
    .replace(/label_values\(([^,)]+),[^)]*\)/g, 'label_values($1)') // a template variable's label
    .replace(/\$\w+/g, '') // Grafana variables
    .replace(/\b\d+(\.\d+)?(e[+-]?\d+)?[smhdwy]?\b/g, ''); // numbers and durations
  return [...new Set([...bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)].map((m) => m[0]).filter((word) => !PROMQL_WORDS.has(word)))];
}

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: Array<{ expr: string; datasource?: { type: string; uid: string } }>;
  panels?: Panel[];
}
interface Dashboard {
  schemaVersion: number;
  __inputs: Array<{ name: string; type: string; pluginId: string }>;
  panels: Panel[];
  templating: { list: Array<{ name: string; query: { query: string } | string; datasource?: { type: string; uid: string } }> };
}
const dashboard = async (): Promise<Dashboard> => JSON.parse(await readFile(DASHBOARD, 'utf8')) as Dashboard;
const allPanels = (panels: Panel[]): Panel[] => panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
const alertExpressions = async (): Promise<Array<{ alert: string; expr: string }>> => {
  const rules = parse(await readFile(RULES, 'utf8')) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
  return rules.groups.flatMap((g) => g.rules);
};

describe('the alerting rules', () => {
  const skipped = promtoolMissing();
  if (skipped) console.warn(skipped);

  it.skipIf(skipped !== undefined)('pass promtool check rules', () => {
    const out = execFileSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
    expect(out).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('wait before firing, say how bad it is and where the runbook is', async () => {
    const rules = parse(await readFile(RULES, 'utf8')) as { groups: Array<{ rules: Array<Record<string, any>> }> };
    for (const rule of rules.groups.flatMap((g) => g.rules)) {
      expect(rule.for, rule.alert).toMatch(/^\d+[smh]$/);
      expect(['page', 'warning'], rule.alert).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary, rule.alert).toBeTruthy();
      expect(rule.annotations?.description, rule.alert).toBeTruthy();
      expect(rule.annotations?.runbook, rule.alert).toMatch(/^docs\/metrics\.md#runbook-/);
    }
  });
});

describe('the dashboard', () => {
  it('is a Grafana dashboard that imports as it is: one datasource input, used by every panel and query, unique panel ids', async () => {
    const d = await dashboard();
    expect(d.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(d.__inputs).toEqual([expect.objectContaining({ name: 'DS_PROMETHEUS', type: 'datasource', pluginId: 'prometheus' })]);
    const panels = allPanels(d.panels);
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const datasources = [
      ...panels.filter((p) => p.type !== 'row').flatMap((p) => [p.datasource, ...(p.targets ?? []).map((t) => t.datasource)]),
      ...d.templating.list.map((v) => v.datasource),
    ];
    expect(datasources.every((ds) => ds?.type === 'prometheus' && ds.uid === '${DS_PROMETHEUS}')).toBe(true);
    expect(panels.filter((p) => p.type !== 'row').every((p) => (p.targets ?? []).length > 0 && p.targets!.every((t) => t.expr.trim() !== ''))).toBe(true);
  });
});

describe('every metric the dashboard and the alerts name', () => {
  let redis: RedisProcess;
  let stateDir: string;
  let stack: LocalStack;
  beforeAll(async () => {
    [redis, stateDir] = await Promise.all([startRedis(), mkdtemp(join(tmpdir(), 'emp-ops-'))]);
    stack = await startLocalStack({
      redis: { url: redis.url, source: 'env' },
      stateDir,
      redisPort: 0,
      workers: 1,
      api: { host: '127.0.0.1', port: 0, auth: false },
      monitor: false,
      webhooks: { port: 0 },
      logger: pino({ level: 'silent' }),
    });
  });
  afterAll(async () => {
    await stack?.stop();
    await redis?.stop();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  it('is exported by the API, the machine agent or the webhook service', async () => {
    const endpoints = [`${stack.api.url}/metrics`, `${stack.agent.url}/metrics`, `${stack.webhooks!.url}/metrics`];
    const exported = new Set((await Promise.all(endpoints.map(async (url) => declaredNames(await (await fetch(url)).text())))).flat());
    expect(exported.has('emp_queue_wait_seconds_bucket') && exported.has('emp_machine_drains_total') && exported.has('emp_webhook_message_age_seconds_bucket')).toBe(true);

    const d = await dashboard();
    const queries = [
      ...(await alertExpressions()).map(({ alert, expr }) => ({ where: `alert ${alert}`, expr })),
      ...allPanels(d.panels).flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel ${p.id} ${p.title}`, expr: t.expr }))),
      ...d.templating.list.map((v) => ({ where: `variable ${v.name}`, expr: typeof v.query === 'string' ? v.query : v.query.query })),
    ];
    const unknown = queries.flatMap(({ where, expr }) => metricNames(expr).filter((name) => !exported.has(name)).map((name) => `${where}: ${name}`));
    expect(unknown).toEqual([]);
    expect(queries.every(({ expr }) => metricNames(expr).length > 0), 'each query names a metric').toBe(true);
  });

  it('are found in expressions by name, not by label or function', () => {
    expect(metricNames('histogram_quantile(0.9, sum by (le, pool) (rate(emp_queue_wait_seconds_bucket{pool=~"$pool", x="a b"}[$__rate_interval])))')).toEqual(['emp_queue_wait_seconds_bucket']);
    expect(metricNames('sum by (pool) (a) > 0 unless on (pool) b{state=~"idle|busy"} offset 1d')).toEqual(['a', 'b']);
    expect(metricNames('label_values(emp_queue_depth{pool=~"$pool"}, service)')).toEqual(['emp_queue_depth']);
  });
});
