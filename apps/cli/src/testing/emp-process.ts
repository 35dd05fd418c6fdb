import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUILD_DIR } from '@emp/core';

/** The repository root, the working folder of `emp` in tests. */
export const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));
/** The built CLI, which vitest's global setup builds from the sources under test (scripts/build.mjs). */
const builtEmp = join(BUILD_DIR, 'emp.js');

export interface EmpResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cleanEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const merged: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'warn' };
  delete merged.REDIS_URL;
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined) delete merged[key];
    else merged[key] = value;
  }
  return merged;
}

/** Starts `emp <args>` as a child process, the way a user runs it: the build, with plain `node`. */
export function spawnEmp(args: string[], env: Record<string, string | undefined> = {}): ChildProcess {
  return spawn(process.execPath, [builtEmp, ...args], {
    cwd: repoRoot,
    env: cleanEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Runs `emp <args>` to completion (killed after `timeoutMs`) and returns its exit code and output. */
export async function runEmp(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 30_000): Promise<EmpResult> {
  const child = spawnEmp(args, env);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once('close', (exitCode) => resolve(exitCode)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Resolves with the output so far once `pattern` appears on the child's stdout; rejects on exit or timeout. */
export function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    const done = (error?: Error) => {
      clearTimeout(timer);
      child.stdout?.off('data', onStdout);
      child.stderr?.off('data', onStderr);
      child.off('exit', onExit);
      if (error) reject(error);
      else resolve(stdout);
    };
    const onStdout = (chunk: Buffer) => {
      stdout += chunk.toString();
      if (pattern.test(stdout)) done();
    };
    const onStderr = (chunk: Buffer) => (stderr += chunk.toString());
    const onExit = (code: number | null) => done(new Error(`exited (${code}) before printing ${pattern}: ${stdout}\n${stderr}`));
    const timer = setTimeout(() => done(new Error(`no ${pattern} within ${timeoutMs} ms: ${stdout}\n${stderr}`)), timeoutMs);
    child.stdout?.on('data', onStdout);
    child.stderr?.on('data', onStderr);
    child.once('exit', onExit);
  });
}

/** Waits for the child to exit (SIGKILL after `timeoutMs`) and returns its exit code. */
export function exitCode(child: ChildProcess, timeoutMs = 30_000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}
