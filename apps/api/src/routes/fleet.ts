import { PoolName } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { requireRole } from '../auth';
import type { ApiContext } from '../server';

const PoolQuery = z.object({ pool: PoolName.optional() });
const FLEET_VIEWERS = ['worker', 'service', 'operator'] as const;

/** Queue depth per requirement class and the worker registry, per pool. */
export function fleetRoutes(app: FastifyInstance, { broker }: ApiContext): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const poolsOf = async (pool: string | undefined) => (pool ? [pool] : broker.pools());

  api.get('/v1/queues', { schema: { querystring: PoolQuery } }, async (request) => {
    // class definitions name tenants, so queue views are not for client keys
    requireRole(request.principal, FLEET_VIEWERS, 'see the queues');
    const pools = await poolsOf(request.query.pool);
    return { pools: await Promise.all(pools.map((pool) => broker.queueStats(pool))) };
  });

  api.get('/v1/workers', { schema: { querystring: PoolQuery } }, async (request) => {
    requireRole(request.principal, FLEET_VIEWERS, 'see the workers');
    const pools = await poolsOf(request.query.pool);
    const perPool = await Promise.all(pools.map(async (pool) => (await broker.workers(pool)).map((w) => ({ pool, ...w }))));
    return { workers: perPool.flat() };
  });
}
