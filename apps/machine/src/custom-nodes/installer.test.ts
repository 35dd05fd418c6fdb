import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMachineConfig } from '../config';
import { commit, git, gitEnv, repository as repositoryIn } from './testing/git-repositories';
import { type CustomNodeInstallOptions, type CustomNodeResult, inParallel, installCustomNodes, installedCustomNodes, repositoryName } from './installer';

let root: string;
let pipLog: string;
let env: NodeJS.ProcessEnv;

const repository = (name: string, files: Record<string, string>) => repositoryIn(root, name, files);

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );
const pipCalls = async () => (await readFile(pipLog, 'utf8').catch(() => '')).split('\n').filter(Boolean);
const byName = (results: CustomNodeResult[]) => Object.fromEntries(results.map((r) => [r.name, r]));

let nodesUrl: string;
let withSubmoduleUrl: string;
let options: CustomNodeInstallOptions;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'emp-custom-nodes-'));
  // a pip that records what it was asked to install instead of installing it
  const bin = join(root, 'bin');
  pipLog = join(root, 'pip.log');
  await mkdir(bin);
  await writeFile(join(bin, 'pip'), `#!/bin/sh\necho "$@" >> "${pipLog}"\n`);
  await chmod(join(bin, 'pip'), 0o755);
  env = { ...process.env, ...gitEnv, PATH: `${bin}:${process.env.PATH}` };

  nodesUrl = await repository('ComfyUI-Nodes', { '__init__.py': '# nodes\n', 'requirements.txt': 'numpy\n' });
  const nodes = join(root, 'origins', 'ComfyUI-Nodes');
  await git(nodes, 'checkout', '--quiet', '-b', 'dev');
  await commit(nodes, { 'dev.py': '# only on dev\n' });
  await git(nodes, 'checkout', '--quiet', 'main');

  const libraryUrl = await repository('vendored-lib', { 'lib.py': '# a submodule\n' });
  withSubmoduleUrl = await repository('ComfyUI-WithSub', { '__init__.py': '# uses lib\n' });
  const withSub = join(root, 'origins', 'ComfyUI-WithSub');
  await git(withSub, 'submodule', 'add', '--quiet', libraryUrl, 'lib');
  await git(withSub, 'commit', '--quiet', '-m', 'add the submodule');

  options = { dir: join(root, 'ComfyUI', 'custom_nodes'), env, logger: pino({ level: 'silent' }) };
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('installCustomNodes', () => {
  it('installs every node it can and reports the one that fails', async () => {
    const configFile = join(root, 'machine.json');
    await writeFile(
      configFile,
      JSON.stringify({
        machine_id: 'm-1',
        pool: 'standard',
        connectors: ['simulation'],
        custom_nodes_dir: options.dir,
        custom_nodes: [
          { url: nodesUrl, branch: 'dev', requirements: true, env: { API_TOKEN: '${NODE_TOKEN}', TEMPLATE: '$${NOT_EXPANDED}' } },
          { url: `git clone --depth 1 ${withSubmoduleUrl}`, recursive: true },
          { url: `file://${join(root, 'origins', 'does-not-exist')}` },
        ],
      }),
    );
    const config = await loadMachineConfig(configFile, { NODE_TOKEN: 's3cret "quoted"' });
    const heard: string[] = [];

    const results = await installCustomNodes(config.custom_nodes, { ...options, onResult: (r) => heard.push(r.name) });

    const nodes = byName(results);
    expect(nodes['ComfyUI-Nodes']).toMatchObject({ status: 'cloned', requirements: 'installed' });
    expect(nodes['ComfyUI-WithSub']).toMatchObject({ status: 'cloned', url: withSubmoduleUrl });
    expect(nodes['does-not-exist']).toMatchObject({ status: 'failed', error: expect.stringMatching(/git clone .*does-not-exist/) });
    expect(heard.sort()).toEqual(['ComfyUI-Nodes', 'ComfyUI-WithSub', 'does-not-exist']);
    expect(installedCustomNodes(results)).toEqual(['ComfyUI-Nodes', 'ComfyUI-WithSub']);

    const installed = join(options.dir, 'ComfyUI-Nodes');
    expect(await exists(join(installed, 'dev.py'))).toBe(true); // the configured branch
    expect(await readFile(join(options.dir, 'ComfyUI-WithSub', 'lib', 'lib.py'), 'utf8')).toBe('# a submodule\n');
    expect(await pipCalls()).toEqual([`install -r ${join(installed, 'requirements.txt')}`]);
    expect(await readFile(join(installed, '.env'), 'utf8')).toBe('API_TOKEN="s3cret \\"quoted\\""\nTEMPLATE="${NOT_EXPANDED}"\n');
    expect((await stat(join(installed, '.env'))).mode & 0o777).toBe(0o600);
    expect(await exists(join(options.dir, 'does-not-exist'))).toBe(false);
  });

  it('is idempotent on a second run: no new clone, the branch pulled, pip only when requirements changed', async () => {
    const installed = join(options.dir, 'ComfyUI-Nodes');
    await writeFile(join(installed, 'local-cache.bin'), 'made by the node at runtime'); // a re-clone would lose it
    const origin = join(root, 'origins', 'ComfyUI-Nodes');
    await git(origin, 'checkout', '--quiet', 'dev');
    const head = await commit(origin, { 'requirements.txt': 'numpy\ntorch\n' });
    await git(origin, 'checkout', '--quiet', 'main');
    const specs = [
      { url: nodesUrl, branch: 'dev', requirements: true },
      { url: withSubmoduleUrl, recursive: true },
    ];

    const second = byName(await installCustomNodes(specs, options));

    expect(second['ComfyUI-Nodes']).toMatchObject({ status: 'updated', commit: head, requirements: 'installed' });
    expect(second['ComfyUI-WithSub']).toMatchObject({ status: 'updated' });
    expect(await readFile(join(installed, 'local-cache.bin'), 'utf8')).toBe('made by the node at runtime');
    expect(await pipCalls()).toHaveLength(2);

    const third = byName(await installCustomNodes(specs, options));
    expect(third['ComfyUI-Nodes']).toMatchObject({ status: 'updated', commit: head, requirements: 'unchanged' });
    expect(await pipCalls()).toHaveLength(2);

    const onMain = byName(await installCustomNodes([{ url: nodesUrl, branch: 'main' }], options));
    expect(onMain['ComfyUI-Nodes']).toMatchObject({ status: 'updated', commit: await git(origin, 'rev-parse', 'main') });
    expect(await exists(join(installed, 'dev.py'))).toBe(false);
  });

  it('leaves a folder that is not a clone of the configured repository alone', async () => {
    const squatter = join(options.dir, 'Squatter');
    await mkdir(squatter, { recursive: true });
    await writeFile(join(squatter, 'mine.txt'), 'keep me');

    const [result] = await installCustomNodes([{ url: 'https://example.invalid/someone/Squatter.git' }], options);

    expect(result).toMatchObject({ status: 'failed', error: expect.stringContaining('is not a git repository') });
    expect(await readFile(join(squatter, 'mine.txt'), 'utf8')).toBe('keep me');
    const [other] = await installCustomNodes([{ url: `${withSubmoduleUrl.replace('ComfyUI-WithSub', 'elsewhere')}/ComfyUI-WithSub` }], options);
    expect(other).toMatchObject({ status: 'failed', error: expect.stringContaining(`is a clone of ${withSubmoduleUrl}`) });
  });

  it('works on at most the given number of nodes at once, keeping results in order', async () => {
    let running = 0;
    let most = 0;
    const gates: Array<() => void> = [];
    const work = inParallel([1, 2, 3, 4, 5, 6, 7], 5, async (n) => {
      running++;
      most = Math.max(most, running);
      await new Promise<void>((open) => gates.push(open));
      running--;
      return n * 10;
    });
    while (gates.length < 5) await new Promise((resolve) => setImmediate(resolve));
    expect(running).toBe(5);
    while (gates.length > 0 || running > 0) {
      gates.shift()?.();
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await work).toEqual([10, 20, 30, 40, 50, 60, 70]);
    expect(most).toBe(5);
  });

  it('names a node after its repository', () => {
    expect(repositoryName('https://github.example/owner/ComfyUI-Manager.git')).toBe('ComfyUI-Manager');
    expect(repositoryName('git@github.example:owner/rgthree-comfy')).toBe('rgthree-comfy');
    expect(repositoryName('https://host/owner/repo/')).toBe('repo');
    expect(repositoryName('https://host/..')).toBeUndefined();
  });
});
