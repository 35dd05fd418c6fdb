import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseWith } from '@emp/core';
import { type Logger, pino } from 'pino';
import { z } from 'zod';
import { CustomNodeSpec } from '../config';

const run = promisify(execFile);

type Spec = z.output<typeof CustomNodeSpec>;

export interface CustomNodeInstallOptions {
  /** the folder the nodes go in (ComfyUI's custom_nodes) */
  dir: string;
  /** nodes installed at once; default 5 */
  concurrency?: number;
  /** the command that installs a requirements file, run as `[...pip, '-r', file]`; default `pip install` */
  pip?: readonly string[];
  /** environment of git and pip (PATH, proxies, credentials); default process.env */
  env?: NodeJS.ProcessEnv;
  /** longest one git or pip command may run; default 15 minutes */
  commandTimeoutMs?: number;
  logger?: Logger;
  /** hears each node's result as soon as it is known, for status reports */
  onResult?: (result: CustomNodeResult) => void;
  /** stops the git and pip commands running (the machine is stopping); their nodes fail */
  signal?: AbortSignal;
}

export interface CustomNodeResult {
  /** the folder under `dir`, from the repository's name */
  name: string;
  url: string;
  /** cloned now, already there (fetched and checked out), or failed */
  status: 'cloned' | 'updated' | 'failed';
  /** the commit checked out */
  commit?: string;
  /** requirements.txt: installed now, unchanged since the last install, or the repository has none */
  requirements?: 'installed' | 'unchanged' | 'none';
  /** what went wrong, with the command's own words */
  error?: string;
}

/** Kept inside .git, so it never shows up as a change in the node's tree. */
const REQUIREMENTS_MARK = join('.git', 'emp-requirements.sha256');
const DEFAULT_TIMEOUT_MS = 15 * 60_000;

/**
 * Installs ComfyUI custom nodes, `concurrency` at a time: clones each
 * repository (with submodules when `recursive`) into `<dir>/<name>`, or when it
 * is already there fetches and checks out the configured branch (and
 * fast-forwards it), then writes its `.env` and, with `requirements`,
 * pip-installs its requirements.txt when that file changed since the last
 * install. Idempotent: a second run re-clones nothing. One node failing is
 * reported in its result and stops none of the others.
 *
 * `.env` values are written as given: `loadMachineConfig` has already expanded
 * `${VAR}` in them (and turned `$${` into a literal `${`).
 */
export async function installCustomNodes(
  specs: ReadonlyArray<z.input<typeof CustomNodeSpec>>,
  options: CustomNodeInstallOptions,
): Promise<CustomNodeResult[]> {
  const parsed = parseWith(z.array(CustomNodeSpec), specs, 'custom nodes');
  const logger = (options.logger ?? pino({ name: 'emp-custom-nodes', level: process.env.EMP_LOG_LEVEL ?? 'info' })).child({ component: 'custom-nodes' });
  const installer = new Installer(options, logger);
  await mkdir(options.dir, { recursive: true });
  const claimed = new Set<string>();
  return inParallel(parsed, options.concurrency ?? 5, async (spec) => {
    const name = repositoryName(spec.url);
    let result: CustomNodeResult;
    if (!name) {
      result = { name: '', url: spec.url, status: 'failed', error: `cannot name a folder after ${spec.url}` };
    } else if (claimed.has(name)) {
      result = { name, url: spec.url, status: 'failed', error: `another entry already installs into ${name}` };
    } else {
      claimed.add(name);
      result = await installer.install(spec, name);
    }
    options.onResult?.(result);
    return result;
  });
}

/** The names of the nodes that are installed, for the workers' `custom_nodes` capability. */
export function installedCustomNodes(results: readonly CustomNodeResult[]): string[] {
  return results.filter((result) => result.status !== 'failed').map((result) => result.name);
}

/** `https://host/owner/ComfyUI-Foo.git` -> `ComfyUI-Foo`; undefined when the URL ends in nothing usable. */
export function repositoryName(url: string): string | undefined {
  const last = url.replace(/[/\\]+$/, '').split(/[/:\\]/).pop() ?? '';
  const name = last.replace(/\.git$/, '');
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(name) ? name : undefined;
}

class Installer {
  private readonly env: NodeJS.ProcessEnv;
  private readonly timeoutMs: number;
  private readonly pip: readonly string[];

  constructor(
    private readonly options: CustomNodeInstallOptions,
    private readonly logger: Logger,
  ) {
    // a repository that needs credentials fails at once instead of waiting for someone to type them
    this.env = { ...(options.env ?? process.env), GIT_TERMINAL_PROMPT: '0' };
    this.timeoutMs = options.commandTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.pip = options.pip ?? ['pip', 'install'];
    if (this.pip.length === 0) throw new RangeError('the pip command is empty');
  }

  async install(spec: Spec, name: string): Promise<CustomNodeResult> {
    const target = join(this.options.dir, name);
    const logger = this.logger.child({ custom_node: name });
    try {
      const status = (await exists(target)) ? await this.update(spec, target) : await this.clone(spec, target);
      if (spec.recursive) await this.git(target, ['submodule', 'update', '--init', '--recursive', '--quiet']);
      const commit = (await this.git(target, ['rev-parse', 'HEAD'])).trim();
      if (Object.keys(spec.env).length > 0) await writeEnvFile(join(target, '.env'), spec.env);
      const requirements = spec.requirements ? await this.installRequirements(target) : undefined;
      logger.info({ status, commit, requirements }, 'custom node ready');
      return { name, url: spec.url, status, commit, ...(requirements && { requirements }) };
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      logger.warn({ url: spec.url, err: message }, 'custom node failed to install');
      return { name, url: spec.url, status: 'failed', error: message };
    }
  }

  /** Clones next to the target and renames it into place, so an interrupted clone never passes for an installed node. */
  private async clone(spec: Spec, target: string): Promise<'cloned'> {
    const staging = join(this.options.dir, `.${randomUUID()}.cloning`);
    const args = ['clone', '--quiet', ...(spec.branch ? ['--branch', spec.branch] : []), ...(spec.recursive ? ['--recurse-submodules'] : []), '--', spec.url, staging];
    try {
      await this.git(this.options.dir, args);
      await rename(staging, target);
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
    return 'cloned';
  }

  /** Fetches, checks out the configured branch (or stays on the current one) and fast-forwards it to its upstream. */
  private async update(spec: Spec, target: string): Promise<'updated'> {
    if (!(await exists(join(target, '.git')))) throw new Error(`${target} exists and is not a git repository; move it away to install ${spec.url}`);
    const origin = (await this.git(target, ['remote', 'get-url', 'origin'])).trim();
    if (origin !== spec.url) throw new Error(`${target} is a clone of ${origin}, not of ${spec.url}`);
    await this.git(target, ['fetch', '--quiet', '--prune', '--tags', 'origin']);
    if (spec.branch) await this.git(target, ['checkout', '--quiet', spec.branch]);
    const upstream = await this.git(target, ['rev-parse', '--abbrev-ref', '--symbolic-full-name', '@{upstream}']).then(
      (name) => name.trim(),
      () => undefined, // a tag or a commit: nothing to follow
    );
    if (upstream) await this.git(target, ['merge', '--ff-only', '--quiet', upstream]);
    return 'updated';
  }

  private async installRequirements(target: string): Promise<'installed' | 'unchanged' | 'none'> {
    const file = join(target, 'requirements.txt');
    const content = await readFile(file).catch(() => undefined);
    if (!content) return 'none';
    const digest = createHash('sha256').update(content).digest('hex');
    const mark = join(target, REQUIREMENTS_MARK);
    if ((await readFile(mark, 'utf8').catch(() => '')).trim() === digest) return 'unchanged';
    const [command, ...args] = this.pip;
    await this.exec(command!, [...args, '-r', file], target);
    await writeFile(mark, `${digest}\n`);
    return 'installed';
  }

  private git(cwd: string, args: string[]): Promise<string> {
    return this.exec('git', args, cwd);
  }

  private async exec(command: string, args: string[], cwd: string): Promise<string> {
    try {
      const { stdout } = await run(command, args, {
        cwd,
        env: this.env,
        timeout: this.timeoutMs,
        maxBuffer: 16 * 1024 * 1024,
        ...(this.options.signal && { signal: this.options.signal }),
      });
      return stdout;
    } catch (error) {
      const failure = error as NodeJS.ErrnoException & { stderr?: string; killed?: boolean };
      const said = failure.stderr?.trim().split('\n').slice(-5).join(' | ');
      const why = failure.killed ? `timed out after ${this.timeoutMs} ms` : (said || failure.message);
      throw new Error(`${command} ${args.filter((arg) => arg !== '--quiet').join(' ')}: ${why}`);
    }
  }
}

/** KEY="value" lines, quoted and escaped so that any value reads back as written; readable by its owner only. */
async function writeEnvFile(path: string, env: Record<string, string>): Promise<void> {
  const lines = Object.entries(env).map(([key, value]) => `${key}="${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  const temporary = `${path}.${randomUUID()}.tmp`;
  await writeFile(temporary, `${lines.join('\n')}\n`, { mode: 0o600 });
  await rename(temporary, path);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Runs `work` over `items`, at most `limit` at once, keeping the results in order. */
export async function inParallel<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]!);
    }
  });
  await Promise.all(lanes);
  return results;
}
