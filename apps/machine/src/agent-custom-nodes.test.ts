import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Broker } from '@emp/core';
import { waitFor } from '@emp/testkit';
import { machineRecord, testMachineConfig, useTestAgents } from '@emp/testkit/machine';
import { usePrivateRedis } from '@emp/testkit/private-redis';
import { describe, expect, it } from 'vitest';
import { repository } from './custom-nodes/testing/git-repositories';
import type { MachineStatus } from './status';

const db = usePrivateRedis();
const agents = useTestAgents(db.url);

describe('a machine agent with custom nodes', () => {
  it('installs them before its processes start, reports each (a failing one too) and its workers offer the installed ones', async () => {
    const broker = await Broker.connect({ redis: db.redis });
    const root = await agents.folder();
    const goodUrl = await repository(root, 'ComfyUI-Good', { '__init__.py': '# good nodes\n', 'requirements.txt': 'numpy\n' });
    const missingUrl = `file://${join(root, 'origins', 'ComfyUI-Missing')}`;
    const nodesDir = join(root, 'ComfyUI', 'custom_nodes');
    // a pip that records what it was asked to install
    const pip = join(root, 'pip');
    await writeFile(pip, `#!/bin/sh\necho "$@" >> "${join(root, 'pip.log')}"\n`);
    await chmod(pip, 0o755);

    const agent = await agents.start(
      testMachineConfig(join(root, 'logs'), {
        custom_nodes: [
          { url: goodUrl, requirements: true },
          { url: missingUrl },
          // credentials in a URL stay out of the status (nothing listens on port 1)
          { url: 'git clone https://deploy:s3cret@127.0.0.1:1/org/ComfyUI-Private.git' },
        ],
        custom_nodes_dir: nodesDir,
        custom_nodes_pip: [pip],
        // stands in for ComfyUI: notes which nodes it found when it started
        services: [{ name: 'comfyui', command: 'sh', args: ['-c', `ls "${nodesDir}" > "${join(root, 'seen-by-service.txt')}"; exec sleep 600`], port_base: 39_500 }],
      }),
    );
    await waitFor('the machine to be ready', () => agent.isReady(), 30_000);

    const record = await waitFor('the installed custom nodes in the machine record', async () => {
      const r = await machineRecord(broker);
      return r.custom_nodes_state === 'installed' ? r : undefined;
    });
    const results = JSON.parse(record.custom_nodes!) as Array<Record<string, unknown>>;
    expect(results).toEqual([
      { name: 'ComfyUI-Good', url: goodUrl, status: 'cloned', commit: expect.stringMatching(/^[0-9a-f]{40}$/), requirements: 'installed' },
      { name: 'ComfyUI-Missing', url: missingUrl, status: 'failed', error: expect.stringMatching(/^git clone .*ComfyUI-Missing/) },
      { name: 'ComfyUI-Private', url: 'https://127.0.0.1:1/org/ComfyUI-Private.git', status: 'failed', error: expect.any(String) },
    ]);
    expect(record.custom_nodes).not.toContain('s3cret');

    const status = (await (await fetch(`${agent.url}/status`)).json()) as MachineStatus;
    expect(status.custom_nodes).toMatchObject({ state: 'installed', dir: nodesDir, results: [{ status: 'cloned' }, { status: 'failed' }, { status: 'failed' }] });
    expect(status.processes.map((p) => [p.name, p.state])).toEqual([
      ['comfyui-cpu0', 'running'],
      ['worker-comfyui-cpu0', 'running'],
    ]);

    const [worker] = await broker.workers('standard');
    expect(JSON.parse(worker!.capabilities!)).toMatchObject({ custom_nodes: ['ComfyUI-Good'] });
    await waitFor('the service to have looked', async () => (await readFile(join(root, 'seen-by-service.txt'), 'utf8').catch(() => '')).length > 0);
    expect((await readFile(join(root, 'seen-by-service.txt'), 'utf8')).split('\n')).toContain('ComfyUI-Good');
    expect(await readFile(join(root, 'pip.log'), 'utf8')).toBe(`-r ${join(nodesDir, 'ComfyUI-Good', 'requirements.txt')}\n`);
  });

  it('stops while installing: the install is cut short, no process starts, the machine goes offline', async () => {
    const broker = await Broker.connect({ redis: db.redis });
    const root = await agents.folder();
    const url = await repository(root, 'ComfyUI-Heavy', { 'requirements.txt': 'torch\n' });
    const pip = join(root, 'pip');
    await writeFile(pip, `#!/bin/sh\necho started > "${join(root, 'pip.log')}"\nexec sleep 600\n`);
    await chmod(pip, 0o755);
    const agent = agents.create(
      testMachineConfig(join(root, 'logs'), { custom_nodes: [{ url, requirements: true }], custom_nodes_dir: join(root, 'custom_nodes'), custom_nodes_pip: [pip] }),
    );
    const started = agent.start();
    await waitFor('the requirements install to be running', async () => (await readFile(join(root, 'pip.log'), 'utf8').catch(() => '')) !== '');
    expect((await machineRecord(broker)).state).toBe('starting');

    await agent.stop('SIGTERM');
    await started;
    expect(await agent.done).toBe('SIGTERM');
    expect(await machineRecord(broker)).toMatchObject({ state: 'offline' });
    expect(agent.status().processes).toEqual([]);
  });
});
