import { mkdir, stat } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import { JobId, NotFoundError, SignAssetRequest, SignedAssetUrl } from '@emp/core';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Principal } from '../auth/roles';
import type { AssetUrlSigner } from '../auth/signed-urls';
import { answers } from '../schemas';

export const ASSETS_PREFIX = '/v1/assets/';

/** Outputs never change under their key; `private`: an asset is one tenant's, shared caches must not keep it. */
const CACHE_CONTROL = 'private, max-age=86400, immutable';

const AssetQuery = z
  .object({
    api_key: z.string().optional(),
    expires: z.string().optional(),
    signature: z.string().optional(),
  })
  .strict();

/**
 * Serves the folder the workers' local-directory asset store writes to, so a
 * job's result URLs (`<api>/v1/assets/<key>`) work without another server.
 * An asset's key starts with its job's id (`<job id>/<attempt>/<file>`, see
 * the worker's `assetKey`): it is served to the job's tenant and to keys that
 * see every tenant, as 404 to anyone else (as its job would be), and without
 * a key through a URL signed by POST /v1/assets/sign until that expires.
 */
export async function assetRoutes(app: FastifyInstance, options: { directory: string; signer: AssetUrlSigner }): Promise<void> {
  const root = resolve(options.directory);
  await mkdir(root, { recursive: true });
  // only for reply.sendFile: the route below decides who gets what
  await app.register(fastifyStatic, { root, serve: false, index: false, list: false, dotfiles: 'deny', cacheControl: false });
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { broker } = app;

  /** The asset's file, or NOT_FOUND when the caller may not see it or it is not there (the same answer, so as to reveal nothing). */
  async function visibleAsset(principal: Principal, key: string): Promise<string> {
    const missing = new NotFoundError(`asset ${key} does not exist`);
    const path = resolve(root, key);
    if (!path.startsWith(root + sep) || key.split('/').some((part) => part.startsWith('.'))) throw missing;
    if (principal.tenant !== undefined && !principal.signedUrl) {
      const jobId = key.split('/')[0] ?? '';
      const job = JobId.safeParse(jobId).success ? await broker.getJob(jobId) : null;
      if (!job || job.tenant !== principal.tenant) throw missing;
    }
    const file = await stat(path).catch(() => undefined);
    if (!file?.isFile()) throw missing;
    return path.slice(root.length + 1);
  }

  api.get(`${ASSETS_PREFIX}*`, {
    config: { access: 'readJobs', signedUrls: true },
    schema: {
      summary: 'An asset a worker stored (the local-directory store): to the job\'s tenant, or to anyone with a signed URL until it expires',
      tags: ['assets'],
      querystring: AssetQuery,
    },
  }, async (request, reply) => {
    const key = (request.params as { '*': string })['*'];
    const file = await visibleAsset(request.principal, key);
    reply.header('cache-control', CACHE_CONTROL);
    return reply.sendFile(file);
  });

  api.post(`${ASSETS_PREFIX}sign`, {
    config: { access: 'readJobs' },
    schema: {
      summary: 'A URL of one asset that anyone may fetch without a key until it expires (default 1 h, at most 7 days)',
      tags: ['assets'],
      body: SignAssetRequest,
      response: answers({ 200: SignedAssetUrl }),
    },
  }, async (request) => {
    const { key, base } = assetNamed(request, request.body);
    await visibleAsset(request.principal, key);
    const expiresAt = Date.now() + request.body.expires_in_s * 1_000;
    const path = key.split('/').map(encodeURIComponent).join('/');
    return { url: `${base}${ASSETS_PREFIX}${path}?${options.signer.query(key, expiresAt)}`, expires_at: expiresAt };
  });
}

/** The key a sign request names, and the URL base to sign it under: the given URL's (as a result gave it), else this server's. */
function assetNamed(request: FastifyRequest, body: { key?: string | undefined; url?: string | undefined }): { key: string; base: string } {
  if (body.key !== undefined) return { key: body.key, base: `${request.protocol}://${request.host}` };
  const url = new URL(body.url!);
  const at = url.pathname.indexOf(ASSETS_PREFIX);
  if (at < 0) throw new NotFoundError(`${body.url} is not an asset URL of this API (no ${ASSETS_PREFIX} in its path)`);
  let key: string;
  try {
    key = decodeURIComponent(url.pathname.slice(at + ASSETS_PREFIX.length));
  } catch {
    throw new NotFoundError(`${body.url} is not an asset URL of this API (its path is not valid percent-encoding)`);
  }
  return { key, base: `${url.origin}${url.pathname.slice(0, at)}` };
}
