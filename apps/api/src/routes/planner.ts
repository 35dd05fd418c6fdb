import { PlannerReport, type PlannerState, decodeMachine, isInvalidRecord, placementMatrix } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { PoolQuery, answers } from '../schemas';

/** GET /v1/planner: the planner's last round per pool (forecast, decisions, capacity hint) and the placement matrix. */
export async function plannerRoutes(app: FastifyInstance): Promise<void> {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { broker } = app;

  api.get('/v1/planner', {
    config: { access: 'operate' },
    schema: {
      summary: "The planner's forecast, decisions and capacity hint per pool, with the model x machine placement matrix",
      description:
        'Per pool (?pool= for one): what the planner recorded in its last round (when it ran, the forecast per model, the capacity hint, the wait target, ' +
        'its last 50 prefetch / evict / load decisions with their reasons) and the placement matrix read from the machine records now ' +
        '(loaded, on_disk, downloading, planned, evicting, loading, absent). A pool the planner has not run for has an empty forecast and no run_at.',
      tags: ['fleet'],
      querystring: PoolQuery,
      response: answers({ 200: PlannerReport }),
    },
  }, async (request) => {
    const pools = request.query.pool ? [request.query.pool] : await broker.pools();
    const reports = await Promise.all(
      pools.map(async (pool) => {
        const [state, entries] = await Promise.all([broker.plannerState(pool), broker.machines(pool)]);
        const planner: PlannerState = state ?? { pool, forecast: [], decisions: [], problems: [] };
        const machines = entries.map((entry) => decodeMachine(pool, entry)).filter((m) => !isInvalidRecord(m));
        return { ...planner, matrix: placementMatrix(planner, machines as Parameters<typeof placementMatrix>[1]) };
      }),
    );
    return { now: await broker.serverTime(), pools: reports };
  });
}
