import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

/** Who the presented key is, so that a page can show or hide what its role may do. */
export async function identityRoutes(app: FastifyInstance, options: { authEnabled: boolean }): Promise<void> {
  app.get('/v1/whoami', {
    config: { access: 'identify' },
    schema: {
      summary: "The presented key's role and tenant (auth off: an anonymous operator)",
      tags: ['auth'],
      querystring: z.object({ api_key: z.string().optional() }).strict(),
    },
  }, async (request) => {
    const { keyId, role, tenant } = request.principal;
    return { key_id: keyId, role, tenant, auth: options.authEnabled };
  });
}
