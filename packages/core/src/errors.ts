/**
 * Errors that cross the wire (Redis -> broker -> API -> client) carry a stable
 * `code`, so a caller can tell a lost lease from bad input by type or by code.
 */
export type ErrorCode =
  | 'VALIDATION'
  | 'NOT_FOUND'
  | 'LEASE_LOST'
  | 'IDEMPOTENCY_CONFLICT'
  | 'DUPLICATE_ID'
  | 'UNKNOWN_WORKER'
  | 'UNKNOWN_SERVICE'
  | 'NOT_RETRYABLE'
  | 'PAYLOAD_TOO_LARGE'
  | 'TOO_MANY_CLASSES'
  | 'BAD_STATE'
  | 'BAD_KEY'
  | 'CORRUPT';

export interface ValidationIssue {
  path: string;
  message: string;
}

export class EmpError extends Error {
  override readonly name: string = 'EmpError';
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export class ValidationError extends EmpError {
  override readonly name = 'ValidationError';
  constructor(
    readonly what: string,
    readonly issues: ValidationIssue[],
  ) {
    super('VALIDATION', `invalid ${what}: ${issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ')}`);
  }
}

export class NotFoundError extends EmpError {
  override readonly name = 'NotFoundError';
  constructor(message: string) {
    super('NOT_FOUND', message);
  }
}

/** The attempt no longer holds the job: its lease was reaped, or the job was canceled, expired or finished. */
export class LeaseLostError extends EmpError {
  override readonly name = 'LeaseLostError';
  constructor(message: string) {
    super('LEASE_LOST', message);
  }
}

export class IdempotencyConflictError extends EmpError {
  override readonly name = 'IdempotencyConflictError';
  constructor(message: string) {
    super('IDEMPOTENCY_CONFLICT', message);
  }
}

export class UnknownWorkerError extends EmpError {
  override readonly name = 'UnknownWorkerError';
  constructor(message: string) {
    super('UNKNOWN_WORKER', message);
  }
}

export class UnknownServiceError extends EmpError {
  override readonly name = 'UnknownServiceError';
  constructor(message: string) {
    super('UNKNOWN_SERVICE', message);
  }
}

export class NotRetryableError extends EmpError {
  override readonly name = 'NotRetryableError';
  constructor(message: string) {
    super('NOT_RETRYABLE', message);
  }
}

export class PayloadTooLargeError extends EmpError {
  override readonly name = 'PayloadTooLargeError';
  constructor(message: string) {
    super('PAYLOAD_TOO_LARGE', message);
  }
}

/** The job would open a requirement class past the pool's limit (BrokerConfig.maxQueuedClasses). */
export class TooManyClassesError extends EmpError {
  override readonly name = 'TooManyClassesError';
  constructor(message: string) {
    super('TOO_MANY_CLASSES', message);
  }
}

const byCode: Partial<Record<ErrorCode, new (message: string) => EmpError>> = {
  NOT_FOUND: NotFoundError,
  LEASE_LOST: LeaseLostError,
  IDEMPOTENCY_CONFLICT: IdempotencyConflictError,
  UNKNOWN_WORKER: UnknownWorkerError,
  NOT_RETRYABLE: NotRetryableError,
  TOO_MANY_CLASSES: TooManyClassesError,
};

const knownCodes = new Set<string>([
  'NOT_FOUND', 'LEASE_LOST', 'IDEMPOTENCY_CONFLICT', 'DUPLICATE_ID', 'UNKNOWN_WORKER',
  'NOT_RETRYABLE', 'TOO_MANY_CLASSES', 'BAD_STATE', 'BAD_KEY', 'CORRUPT',
]);

/** Turns an error reply of the function library ("CODE message") into its typed error. */
export function fromRedisError(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const match = /^([A-Z_]+) (.*)$/s.exec(error.message);
  if (!match || !knownCodes.has(match[1]!)) return error;
  const code = match[1] as ErrorCode;
  const message = match[2]!.replace(/ script: .*$/s, '');
  const Class = byCode[code];
  return Class ? new Class(message) : new EmpError(code, message);
}
