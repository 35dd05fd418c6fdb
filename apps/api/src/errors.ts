import { EmpError, type ErrorCode, ValidationError, type ValidationIssue } from '@emp/core';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';

/** Every error the API answers with: a stable code, a sentence, and for bad input each field at fault. */
export interface ApiErrorBody {
  error: { code: string; message: string; issues?: ValidationIssue[] };
}

/** Errors of the API itself (auth, limits, routing), beside the broker's. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const STATUS_OF_CODE: Record<ErrorCode, number> = {
  VALIDATION: 400,
  NOT_FOUND: 404,
  LEASE_LOST: 409,
  IDEMPOTENCY_CONFLICT: 422,
  DUPLICATE_ID: 409,
  UNKNOWN_WORKER: 404,
  UNKNOWN_SERVICE: 400,
  NOT_RETRYABLE: 409,
  PAYLOAD_TOO_LARGE: 413,
  BAD_STATE: 409,
  BAD_KEY: 500,
  CORRUPT: 500,
};

export function errorBody(code: string, message: string, issues?: ValidationIssue[]): ApiErrorBody {
  return { error: { code, message, ...(issues ? { issues } : {}) } };
}

/** What an error becomes on the wire: 4xx for anything the caller can fix, 5xx only for our own faults. */
export function toHttpError(error: unknown): { status: number; body: ApiErrorBody } {
  if (error instanceof ApiError) return { status: error.status, body: errorBody(error.code, error.message) };
  if (error instanceof ValidationError) {
    return { status: 400, body: errorBody('VALIDATION', error.message, error.issues) };
  }
  if (error instanceof EmpError) return { status: STATUS_OF_CODE[error.code], body: errorBody(error.code, error.message) };
  if (hasZodFastifySchemaValidationErrors(error)) {
    const where = (error as FastifyError).validationContext ?? 'request';
    const issues = error.validation.map((issue) => ({
      path: [where, ...issue.instancePath.split('/').filter(Boolean)].join('.'),
      message: issue.message ?? 'invalid',
    }));
    const message = `invalid ${where}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`;
    return { status: 400, body: errorBody('VALIDATION', message, issues) };
  }
  const fastifyError = error as Partial<FastifyError>;
  if (typeof fastifyError.statusCode === 'number' && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    // Fastify's own refusals: body too large, malformed JSON, wrong content type, ...
    const code = fastifyError.code?.replace(/^FST_ERR_/, '') ?? 'BAD_REQUEST';
    return { status: fastifyError.statusCode, body: errorBody(code, fastifyError.message ?? 'bad request') };
  }
  return { status: 500, body: errorBody('INTERNAL', 'internal error; the server log has the details') };
}

export function handleError(error: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const { status, body } = toHttpError(error);
  if (status >= 500) request.log.error({ err: error }, 'request failed');
  void reply.status(status).send(body);
}
