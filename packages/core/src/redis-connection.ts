import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import { ValidationError } from './errors';
import type { RedisClient } from './broker/types';

/**
 * How emp is pointed at Redis: one URL, `redis://[user:password@]host:port[/db]`
 * (or `rediss://` for TLS). A Redis Cluster is named by several seed nodes in
 * the one URL, `redis://host1:7000,host2:7001,host3:7002`, or by a single seed
 * with `EMP_REDIS_CLUSTER=1`: the client reads the slot map from whichever
 * seed answers (docs/scale-out.md).
 */
export interface RedisTarget {
  cluster: boolean;
  nodes: Array<{ host: string; port: number }>;
  username?: string;
  password?: string;
  tls: boolean;
  db?: number;
}

const invalid = (message: string) => new ValidationError('Redis target', [{ path: '', message }]);

export function parseRedisTarget(url: string, env: NodeJS.ProcessEnv = process.env): RedisTarget {
  const match = /^(rediss?):\/\/(?:([^@/]*)@)?([^/?#]+)(?:\/(\d*))?(?:[?#].*)?$/.exec(url.trim());
  if (!match) throw invalid(`not a Redis URL: ${url} (expected redis://host:port, or redis://host1:port1,host2:port2 for a cluster)`);
  const [, scheme, userinfo, hosts, db] = match;
  const nodes = hosts!.split(',').map((hostPort) => {
    const node = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(hostPort.trim());
    const port = Number(node?.[2] ?? 6379);
    if (!node || !Number.isInteger(port) || port < 1 || port > 65_535) throw invalid(`not a host:port in the Redis URL ${url}: ${hostPort}`);
    return { host: node[1]!.replace(/^\[|\]$/g, ''), port };
  });
  const flag = env.EMP_REDIS_CLUSTER?.trim();
  if (flag && !['0', '1', 'true', 'false'].includes(flag)) throw invalid(`EMP_REDIS_CLUSTER is 1 or 0, not ${flag}`);
  const cluster = nodes.length > 1 || flag === '1' || flag === 'true';
  // as ioredis reads it: `user:password@`, `:password@`, or `user@` (a user without a password)
  const colon = userinfo?.indexOf(':') ?? -1;
  const user = userinfo === undefined ? undefined : decodeURIComponent(colon === -1 ? userinfo : userinfo.slice(0, colon));
  const password = userinfo === undefined || colon === -1 ? undefined : decodeURIComponent(userinfo.slice(colon + 1));
  if (cluster && db && db !== '0') throw invalid(`a Redis Cluster has only database 0, and ${url} names ${db}`);
  return {
    cluster,
    nodes,
    ...(user ? { username: user } : {}),
    ...(password ? { password } : {}),
    tls: scheme === 'rediss',
    ...(db ? { db: Number(db) } : {}),
  };
}

/**
 * What every cluster connection of emp is opened with, so that a failover
 * (a master dies, a replica takes its slots after `cluster-node-timeout` plus
 * an election, a couple of seconds) is ridden out without a restart:
 * - a command whose node closed, or that met CLUSTERDOWN / TRYAGAIN, is sent
 *   again after a delay on the slot map read again, up to `maxRedirections`
 *   times: 300 ms x 40, so about 12 s of failover;
 * - reads stay on masters (`scaleReads: 'master'`): a replica may lag, and a
 *   job read from one could be older than the write the same client just made.
 */
export const CLUSTER_CONNECTION_OPTIONS: ClusterOptions = {
  scaleReads: 'master',
  retryDelayOnFailover: 300,
  retryDelayOnClusterDown: 300,
  retryDelayOnTryAgain: 300,
  maxRedirections: 40,
  // the slot map is read again every 5 s even without a redirection
  slotsRefreshInterval: 5_000,
};

/**
 * Opens the Redis (or Redis Cluster) a URL names. `redisOptions` apply to each
 * connection (to every node's, for a cluster).
 */
export function openRedis(url: string, redisOptions: RedisOptions = {}, env: NodeJS.ProcessEnv = process.env): RedisClient {
  const flag = env.EMP_REDIS_CLUSTER?.trim();
  const several = /^[a-z]+:\/\/(?:[^@/]*@)?[^/?#]*,/.test(url.trim());
  // one node: the URL as ioredis reads it (query options, unix sockets), exactly as before clusters were known here
  if (!several && (!flag || flag === '0' || flag === 'false')) return new Redis(url, redisOptions);
  const target = parseRedisTarget(url, env);
  const auth = { ...(target.username ? { username: target.username } : {}), ...(target.password !== undefined ? { password: target.password } : {}) };
  const tls = target.tls ? { tls: {} } : {};
  const { lazyConnect, ...perNode } = redisOptions;
  return new Cluster(target.nodes, {
    ...CLUSTER_CONNECTION_OPTIONS,
    ...(lazyConnect !== undefined ? { lazyConnect } : {}),
    redisOptions: { ...perNode, ...auth, ...tls },
  });
}
