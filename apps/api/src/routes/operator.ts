import { MODEL_ACTIONS, type MachineCommandInput, MachineCommandResponse, type ModelAction, PauseResponse, ValidationError } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { MachineCommandBody, MachineParams, PauseBody, ServiceParams, answers } from '../schemas';
import { poolOfMachine } from './machine-logs';

/** Operator actions: pause or resume a service's queue; drain, restart or shut down a machine, restart one service on it, or prefetch / evict a model in its cache. */
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
      summary: 'Drain, restart or shut down a machine, restart one service on it, prefetch / evict a model in its model cache, or load one into an idle GPU',
      description: 'Recorded on the machine, appended to its command stream for the machine agent to execute, and announced as a machine.command event. Answers 202 with the command id; the agent reports the outcome on the machine (last_command_outcome, last_command_message) and as a machine.command.done event. drain: workers stop claiming and hand their jobs back; restart: every process, or with `service` only that service\'s processes (or the one process so named); shutdown: drain, then the agent stops and the machine goes offline; prefetch (body `model`, required): download the model from the machine\'s catalog into its model cache, not pinned (least-recently-used eviction may take it later), failed when it cannot fit without evicting models in use; evict (body `model`, required): delete the model from the cache, failed while a job holds it or it is downloading; load (body `model`, required): load the model, on the machine\'s disk (or once a download of it under way lands), into the memory of an idle GPU through the worker\'s connector, so the next job of it starts without a load: failed while a job runs on that GPU, when the model is not on disk, and where the service cannot load a model without a job (ComfyUI). `model` is refused for the other actions, `service` for prefetch, evict and load.',
      tags: ['operator'],
      params: MachineParams,
      body: MachineCommandBody,
      response: answers({ 202: MachineCommandResponse }),
    },
  }, async (request, reply) => {
    const body = request.body;
    const { id, action } = request.params;
    let command: MachineCommandInput;
    if (isModelAction(action)) {
      if (body.model === undefined) throw new ValidationError('body', [{ path: 'model', message: `${action} names the model to ${action}` }]);
      if (body.service !== undefined) throw new ValidationError('body', [{ path: 'service', message: `${action} acts on the machine's models, not on a service` }]);
      command = { action, model: body.model, by: request.principal.keyId, reason: body.reason };
    } else {
      if (body.model !== undefined) throw new ValidationError('body', [{ path: 'model', message: `${action} takes no model (only prefetch, evict and load do)` }]);
      command = { action, service: body.service, by: request.principal.keyId, reason: body.reason };
    }
    const pool = await poolOfMachine(broker, id, body.pool);
    const commandId = await broker.machineCommand(pool, id, command);
    return reply
      .code(202)
      .send({ command_id: commandId, machine: id, pool, action, service: body.service, ...(body.model !== undefined && { model: body.model }) });
  });
}

function isModelAction(action: string): action is ModelAction {
  return (MODEL_ACTIONS as readonly string[]).includes(action);
}
