import { MachineCommandResponse, PauseResponse } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { MachineCommandBody, MachineParams, PauseBody, ServiceParams, answers } from '../schemas';
import { poolOfMachine } from './machine-logs';

/** Operator actions: pause or resume a service's queue; drain, restart or shut down a machine, or restart one service on it. */
export async function operatorRoutes(app: FastifyInstance): Promise<void> {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { broker } = app;

  for (const paused of [true, false]) {
    api.post(`/v1/services/:service/${paused ? 'pause' : 'resume'}`, {
      config: { access: 'operate' },
      schema: {
        summary: paused ? "Pause a service's queue: its jobs stay queued, no worker claims them" : "Resume a service's queue",
        description: 'In one pool, or in every pool known now (and the default pool) when none is named.',
        tags: ['operator'],
        params: ServiceParams,
        body: PauseBody,
        response: answers({ 200: PauseResponse }),
      },
    }, async (request) => {
      const body = request.body;
      const pools = body.pool ? [body.pool] : [...new Set([...(await broker.pools()), broker.config.defaultPool])];
      const changes = await Promise.all(
        pools.map(async (pool) => ({
          pool,
          changed: await broker.setServicePaused(pool, request.params.service, paused, {
            by: request.principal.keyId,
            reason: body.reason,
          }),
        })),
      );
      return { service: request.params.service, paused, pools: changes };
    });
  }

  api.post('/v1/machines/:id/:action', {
    config: { access: 'operate' },
    schema: {
      summary: 'Drain, restart or shut down a machine, or restart one service on it',
      description: 'Recorded on the machine, appended to its command stream for the machine agent to execute, and announced as a machine.command event. Answers 202 with the command id; the agent reports the outcome on the machine (last_command_outcome, last_command_message) and as a machine.command.done event. drain: workers stop claiming and hand their jobs back; restart: every process, or with `service` only that service\'s processes (or the one process so named); shutdown: drain, then the agent stops and the machine goes offline.',
      tags: ['operator'],
      params: MachineParams,
      body: MachineCommandBody,
      response: answers({ 202: MachineCommandResponse }),
    },
  }, async (request, reply) => {
    const body = request.body;
    const { id, action } = request.params;
    const pool = await poolOfMachine(broker, id, body.pool);
    const command = await broker.machineCommand(pool, id, action, {
      by: request.principal.keyId,
      service: body.service,
      reason: body.reason,
    });
    return reply.code(202).send({ command_id: command, machine: id, pool, action, service: body.service });
  });
}
