import type { ValidationIssue } from '@emp/core';

/** An error answer of the API: its HTTP status, stable code, and for bad input each field's path and reason. */
export class EmpApiError extends Error {
  override readonly name = 'EmpApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly issues: ValidationIssue[] = [],
  ) {
    super(message);
  }
}
