import { ApiErrorBody } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { errorBody } from '../errors';

/** Liveness (the process answers) and readiness (Redis answers too). */
export async function healthRoutes(app: FastifyInstance): Promise<void> {
  app.get('/health', {
    config: { access: 'public' },
    schema: { summary: 'Liveness', tags: ['health'], response: { 200: z.object({ status: z.literal('ok') }) } },
  }, async () => ({ status: 'ok' }));
  app.get('/ready', {
    config: { access: 'public' },
    schema: {
      summary: 'Readiness: Redis answers within 2 s',
      tags: ['health'],
      response: { 200: z.object({ status: z.literal('ready') }), 503: ApiErrorBody },
    },
  }, async (_request, reply) => {
    try {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        app.broker.ping(),
        new Promise((_resolve, reject) => (timer = setTimeout(() => reject(new Error('no answer within 2 s')), 2_000))),
      ]).finally(() => clearTimeout(timer));
      return { status: 'ready' };
    } catch (error) {
      return reply.code(503).send(errorBody('UNAVAILABLE', `Redis is not answering: ${(error as Error).message}`));
    }
  });
}
