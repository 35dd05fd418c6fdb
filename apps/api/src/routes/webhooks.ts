import { DEFAULT_TENANT, TenantId, WebhookOutbox, WebhookSecretResponse, type TenantWebhookSecrets } from '@emp/core';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { actingTenant } from '../auth/plugin';
import { answers } from '../schemas';

const DAY_SECONDS = 86_400;

const SecretQuery = z.object({ tenant: TenantId.optional(), api_key: z.string().optional() }).strict();
const RotateBody = z
  .object({
    tenant: TenantId.optional(),
    /** how long messages stay signed with the old secret too (default a day, at most a week) */
    grace_seconds: z.number().int().min(0).max(7 * DAY_SECONDS).default(DAY_SECONDS),
  })
  .strict()
  .default({ grace_seconds: DAY_SECONDS });

function answer(tenant: string, secrets: TenantWebhookSecrets): WebhookSecretResponse {
  // an unset or unreadable time (0, NaN) means there is no previous secret to mention
  return { tenant, secret: secrets.current, previous_valid_until: secrets.previousUntil || undefined };
}

/**
 * The signing secret of a tenant's job webhooks (docs/webhooks.md): a client
 * reads and rotates its own tenant's; an operator names the tenant.
 */
export async function webhookRoutes(app: FastifyInstance): Promise<void> {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const outbox = new WebhookOutbox(app.broker);

  api.get('/v1/webhooks/secret', {
    config: { access: 'readJobs' },
    schema: {
      summary: "The secret the tenant's job webhooks are signed with (made on first use)",
      description: 'Standard Webhooks: verify `webhook-signature` with it (e.g. the `standardwebhooks` package). A client key reads its own tenant\'s; others name `tenant` (default: the default tenant).',
      tags: ['webhooks'],
      querystring: SecretQuery,
      response: answers({ 200: WebhookSecretResponse }),
    },
  }, async (request) => {
    const tenant = actingTenant(request.principal, request.query.tenant) ?? DEFAULT_TENANT;
    return answer(tenant, await outbox.secrets(tenant));
  });

  api.post('/v1/webhooks/secret/rotate', {
    config: { access: 'changeJobs' },
    schema: {
      summary: "Replace the tenant's webhook secret; the old one stays valid for a grace period",
      description: 'During the grace period every message carries two signatures (new and old, space-separated), so receivers can switch without missing a message.',
      tags: ['webhooks'],
      body: RotateBody,
      response: answers({ 200: WebhookSecretResponse }),
    },
  }, async (request) => {
    const tenant = actingTenant(request.principal, request.body.tenant) ?? DEFAULT_TENANT;
    return answer(tenant, await outbox.rotateSecret(tenant, request.body.grace_seconds * 1000));
  });
}
