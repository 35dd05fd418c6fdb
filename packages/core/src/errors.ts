/**
 * Errors that cross the wire (Redis -> broker -> API -> client) carry a stable
 * `code`, so a caller can tell a lost lease from bad input by type or by code.
 */
/**
 * Every code, once. `raisedByLua`: the function library answers it as an error reply
 * "CODE message" (fromRedisError turns that reply back into the typed error).
 */
const ERROR_CODES = {
  VALIDATION: { raisedByLua: false },
  NOT_FOUND: { raisedByLua: true },
  LEASE_LOST: { raisedByLua: true },
  IDEMPOTENCY_CONFLICT: { raisedByLua: true },
  DUPLICATE_ID: { raisedByLua: true },
  UNKNOWN_WORKER: { raisedByLua: true },
  UNKNOWN_SERVICE: { raisedByLua: false },
  NOT_RETRYABLE: { raisedByLua: true },
  PAYLOAD_TOO_LARGE: { raisedByLua: false },
  TOO_MANY_CLASSES: { raisedByLua: true },
  BAD_STATE: { raisedByLua: true },
  BAD_KEY: { raisedByLua: true },
  CORRUPT: { raisedByLua: true },
  NOT_REPLICATED: { raisedByLua: false },
} as const satisfies Record<string, { raisedByLua: boolean }>;

export type ErrorCode = keyof typeof ERROR_CODES;

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

/** A typed error for one code: `instanceof` tells it apart, `name` names it in logs. */
function codedError<C extends ErrorCode>(code: C, name: string) {
  const Class = class extends EmpError {
    override readonly name = name;
    constructor(message: string) {
      super(code, message);
    }
  };
  typedErrors.set(code, Class);
  return Class;
}

/** The typed error of each code that has one (fromRedisError); filled by codedError. */
const typedErrors = new Map<ErrorCode, new (message: string) => EmpError>();

export const NotFoundError = codedError('NOT_FOUND', 'NotFoundError');
export type NotFoundError = InstanceType<typeof NotFoundError>;
/** The attempt no longer holds the job: its lease was reaped, or the job was canceled, expired or finished. */
export const LeaseLostError = codedError('LEASE_LOST', 'LeaseLostError');
export type LeaseLostError = InstanceType<typeof LeaseLostError>;
export const IdempotencyConflictError = codedError('IDEMPOTENCY_CONFLICT', 'IdempotencyConflictError');
export type IdempotencyConflictError = InstanceType<typeof IdempotencyConflictError>;
export const UnknownWorkerError = codedError('UNKNOWN_WORKER', 'UnknownWorkerError');
export type UnknownWorkerError = InstanceType<typeof UnknownWorkerError>;
export const UnknownServiceError = codedError('UNKNOWN_SERVICE', 'UnknownServiceError');
export type UnknownServiceError = InstanceType<typeof UnknownServiceError>;
export const NotRetryableError = codedError('NOT_RETRYABLE', 'NotRetryableError');
export type NotRetryableError = InstanceType<typeof NotRetryableError>;
export const PayloadTooLargeError = codedError('PAYLOAD_TOO_LARGE', 'PayloadTooLargeError');
export type PayloadTooLargeError = InstanceType<typeof PayloadTooLargeError>;
/** The job would open a requirement class past the pool's limit (BrokerConfig.maxQueuedClasses). */
export const TooManyClassesError = codedError('TOO_MANY_CLASSES', 'TooManyClassesError');
export type TooManyClassesError = InstanceType<typeof TooManyClassesError>;

/**
 * A durable submit (docs/scale-out.md) whose job no replica acknowledged in time: the job is
 * queued on the master, and survives a failover only if a replica got it anyway.
 */
export const NotReplicatedError = codedError('NOT_REPLICATED', 'NotReplicatedError');
export type NotReplicatedError = InstanceType<typeof NotReplicatedError>;

/** Turns an error reply of the function library ("CODE message") into its typed error. */
export function fromRedisError(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const match = /^([A-Z_]+) (.*)$/s.exec(error.message);
  if (!match || !raisedByLua(match[1]!)) return error;
  const code = match[1] as ErrorCode;
  const message = match[2]!.replace(/ script: .*$/s, '');
  const Class = typedErrors.get(code);
  return Class ? new Class(message) : new EmpError(code, message);
}

function raisedByLua(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CODES, code) && ERROR_CODES[code as ErrorCode].raisedByLua;
}
