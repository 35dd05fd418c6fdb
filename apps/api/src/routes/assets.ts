import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';

export const ASSETS_PREFIX = '/v1/assets/';

/**
 * Serves the folder the workers' local-directory asset store writes to, so a
 * job's result URLs (`<api>/v1/assets/<key>`) work without another server.
 * Behind the same authentication as every route; keys hold the job id, which
 * cannot be guessed.
 */
export async function assetRoutes(app: FastifyInstance, options: { directory: string }): Promise<void> {
  const root = resolve(options.directory);
  await mkdir(root, { recursive: true });
  await app.register(fastifyStatic, {
    root,
    prefix: ASSETS_PREFIX,
    decorateReply: false,
    index: false,
    list: false,
    dotfiles: 'deny',
    // outputs never change under their key
    immutable: true,
    maxAge: '1d',
  });
}
