import { MachineEventsPage, type StreamEventType, eventView } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { MachineEventsQuery, MachineLogParams, answers } from '../schemas';
import { poolOfMachine } from './machine-logs';

/** The events a machine page shows as its history: process transitions and operator commands with their outcomes. */
export const MACHINE_HISTORY_EVENTS = ['machine.process', 'machine.command', 'machine.command.done'] as const satisfies readonly StreamEventType[];
/** Pool stream entries one request looks at, at most: the stream is shared by every job and machine of the pool. */
export const MACHINE_EVENTS_SCAN_LIMIT = 10_000;

/** GET /v1/machines/:id/events: a machine's restart and command history, for a page opened after it happened. */
export async function machineEventRoutes(app: FastifyInstance): Promise<void> {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { broker } = app;

  api.get('/v1/machines/:id/events', {
    config: { access: 'fleet' },
    schema: {
      summary: "A machine's recent process transitions and operator commands",
      description: `The newest \`limit\` ${MACHINE_HISTORY_EVENTS.join(', ')} events of the machine, oldest first, from its pool's event stream read backwards; at most ${MACHINE_EVENTS_SCAN_LIMIT} stream entries are looked at, and \`complete\` is false when older ones were left unread.`,
      tags: ['fleet'],
      params: MachineLogParams,
      querystring: MachineEventsQuery,
      response: answers({ 200: MachineEventsPage }),
    },
  }, async (request) => {
    const { id } = request.params;
    const pool = await poolOfMachine(broker, id, request.query.pool);
    const { events, scanned, complete } = await broker.machineEvents(pool, id, {
      types: MACHINE_HISTORY_EVENTS,
      limit: request.query.limit,
      maxScanned: MACHINE_EVENTS_SCAN_LIMIT,
    });
    return { machine: id, pool, events: events.map(eventView), scanned, complete };
  });
}
