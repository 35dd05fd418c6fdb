/** Git repositories made by tests, served as file:// URLs, to install custom nodes from. */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** git as the test's author, with file:// allowed for submodules (git refuses it by default since 2.38.1) */
export const gitEnv = {
  GIT_AUTHOR_NAME: 'test',
  GIT_AUTHOR_EMAIL: 'test@localhost',
  GIT_COMMITTER_NAME: 'test',
  GIT_COMMITTER_EMAIL: 'test@localhost',
  GIT_CONFIG_COUNT: '2',
  GIT_CONFIG_KEY_0: 'protocol.file.allow',
  GIT_CONFIG_VALUE_0: 'always',
  GIT_CONFIG_KEY_1: 'init.defaultBranch',
  GIT_CONFIG_VALUE_1: 'main',
};

export async function git(cwd: string, ...args: string[]): Promise<string> {
  const { stdout } = await run('git', args, { cwd, env: { ...process.env, ...gitEnv } });
  return stdout.trim();
}

/** Writes the files into the repository at `path` and commits them; returns the commit. */
export async function commit(path: string, files: Record<string, string>): Promise<string> {
  for (const [file, content] of Object.entries(files)) await writeFile(join(path, file), content);
  await git(path, 'add', '-A');
  await git(path, 'commit', '--quiet', '-m', `add ${Object.keys(files).join(', ')}`);
  return git(path, 'rev-parse', 'HEAD');
}

/** A repository `<root>/origins/<name>` with the files committed; returns its file:// URL. */
export async function repository(root: string, name: string, files: Record<string, string>): Promise<string> {
  const path = join(root, 'origins', name);
  await mkdir(path, { recursive: true });
  await git(path, 'init', '--quiet');
  await commit(path, files);
  return `file://${path}`;
}
