/** The one error-mapping switch of the HTTP API, and its promise never to show a stack trace. */
import { expect } from 'chai';
import { CairnError, InvalidArgumentError, UnavailableError } from '../../../../src/core/index.js';
import { AlreadyExistsError, NotFoundError, PreconditionError, VolumeLockedError } from '../../../../src/meta/index.js';
import { HttpError, errorResponse, statusForCode } from '../../../../src/api/index.js';

describe('statusForCode() and errorResponse()', () => {
  const logged: string[] = [];
  const log = (line: string): number => logged.push(line);

  it('maps each CairnError class to its status, keeping code, message and retryable', () => {
    const cases: [unknown, number, string, boolean][] = [
      [new NotFoundError('No volume named "x"'), 404, 'ENOTFOUND', false],
      [new AlreadyExistsError('Volume "x" already exists'), 409, 'EEXIST', false],
      [new InvalidArgumentError('Invalid size'), 400, 'EINVAL', false],
      [new PreconditionError('has clones'), 409, 'EPRECONDITION', false],
      [new VolumeLockedError('attached', 'h/1', 3), 409, 'ELOCKED', true],
      [new UnavailableError('etcd did not answer'), 503, 'EUNAVAILABLE', true],
      [new CairnError('EKEY', 'wrong key'), 400, 'EKEY', false],
      [new HttpError(403, 'EFORBIDDEN', 'viewer'), 403, 'EFORBIDDEN', false],
    ];
    for (const [err, status, code, retryable] of cases) {
      const r = errorResponse(err, log);
      expect(r.status, code).to.equal(status);
      expect(r.body.error).to.deep.equal({ code, message: (err as Error).message, retryable });
    }
    expect(statusForCode('EFENCED')).to.equal(409);
    expect(statusForCode('EAUTH')).to.equal(401);
    expect(statusForCode('ESOMETHINGNEW')).to.equal(500);
  });

  it('answers a bug with a fixed message and logs the stack instead', () => {
    logged.length = 0;
    const r = errorResponse(new TypeError("Cannot read properties of undefined (reading 'x')"), log);
    expect(r.status).to.equal(500);
    expect(r.body.error.code).to.equal('EINTERNAL');
    expect(r.body.error.message).to.not.match(/reading|at /);
    expect(logged.join('\n')).to.match(/TypeError/);
  });

  it('sends the first line of a multi-line message only', () => {
    const r = errorResponse(new InvalidArgumentError('first\nsecond'), log);
    expect(r.body.error.message).to.equal('first');
  });
});
