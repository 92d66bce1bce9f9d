/**
 * Assertions for programming errors. They stay on in production: a broken invariant in a storage
 * system must stop the process loudly rather than write wrong bytes quietly. Operating failures
 * and bad client input are not assertions; they are typed errors (see errors.ts).
 */

/** Thrown only by assert(): a bug in Cairn, never a client's or an operator's mistake. */
export class AssertionError extends Error {
  override readonly name = 'AssertionError';
}

/** Throws AssertionError when `condition` is false. */
export function assert(condition: unknown, message = 'assertion failed'): asserts condition {
  if (!condition) throw new AssertionError(message);
}

/** Asserts that `n` is a safe non-negative integer, as every byte offset and length must be. */
export function assertByteCount(n: number, what = 'byte count'): void {
  assert(Number.isSafeInteger(n) && n >= 0, `${what} must be a safe non-negative integer, got ${n}`);
}

/** Marks a switch case that the type checker proves unreachable. */
export function unreachable(value: never): never {
  throw new AssertionError(`unreachable: ${String(value)}`);
}
