/**
 * Deadlines for etcd calls. The etcd3 client waits forever when etcd has no quorum or is gone
 * (measured: a put during leader loss hung until our own timeout), so every call Cairn makes goes
 * through withDeadline() and fails with UnavailableError naming the endpoints instead.
 */
import { AuthRejectedError, UnavailableError, errorMessage } from '../core/index.js';

export async function withDeadline<T>(
  work: Promise<T>,
  options: { timeoutMs: number; endpoints: readonly string[]; what: string },
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const where = `etcd at ${options.endpoints.join(',')}`;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new UnavailableError(`${where} did not answer within ${options.timeoutMs} ms (${options.what})`)),
      options.timeoutMs,
    );
  });
  try {
    return await Promise.race([work, timeout]);
  } catch (err) {
    if (err instanceof UnavailableError) throw err;
    // gRPC connection failures (refused, DNS) are operating failures too: name the endpoint.
    const message = errorMessage(err);
    // etcd auth: a wrong password, or a user (or certificate name) without the permission.
    if (/authentication failed|permission denied|user name (is empty|not found)|invalid auth token/i.test(message)) {
      throw new AuthRejectedError(
        `${where} refused the credentials (${options.what}): ${message}; check CAIRN_ETCD_USER and CAIRN_ETCD_PASSWORD_FILE (or --etcd-user, --etcd-password-file)`,
        { cause: err },
      );
    }
    if (/ECONNREFUSED|UNAVAILABLE|No connection established|14 UNAVAILABLE|connect/i.test(message)) {
      throw new UnavailableError(`${where} is unreachable (${options.what}): ${message}`, { cause: err });
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
