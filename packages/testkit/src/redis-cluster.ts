import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { type RedisProcess, freePort, startRedis } from '@emp/core/redis-server';

const run = promisify(execFile);

/** A Redis Cluster of masters on loopback that this code started and owns; always stopped. */
export interface RedisClusterProcess {
  readonly nodes: readonly RedisProcess[];
  /** what an ioredis `Cluster` is given to find the cluster */
  readonly startupNodes: ReadonlyArray<{ host: string; port: number }>;
  /** the node (by client port) serving each slot */
  ownerOfSlot(slot: number): Promise<number>;
  stop(): Promise<void>;
}

export interface StartRedisClusterOptions {
  /** number of masters (no replicas); Redis Cluster needs at least 3 */
  masters?: number;
  /** `cluster-node-timeout` in ms */
  nodeTimeoutMs?: number;
  /** how long to wait for `cluster_state:ok` on every node */
  readyTimeoutMs?: number;
  /** binaries; `redis-server` and `redis-cli` on PATH by default */
  binary?: string;
  cliBinary?: string;
}

/** Distinct free loopback ports (a probe port can come back twice). */
async function distinctFreePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  for (let tries = 0; ports.size < count && tries < count * 20; tries++) ports.add(await freePort());
  if (ports.size < count) throw new Error(`could not find ${count} free loopback ports`);
  return [...ports];
}

/**
 * Starts `masters` redis-server processes in cluster mode (each with its own
 * folder and an explicit cluster bus port, since port + 10000 may not exist),
 * joins them with `redis-cli --cluster create`, and waits until every node
 * reports `cluster_state:ok` with all slots assigned and every node known.
 */
export async function startRedisCluster(options: StartRedisClusterOptions = {}): Promise<RedisClusterProcess> {
  const masters = options.masters ?? 3;
  if (masters < 3) throw new Error('a Redis Cluster needs at least 3 masters');
  const root = await mkdtemp(join(tmpdir(), 'emp-cluster-'));
  const nodes: RedisProcess[] = [];
  const stopAll = async () => {
    await Promise.all(nodes.map((node) => node.stop()));
    await rm(root, { recursive: true, force: true });
  };
  try {
    const ports = await distinctFreePorts(masters * 2);
    for (let i = 0; i < masters; i++) {
      const dir = join(root, `node-${i}`);
      await mkdir(dir);
      nodes.push(
        await startRedis({
          dir,
          port: ports[i * 2]!,
          binary: options.binary,
          args: [
            '--cluster-enabled', 'yes',
            '--cluster-config-file', join(dir, 'nodes.conf'),
            '--cluster-node-timeout', String(options.nodeTimeoutMs ?? 5_000),
            '--cluster-port', String(ports[i * 2 + 1]!),
          ],
        }),
      );
    }
    await run(
      options.cliBinary ?? 'redis-cli',
      ['--cluster', 'create', ...nodes.map((n) => `${n.host}:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'],
      { timeout: 30_000 },
    ).catch((error: Error & { stdout?: string; stderr?: string }) => {
      throw new Error(`redis-cli --cluster create failed: ${error.message}\n${error.stdout ?? ''}${error.stderr ?? ''}`);
    });
    await waitUntilClusterOk(nodes, masters, options.readyTimeoutMs ?? 20_000);
  } catch (error) {
    await stopAll();
    throw error;
  }

  let stopped = false;
  return {
    nodes,
    startupNodes: nodes.map((n) => ({ host: n.host, port: n.port })),
    async ownerOfSlot(slot: number) {
      const probe = new Redis({ host: nodes[0]!.host, port: nodes[0]!.port, maxRetriesPerRequest: 1 });
      try {
        const ranges = (await probe.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, ...unknown[]]]>;
        const range = ranges.find(([from, to]) => slot >= from && slot <= to);
        if (!range) throw new Error(`no node serves slot ${slot}`);
        return Number(range[2][1]);
      } finally {
        probe.disconnect();
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopAll();
    },
  };
}

async function waitUntilClusterOk(nodes: RedisProcess[], masters: number, timeoutMs: number): Promise<void> {
  const clients = nodes.map((n) => new Redis({ host: n.host, port: n.port, maxRetriesPerRequest: 1 }));
  const deadline = Date.now() + timeoutMs;
  let last = '';
  try {
    while (Date.now() < deadline) {
      const infos = await Promise.all(clients.map((c) => c.call('CLUSTER', 'INFO') as Promise<string>));
      const ok = infos.every(
        (info) =>
          /cluster_state:ok/.test(info) &&
          /cluster_slots_assigned:16384/.test(info) &&
          new RegExp(`cluster_known_nodes:${masters}\\b`).test(info),
      );
      if (ok) return;
      last = infos.map((info, i) => `${nodes[i]!.port}: ${info.split(/\r?\n/).slice(0, 6).join(' ')}`).join('\n');
      await sleep(50);
    }
    throw new Error(`the cluster did not reach cluster_state:ok within ${timeoutMs} ms:\n${last}`);
  } finally {
    for (const c of clients) c.disconnect();
  }
}
