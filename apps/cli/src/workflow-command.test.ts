import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ApiStack, startApiStack } from '@emp/testkit/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, runEmp } from './testing/emp-process';

let stack: ApiStack;
let env: Record<string, string>;
const dir = mkdtempSync(join(tmpdir(), 'emp-workflow-'));
const file = (name: string, content: unknown) => {
  const path = join(dir, name);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
};

beforeAll(async () => {
  stack = await startApiStack({ worker: { durationMs: 20, steps: 1 } });
  env = { REDIS_URL: stack.redis.url };
});
afterAll(async () => stack?.stop());

describe('emp workflow', () => {
  it('submits docs/examples/workflow.json with --watch: three steps run on the simulation service, each line of progress shown', async () => {
    const run = await runEmp(['workflow', 'submit', join(repoRoot, 'docs/examples/workflow.json'), '--watch', '--timeout', '60'], env, 60_000);
    expect(run.code, run.stderr).toBe(0);
    const id = run.stdout.split('\n')[0]!;
    expect(run.stderr).toContain('generate succeeded');
    expect(run.stderr).toContain('upscale succeeded');
    expect(run.stderr).toMatch(/\[3\/3\] workflow succeeded/);
    expect(run.stdout).toMatch(new RegExp(`${id.replace('.', '\\.')}\\s+succeeded\\s+3/3 steps ended`));
    expect(run.stdout).toMatch(/caption\s+succeeded\s+upscale/);

    const shown = await runEmp(['workflow', 'get', id, '--json'], env);
    expect(JSON.parse(shown.stdout).steps[2].output).toMatchObject({ caption: 'a cat on a sofa', image: 'cat-1@2x.png' });
    const watched = await runEmp(['workflow', 'watch', id], env);
    expect(watched.code).toBe(0);
    const listed = await runEmp(['workflow', 'list'], env);
    expect(listed.stdout).toContain(id);
  });

  it('cancels, and exits 1 from watch on a workflow that did not succeed', async () => {
    const submitted = await runEmp(['workflow', 'submit', file('slow.json', { steps: { slow: { service: 'simulation', payload: { duration_ms: 60_000 } } } })], env);
    const id = submitted.stdout.trim();
    const canceled = await runEmp(['workflow', 'cancel', id, '--reason', 'not needed'], env);
    expect(canceled.stdout).toBe(`${id} canceled\n`);
    expect((await runEmp(['workflow', 'cancel', id], env)).stdout).toBe(`${id} is already canceled; unchanged\n`);
    const watched = await runEmp(['workflow', 'watch', id], env);
    expect(watched.code).toBe(1);
    expect(watched.stdout).toMatch(/slow\s+canceled/);
  });

  it('submits once per --idempotency-key: the repeat prints the first workflow and says so', async () => {
    const path = file('keyed.json', { steps: { slow: { service: 'simulation', payload: { duration_ms: 60_000 } } } });
    const first = await runEmp(['workflow', 'submit', path, '--idempotency-key', 'batch-12'], env);
    expect(first.code, first.stderr).toBe(0);
    const again = await runEmp(['workflow', 'submit', path, '--idempotency-key', 'batch-12'], env);
    expect(again.stdout).toBe(first.stdout);
    expect(again.stderr).toContain('idempotency key matched an earlier workflow');
    await runEmp(['workflow', 'cancel', first.stdout.trim()], env);
  });

  it('refuses bad input with a clear error and exit code 2', async () => {
    const missing = await runEmp(['workflow', 'submit', join(dir, 'nope.json')], env);
    expect([missing.code, missing.stderr]).toEqual([2, `error: cannot read ${join(dir, 'nope.json')}: no such file\n`]);
    const notJson = await runEmp(['workflow', 'submit', file('bad.json', '{ steps: ')], env);
    expect(notJson.code).toBe(2);
    expect(notJson.stderr).toMatch(/bad\.json is not JSON/);
    const cycle = await runEmp(['workflow', 'submit', file('cycle.json', { steps: { a: { service: 'simulation', needs: ['b'] }, b: { service: 'simulation', needs: ['a'] } } })], env);
    expect(cycle.code).toBe(2);
    expect(cycle.stderr).toContain("the steps' needs form a cycle: a -> b -> a");
    const priority = await runEmp(['workflow', 'submit', file('ok.json', { steps: { a: { service: 'simulation' } } }), '--priority', 'high'], env);
    expect([priority.code, priority.stderr]).toEqual([2, "error: invalid --priority: expected a whole number, got 'high'\n"]);
    const unknown = await runEmp(['workflow', 'get', 'standard.zzzzzzzzzzzzzzzzzz'], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('workflow standard.zzzzzzzzzzzzzzzzzz does not exist');
  });
});
