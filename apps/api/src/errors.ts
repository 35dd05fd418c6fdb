import { type ApiErrorBody, EmpError, type ErrorCode, type ValidationIssue, ValidationError } from '@emp/core';
import type { FastifyError, FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';

/** Error codes of the API itself, beside the broker's. */
export type ApiErrorCode =
  | ErrorCode
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'RATE_LIMITED'
  | 'BODY_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'BAD_REQUEST'
  | 'NO_ROUTE'
  | 'UNAVAILABLE'
  | 'INTERNAL';

/** The body of every error answer (@emp/core's ApiErrorBody), with the codes this API uses. */
export type ErrorBody = { error: ApiErrorBody['error'] & { code: ApiErrorCode } };

/** How each broker error code reads over HTTP. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  VALIDATION: 400,
  UNKNOWN_SERVICE: 400,
  NOT_FOUND: 404,
  UNKNOWN_WORKER: 404,
  LEASE_LOST: 409,
  NOT_RETRYABLE: 409,
  BAD_STATE: 409,
  DUPLICATE_ID: 409,
  PAYLOAD_TOO_LARGE: 413,
  TOO_MANY_CLASSES: 429,
  IDEMPOTENCY_CONFLICT: 422,
  BAD_KEY: 500,
  CORRUPT: 500,
  NOT_REPLICATED: 503,
};

export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly statusCode: number,
    readonly code: ApiErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const FASTIFY_CODES: Record<string, ApiErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
};

/** Where a request part's issues are reported: body paths as they are, other parts prefixed. */
const PART_PREFIX: Record<string, string> = { body: '', querystring: 'query', params: 'params', headers: 'headers' };

function issuesOf(error: FastifyError): ValidationIssue[] {
  const prefix = PART_PREFIX[error.validationContext ?? 'body'] ?? '';
  return (error.validation ?? []).map((v) => {
    const path = v.instancePath.split('/').filter(Boolean).join('.');
    return { path: [prefix, path].filter(Boolean).join('.'), message: v.message ?? 'invalid' };
  });
}

export function errorBody(code: ApiErrorCode, message: string, issues?: ValidationIssue[]): ErrorBody {
  return { error: { code, message, issues } };
}

/**
 * Every failure becomes `{error: {code, message, issues?}}` with a status that
 * says whose fault it was: bad input is a 4xx with a stable code, and only our
 * own faults are 5xx (logged with their stack).
 */
export const errorHandling = fp(async (app: FastifyInstance) => {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (hasZodFastifySchemaValidationErrors(error)) {
      const issues = issuesOf(error);
      const what = error.validationContext === 'querystring' ? 'query' : (error.validationContext ?? 'request');
      return reply.code(400).send(errorBody('VALIDATION', new ValidationError(what, issues).message, issues));
    }
    if (error instanceof ValidationError) return reply.code(400).send(errorBody('VALIDATION', error.message, error.issues));
    if (error instanceof EmpError) {
      const status = HTTP_STATUS[error.code];
      if (status >= 500) request.log.error({ err: error }, 'broker error');
      return reply.code(status).send(errorBody(error.code, error.message));
    }
    if (error instanceof ApiError) return reply.code(error.statusCode).send(errorBody(error.code, error.message));
    const status = error.statusCode ?? 500;
    if (status === 429) return reply.code(429).send(errorBody('RATE_LIMITED', error.message));
    if (status >= 400 && status < 500) {
      return reply.code(status).send(errorBody(FASTIFY_CODES[error.code] ?? 'BAD_REQUEST', error.message));
    }
    request.log.error({ err: error }, 'request failed');
    return reply.code(500).send(errorBody('INTERNAL', 'internal error; it has been logged'));
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send(errorBody('NO_ROUTE', `no route ${request.method} ${request.url.split('?')[0]}`));
  });
});
