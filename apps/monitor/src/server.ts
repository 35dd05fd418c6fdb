import fastifyStatic from '@fastify/static';
import Fastify, { type FastifyBaseLogger, LogController } from 'fastify';
import type { Logger } from 'pino';
import { DIST_DIR } from './bundle';

export const DEFAULT_MONITOR_PORT = 3333;

export interface MonitorServerOptions {
  host?: string;
  /** preferred port; a free one is taken when it is in use */
  port?: number;
  logger: Logger;
  /** the built page (default apps/monitor/dist) */
  dir?: string;
}

export interface MonitorServer {
  url: string;
  port: number;
  /** tells the page where the API is (served as /config.json); set once the API listens */
  setApi(api: { url: string; auth: boolean }): void;
  close(): Promise<void>;
}

/**
 * Serves the monitor page (static files) and `/config.json`, which tells the
 * page where the API is. The page then talks to the API itself (the API
 * allows this server's origin through CORS), so the live feed takes no extra hop.
 */
export async function startMonitorServer(options: MonitorServerOptions): Promise<MonitorServer> {
  const host = options.host ?? '127.0.0.1';
  let api: { url: string; auth: boolean } | undefined;
  const app = Fastify({ loggerInstance: options.logger.child({ component: 'monitor' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }), forceCloseConnections: true });
  await app.register(fastifyStatic, {
    root: options.dir ?? DIST_DIR,
    // hashed asset names never change; index.html must be read again after a rebuild
    setHeaders: (res, path) => res.setHeader('cache-control', /[\\/]assets[\\/]/.test(path) ? 'public, max-age=31536000, immutable' : 'no-cache'),
    cacheControl: false,
  });
  app.get('/config.json', async (_request, reply) => {
    if (!api) return reply.code(503).send({ error: { code: 'UNAVAILABLE', message: 'the API is not listening yet' } });
    return reply.header('cache-control', 'no-store').send({ api_url: api.url, auth: api.auth });
  });
  app.get('/health', async () => ({ status: 'ok' }));

  try {
    await app.listen({ host, port: options.port ?? DEFAULT_MONITOR_PORT });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
    options.logger.warn({ wanted: options.port ?? DEFAULT_MONITOR_PORT }, 'monitor port taken; using a free one');
    await app.listen({ host, port: 0 });
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : (options.port ?? DEFAULT_MONITOR_PORT);
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    setApi: (value) => (api = value),
    close: () => (closing ??= app.close()),
  };
}

/** The origins a browser shows for a server on this host and port (loopback has two names). */
export function originsOf(url: string): string[] {
  const parsed = new URL(url);
  const origins = [parsed.origin];
  if (parsed.hostname === '127.0.0.1' || parsed.hostname === '[::1]') origins.push(`${parsed.protocol}//localhost:${parsed.port}`);
  return origins;
}
