import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { type RedisProcess, type StartRedisOptions, freePort, startRedis } from '@emp/core/redis-server';

const run = promisify(execFile);

/** A Redis Cluster on loopback (masters, and replicas if asked) that this code started and owns; always stopped. */
export interface RedisClusterProcess {
  /** every node, masters and replicas, as started (a node's role changes with a failover: ask `roles()`) */
  readonly nodes: readonly RedisProcess[];
  /** what an ioredis `Cluster` is given to find the cluster */
  readonly startupNodes: ReadonlyArray<{ host: string; port: number }>;
  /** the node (by client port) serving each slot, as a live node sees it now */
  ownerOfSlot(slot: number): Promise<number>;
  /** the replicas (by client port) of the master on `masterPort`, as a live node sees them now */
  replicasOf(masterPort: number): Promise<number[]>;
  /** each live node's role, by client port */
  roles(): Promise<Map<number, 'master' | 'replica'>>;
  /** Kills the node on `port` with SIGKILL (no shutdown, no last write), as a crashed machine would. */
  kill(port: number): Promise<void>;
  /**
   * Waits until a replica of the killed master `port` serves its slots and every
   * live node reports `cluster_state:ok`; returns the new master's port.
   */
  waitForFailover(port: number, timeoutMs?: number): Promise<number>;
  /**
   * Starts a killed node again, as it was (its folder, port and nodes.conf): it rejoins as a
   * replica of the node that took its slots; resolves with that master's port once it is in sync.
   */
  revive(port: number, timeoutMs?: number): Promise<number>;
  /**
   * Starts one more node, joins it to the cluster (CLUSTER MEET) as a master
   * serving no slot, as an operator adds a machine; resolves with its client
   * port once every live node knows every other and the new one reports
   * `cluster_state:ok`.
   */
  addMaster(timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
}

export interface StartRedisClusterOptions {
  /** number of masters; Redis Cluster needs at least 3 */
  masters?: number;
  /** replicas of each master (default 0); with them, a killed master fails over */
  replicasPerMaster?: number;
  /** `cluster-node-timeout` in ms (default 5 s, 1 s with replicas so that a failover takes a couple of seconds) */
  nodeTimeoutMs?: number;
  /** how long to wait for `cluster_state:ok` on every node */
  readyTimeoutMs?: number;
  /**
   * binaries; `EMP_TEST_REDIS_SERVER` / `EMP_TEST_REDIS_CLI` when set (e.g. valkey-server and
   * valkey-cli), else `redis-server` and `redis-cli` on PATH
   */
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
 * Starts `masters * (1 + replicasPerMaster)` redis-server processes in cluster
 * mode (each with its own folder and an explicit cluster bus port, since
 * port + 10000 may not exist), joins them with `redis-cli --cluster create
 * --cluster-replicas`, and waits until every node reports `cluster_state:ok`
 * with all slots assigned, every node known and every replica in sync.
 */
export async function startRedisCluster(options: StartRedisClusterOptions = {}): Promise<RedisClusterProcess> {
  const masters = options.masters ?? 3;
  const replicasPerMaster = options.replicasPerMaster ?? 0;
  if (masters < 3) throw new Error('a Redis Cluster needs at least 3 masters');
  if (!Number.isInteger(replicasPerMaster) || replicasPerMaster < 0) throw new Error('replicasPerMaster is a whole number >= 0');
  const total = masters * (1 + replicasPerMaster);
  const binary = options.binary ?? (process.env.EMP_TEST_REDIS_SERVER || undefined);
  const cliBinary = options.cliBinary ?? (process.env.EMP_TEST_REDIS_CLI || 'redis-cli');
  const nodeTimeoutMs = options.nodeTimeoutMs ?? (replicasPerMaster > 0 ? 1_000 : 5_000);
  const root = await mkdtemp(join(tmpdir(), 'emp-cluster-'));
  const nodes: RedisProcess[] = [];
  /** how each node was started, so that a killed one can be started again as it was */
  const startOptionsByPort = new Map<number, StartRedisOptions>();
  const stopAll = async () => {
    await Promise.all(nodes.map((node) => node.stop()));
    await rm(root, { recursive: true, force: true });
  };
  /** node `i` (its own folder) on `port`, with its cluster bus on `busPort` */
  const startNode = async (i: number, port: number, busPort: number): Promise<RedisProcess> => {
    const dir = join(root, `node-${i}`);
    await mkdir(dir);
    const startOptions: StartRedisOptions = {
      dir,
      port,
      binary,
      args: [
        '--cluster-enabled', 'yes',
        '--cluster-config-file', join(dir, 'nodes.conf'),
        '--cluster-node-timeout', String(nodeTimeoutMs),
        '--cluster-port', String(busPort),
        // a replica that lost its master a moment ago may always take over (the test kills masters on purpose)
        '--cluster-replica-validity-factor', '0',
        // a replica's first sync starts at once, not after the default 5 s wait for more replicas
        '--repl-diskless-sync-delay', '0',
      ],
    };
    startOptionsByPort.set(port, startOptions);
    return startRedis(startOptions);
  };
  try {
    const ports = await distinctFreePorts(total * 2);
    for (let i = 0; i < total; i++) nodes.push(await startNode(i, ports[i * 2]!, ports[i * 2 + 1]!));
    await run(
      cliBinary,
      ['--cluster', 'create', ...nodes.map((n) => `${n.host}:${n.port}`), '--cluster-replicas', String(replicasPerMaster), '--cluster-yes'],
      { timeout: 30_000 },
    ).catch((error: Error & { stdout?: string; stderr?: string }) => {
      throw new Error(`redis-cli --cluster create failed: ${error.message}\n${error.stdout ?? ''}${error.stderr ?? ''}`);
    });
    await waitUntilClusterOk(nodes, total, replicasPerMaster, options.readyTimeoutMs ?? 20_000);
  } catch (error) {
    await stopAll();
    throw error;
  }

  let stopped = false;
  const killed = new Set<number>();
  /** the replicas each killed master had when it was killed: the candidates to take over */
  const replicasAtKill = new Map<number, Set<number>>();
  const live = () => nodes.filter((n) => !killed.has(n.port));
  /** asks the first live node that answers */
  const ask = async <T>(question: (probe: Redis) => Promise<T>): Promise<T> => {
    let last: unknown;
    for (const node of live()) {
      const probe = new Redis({ host: node.host, port: node.port, maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
      probe.on('error', () => undefined);
      try {
        await probe.connect();
        return await question(probe);
      } catch (error) {
        last = error;
      } finally {
        probe.disconnect();
      }
    }
    throw new Error(`no live cluster node answered: ${String(last)}`);
  };
  const ownerOfSlot = (slot: number) =>
    ask(async (probe) => {
      const ranges = (await probe.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, ...unknown[]]]>;
      const range = ranges.find(([from, to]) => slot >= from && slot <= to);
      if (!range) throw new Error(`no node serves slot ${slot}`);
      return Number(range[2][1]);
    });
  const clusterNodes = () => ask(async (probe) => parseClusterNodes((await probe.call('CLUSTER', 'NODES')) as string));
  return {
    nodes,
    startupNodes: nodes.map((n) => ({ host: n.host, port: n.port })),
    ownerOfSlot,
    async replicasOf(masterPort: number) {
      const all = await clusterNodes();
      const master = all.find((n) => n.port === masterPort);
      if (!master) throw new Error(`no cluster node on port ${masterPort}`);
      return all.filter((n) => n.masterId === master.id && !n.failed).map((n) => n.port);
    },
    async roles() {
      const all = await clusterNodes();
      return new Map(all.filter((n) => !n.failed).map((n) => [n.port, n.master ? 'master' : 'replica'] as const));
    },
    async kill(port: number) {
      const node = nodes.find((n) => n.port === port);
      if (!node?.pid) throw new Error(`no cluster node of this cluster on port ${port}`);
      const all = await clusterNodes();
      const id = all.find((n) => n.port === port)?.id;
      replicasAtKill.set(port, new Set(all.filter((n) => n.masterId === id).map((n) => n.port)));
      killed.add(port);
      process.kill(node.pid, 'SIGKILL');
    },
    async waitForFailover(port: number, timeoutMs = 20_000) {
      const candidates = replicasAtKill.get(port);
      if (!candidates?.size) throw new Error(`node ${port} was not killed by kill(), or had no replica to take over`);
      const deadline = Date.now() + timeoutMs;
      let last = '';
      while (Date.now() < deadline) {
        try {
          const all = await clusterNodes();
          const promoted = all.find((n) => candidates.has(n.port) && n.master && !n.failed && n.slots > 0);
          const infos = await Promise.all(live().map((n) => clusterInfo(n)));
          if (promoted && infos.every((info) => /cluster_state:ok/.test(info))) return promoted.port;
          last = all.map((n) => `${n.port} ${n.flags} slots=${n.slots}`).join('; ');
        } catch (error) {
          last = String(error);
        }
        await sleep(50);
      }
      throw new Error(`no replica took over from ${port} within ${timeoutMs} ms: ${last}`);
    },
    async revive(port: number, timeoutMs = 20_000) {
      const options = startOptionsByPort.get(port);
      if (!killed.has(port) || !options) throw new Error(`node ${port} was not killed by kill()`);
      const index = nodes.findIndex((n) => n.port === port);
      await nodes[index]!.stop(); // reaps the killed process
      nodes[index] = await startRedis(options);
      killed.delete(port);
      // with its nodes.conf it rejoins; its slots are served by another now, so it becomes that one's replica
      const deadline = Date.now() + timeoutMs;
      let last = '';
      while (Date.now() < deadline) {
        const all = await clusterNodes().catch(() => []);
        const me = all.find((n) => n.port === port);
        const master = all.find((n) => n.id === me?.masterId);
        if (me && !me.master && !me.failed && master) {
          const onMaster = new Redis({ host: '127.0.0.1', port: master.port, maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
          onMaster.on('error', () => undefined);
          try {
            await onMaster.connect();
            const replication = await onMaster.info('replication');
            if (new RegExp(`^slave\\d+:ip=[^,]+,port=${port},state=online`, 'm').test(replication)) return master.port;
            last = replication.replace(/\r?\n/g, ' ');
          } catch (error) {
            last = String(error);
          } finally {
            onMaster.disconnect();
          }
        } else {
          last = all.map((n) => `${n.port} ${n.flags}`).join('; ');
        }
        await sleep(50);
      }
      throw new Error(`node ${port} did not come back as an online replica within ${timeoutMs} ms: ${last}`);
    },
    async addMaster(timeoutMs = 20_000) {
      const [port, busPort] = await distinctFreePorts(2);
      const node = await startNode(nodes.length, port!, busPort!);
      nodes.push(node);
      await ask((probe) => probe.call('CLUSTER', 'MEET', node.host, port!, busPort!));
      const deadline = Date.now() + timeoutMs;
      let last = '';
      while (Date.now() < deadline) {
        const ports = live().map((n) => n.port);
        const views = await Promise.all(live().map(async (n) => parseClusterNodes(await clusterCommand(n, 'NODES'))));
        // every node knows every other one (the new one, the others), none still in handshake
        const known = views.every((all) => ports.every((p) => all.some((n) => n.port === p && !n.flags.includes('handshake') && !n.failed)));
        // and the new node has learnt who serves every slot: until then it answers CLUSTERDOWN
        if (known && views.every((all) => all.some((n) => n.port === port && n.master)) && /cluster_state:ok/.test(await clusterInfo(node))) return port!;
        last = views.map((all) => all.map((n) => `${n.port} ${n.flags}`).join(', ')).join(' | ');
        await sleep(50);
      }
      throw new Error(`the node on ${port} did not join the cluster within ${timeoutMs} ms: ${last}`);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopAll();
    },
  };
}

interface ClusterNode {
  id: string;
  port: number;
  flags: string;
  master: boolean;
  failed: boolean;
  /** the id of the master it replicates, '' for a master */
  masterId: string;
  /** how many slots it serves */
  slots: number;
}

/** `CLUSTER NODES`: `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges...>` per line. */
function parseClusterNodes(text: string): ClusterNode[] {
  return text
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => {
      const [id, address, flags, master, , , , , ...ranges] = line.trim().split(' ');
      const port = Number(/:(\d+)@/.exec(address ?? '')?.[1]);
      const slots = ranges
        .filter((r) => !r.startsWith('['))
        .reduce((sum, r) => {
          const [from, to] = r.split('-').map(Number);
          return sum + (to === undefined ? 1 : to - from! + 1);
        }, 0);
      const flagList = (flags ?? '').split(',');
      return {
        id: id!,
        port,
        flags: flags ?? '',
        master: flagList.includes('master'),
        failed: flagList.includes('fail') || flagList.includes('fail?'),
        masterId: master === '-' ? '' : (master ?? ''),
        slots,
      };
    });
}

function clusterInfo(node: RedisProcess): Promise<string> {
  return clusterCommand(node, 'INFO');
}

/** `CLUSTER <what>` asked of one node, on a connection of its own. */
async function clusterCommand(node: RedisProcess, what: 'INFO' | 'NODES'): Promise<string> {
  const probe = new Redis({ host: node.host, port: node.port, maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    return (await probe.call('CLUSTER', what)) as string;
  } finally {
    probe.disconnect();
  }
}

async function waitUntilClusterOk(nodes: RedisProcess[], total: number, replicasPerMaster: number, timeoutMs: number): Promise<void> {
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
          new RegExp(`cluster_known_nodes:${total}\\b`).test(info),
      );
      // a replica counts once its first sync is done and its master sees it online (WAIT counts it, a failover may elect it)
      const synced =
        replicasPerMaster === 0 ||
        (await Promise.all(clients.map((c) => c.info('replication')))).every((info) =>
          /^role:master/m.test(info)
            ? (info.match(/^slave\d+:.*state=online/gm) ?? []).length === replicasPerMaster
            : /^master_link_status:up/m.test(info),
        );
      if (ok && synced) return;
      last = infos.map((info, i) => `${nodes[i]!.port}: ${info.split(/\r?\n/).slice(0, 6).join(' ')}`).join('\n');
      await sleep(50);
    }
    throw new Error(`the cluster did not reach cluster_state:ok within ${timeoutMs} ms:\n${last}`);
  } finally {
    for (const c of clients) c.disconnect();
  }
}
