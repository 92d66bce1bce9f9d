/**
 * The one error shape of the API, `{"error": {"code", "message", "retryable"}}`, and the one
 * switch that maps an error to its HTTP status. What it keeps true: a client never sees a stack
 * trace or an internal message of a bug (an assertion or a TypeError answers 500 "internal
 * error", the detail goes to the log only).
 */
import { CairnError, errorMessage } from '../../core/index.js';

/** A refusal made by the HTTP layer itself: authentication, routing, body checks. */
export class HttpError extends CairnError {
  override readonly name: string = 'HttpError';
  constructor(
    readonly status: number,
    code: string,
    message: string,
    options: { retryable?: boolean } = {},
  ) {
    super(code, message, { retryable: options.retryable ?? false });
  }
}

export interface ErrorBody {
  readonly error: { readonly code: string; readonly message: string; readonly retryable: boolean };
}

/** The HTTP status for a CairnError code; anything not listed is an operating failure (500). */
export function statusForCode(code: string): number {
  switch (code) {
    case 'ENOTFOUND':
    case 'ENOENT':
      return 404;
    case 'EEXIST':
      return 409;
    case 'EINVAL':
    case 'EUSAGE':
    case 'ERANGE':
    case 'EKEY':
    case 'EPLACEMENT':
      return 400;
    case 'EPRECONDITION':
    case 'EFENCED':
    case 'ELOCKED':
    case 'EMOVED':
      return 409;
    case 'EUNAVAILABLE':
    case 'ELIMIT':
    case 'ETIMEDOUT':
      return 503;
    case 'EAUTH':
      return 401;
    default:
      return 500;
  }
}

/**
 * The status and body for any thrown value. A bug (not a CairnError) answers 500 with a fixed
 * message; `log` receives the real one.
 */
export function errorResponse(err: unknown, log: (line: string) => void): { status: number; body: ErrorBody } {
  if (err instanceof HttpError)
    return { status: err.status, body: { error: { code: err.code, message: err.message, retryable: err.retryable } } };
  if (err instanceof CairnError) {
    const status = statusForCode(err.code);
    if (status >= 500) log(JSON.stringify({ msg: 'request failed', code: err.code, error: errorMessage(err) }));
    return { status, body: { error: { code: err.code, message: firstLine(err.message), retryable: err.retryable } } };
  }
  log(
    JSON.stringify({ msg: 'internal error', error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
  return {
    status: 500,
    body: { error: { code: 'EINTERNAL', message: 'internal error (see the server log)', retryable: false } },
  };
}

const firstLine = (text: string): string => text.split('\n')[0] ?? '';
