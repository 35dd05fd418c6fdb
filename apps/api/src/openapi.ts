import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';

/** Every shape with an id gets an input and an output component; the document keeps those something refers to. */
function withoutUnusedComponents<T extends object>(document: T): T {
  const { components } = document as { components?: { schemas?: Record<string, unknown> } };
  let schemas = components?.schemas;
  if (!schemas) return document;
  // until nothing is dropped: an unused component may be all that refers to another
  for (let dropped = true; dropped; ) {
    const kept: Record<string, unknown> = schemas;
    const refersTo = (name: string) => {
      const { [name]: _self, ...others } = kept;
      return JSON.stringify({ ...document, components: { ...components, schemas: others } }).includes(`"#/components/schemas/${name}"`);
    };
    schemas = Object.fromEntries(Object.entries(kept).filter(([name]) => refersTo(name)));
    dropped = Object.keys(schemas).length < Object.keys(kept).length;
  }
  return { ...document, components: { ...components, schemas } };
}

/**
 * The OpenAPI document (/docs/json), generated from the routes' zod schemas, and
 * Swagger UI at /docs. Shapes given an id in @emp/core (`.meta({ id })`: JobView,
 * Event, ApiError, ...) are components that the routes refer to.
 */
export const openApi = fp(async (app: FastifyInstance) => {
  await app.register(swagger, {
    openapi: {
      info: {
        title: 'EMP Job Queue API',
        version: '0.1.0',
        description: 'Submit AI jobs, follow them live, and operate the fleet. See docs/api.md.',
      },
      components: {
        securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'an API key from `emp keys create`' } },
      },
      security: [{ apiKey: [] }],
    },
    transform: jsonSchemaTransform,
    transformObject: (document) => withoutUnusedComponents(jsonSchemaTransformObject(document)),
  });
  // the document and the UI are public: every route Swagger UI registers says so
  await app.register(async (docs) => {
    docs.addHook('onRoute', (route) => {
      route.config = { ...route.config, access: 'public' };
    });
    await docs.register(swaggerUi, { routePrefix: '/docs' });
  });
});
