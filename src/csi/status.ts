/**
 * gRPC status codes (the numbers are gRPC's) and the one mapping from Cairn's errors to them: a
 * CSI call answers with the specification's code, and its message says what failed and on what.
 */
import { CairnError, errorMessage } from '../core/index.js';

export const status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

/** The status name for a code, for logs and messages. */
export function statusName(code: number): string {
  return Object.entries(status).find(([, c]) => c === code)?.[0] ?? `status ${code}`;
}

/**
 * The gRPC status for an error a Cairn operation threw. Errors already carrying a status
 * (CsiError) keep it; the rest map by their Cairn code. Anything unknown is INTERNAL.
 */
export function statusOf(err: unknown): { code: number; message: string } {
  const message = errorMessage(err);
  if (err !== null && typeof err === 'object' && 'code' in err && typeof err.code === 'number')
    return { code: err.code, message };
  if (!(err instanceof CairnError)) return { code: status.INTERNAL, message };
  switch (err.code) {
    case 'EINVAL':
      return { code: status.INVALID_ARGUMENT, message };
    case 'ENOTFOUND':
      return { code: status.NOT_FOUND, message };
    case 'EEXIST':
      return { code: status.ALREADY_EXISTS, message };
    case 'EPRECONDITION':
    case 'ELOCKED':
    case 'EFENCED':
      return { code: status.FAILED_PRECONDITION, message };
    case 'EPLACEMENT':
    case 'ELIMIT':
      return { code: status.RESOURCE_EXHAUSTED, message };
    default:
      return { code: err.retryable ? status.UNAVAILABLE : status.INTERNAL, message };
  }
}
