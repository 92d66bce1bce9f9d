/**
 * How a Cairn process proves itself to etcd and checks etcd in turn: client TLS (the CA etcd's
 * certificate chains to, and this process's certificate and key for `--client-cert-auth`) and
 * etcd's username/password authentication. Every process that talks to etcd (cairnctl, cairnd,
 * the frontend, the repairer, the CSI driver) takes the same variables, read here once:
 *
 * | variable                 | flag (cairnctl, cairnd)  | what                                  |
 * |--------------------------|--------------------------|---------------------------------------|
 * | CAIRN_ETCD_CA            | --etcd-ca FILE           | CA certificate(s), PEM                |
 * | CAIRN_ETCD_CERT          | --etcd-cert FILE         | client certificate, PEM               |
 * | CAIRN_ETCD_KEY           | --etcd-key FILE          | its private key, PEM                  |
 * | CAIRN_ETCD_USER          | --etcd-user NAME         | etcd user                             |
 * | CAIRN_ETCD_PASSWORD_FILE | --etcd-password-file F   | file holding its password (one line)  |
 * | CAIRN_ETCD_PASSWORD      |                          | the password itself (prefer the file) |
 * | CAIRN_ETCD_CREDENTIALS_DIR |                        | a directory holding any of `ca.crt`, `tls.crt`, `tls.key`, `username`, `password` (a mounted Secret; cert-manager's names) |
 *
 * A flag wins over its variable, a variable over a file of the credentials directory; a file the
 * directory lacks (or leaves empty) is simply not used, so an optional Secret may be absent. Bad combinations (a certificate without its key, a user without
 * a password) and unreadable files are InvalidArgumentErrors naming the flag or variable.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { isIP } from 'node:net';
import { connect as tlsConnect, rootCertificates } from 'node:tls';
import { Range, type Etcd3, type IOptions } from 'etcd3';
import { InvalidArgumentError, errorMessage, tlsMinVersion } from '../core/index.js';

/** What EtcdMeta and cairnd's own client pass to etcd3. */
export interface EtcdCredentials {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly username?: string;
  readonly password?: string;
}

/** The command-line side: file paths and a user name (absent: the variable decides). */
export interface EtcdCredentialFlags {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly user?: string;
  readonly passwordFile?: string;
}

/** The variables, by what they hold, for documents and for passing on (dev env files, manifests). */
export const etcdCredentialEnv = {
  ca: 'CAIRN_ETCD_CA',
  cert: 'CAIRN_ETCD_CERT',
  key: 'CAIRN_ETCD_KEY',
  user: 'CAIRN_ETCD_USER',
  passwordFile: 'CAIRN_ETCD_PASSWORD_FILE',
  password: 'CAIRN_ETCD_PASSWORD',
  dir: 'CAIRN_ETCD_CREDENTIALS_DIR',
} as const;

/** The file names CAIRN_ETCD_CREDENTIALS_DIR may hold, by what they give. */
export const etcdCredentialDirFiles = {
  ca: 'ca.crt',
  cert: 'tls.crt',
  key: 'tls.key',
  user: 'username',
  passwordFile: 'password',
} as const;

/** The command-line flags (cairnctl's cluster commands, cairnd), each with its field and variable. */
export const etcdCredentialFlags = [
  { flag: 'etcd-ca', field: 'ca', variable: etcdCredentialEnv.ca, describe: 'PEM CA of the etcd servers' },
  { flag: 'etcd-cert', field: 'cert', variable: etcdCredentialEnv.cert, describe: 'PEM client certificate for etcd' },
  { flag: 'etcd-key', field: 'key', variable: etcdCredentialEnv.key, describe: 'PEM key of --etcd-cert' },
  { flag: 'etcd-user', field: 'user', variable: etcdCredentialEnv.user, describe: 'etcd user name' },
  {
    flag: 'etcd-password-file',
    field: 'passwordFile',
    variable: etcdCredentialEnv.passwordFile,
    describe: 'file holding the etcd password (or $CAIRN_ETCD_PASSWORD)',
  },
] as const satisfies readonly {
  flag: string;
  field: keyof EtcdCredentialFlags;
  variable: string;
  describe: string;
}[];

/** The flags as yargs options: `parser.options(etcdCredentialOptions())`. */
export function etcdCredentialOptions(): Record<string, { type: 'string'; describe: string }> {
  return Object.fromEntries(
    etcdCredentialFlags.map((f) => [
      f.flag,
      { type: 'string' as const, describe: `${f.describe} (env ${f.variable})` },
    ]),
  );
}

/** The flags parsed yargs gave, as EtcdCredentialFlags (absent or empty ones left out). */
export function etcdCredentialFlagsOf(args: Record<string, unknown>): EtcdCredentialFlags {
  const out: Partial<Record<keyof EtcdCredentialFlags, string>> = {};
  for (const f of etcdCredentialFlags) {
    const value = args[f.flag];
    if (typeof value === 'string' && value !== '') out[f.field] = value;
  }
  return out;
}

/** Reads a file named by `source` (`--etcd-ca /x` or `CAIRN_ETCD_CA /x`), or says which could not be read. */
export function readCredentialFile(path: string, source: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new InvalidArgumentError(`Cannot read ${source}: ${errorMessage(err)}`);
  }
}

/**
 * The credentials `flags` and `env` give (flags first). Throws InvalidArgumentError for an
 * unreadable file or an incomplete pair.
 * @example
 * const creds = etcdCredentialsFrom({}, process.env); // CAIRN_ETCD_CA=... CAIRN_ETCD_USER=cairn ...
 * const meta = new EtcdMeta(['https://10.0.0.5:2379'], { credentials: creds });
 */
export function etcdCredentialsFrom(flags: EtcdCredentialFlags, env: NodeJS.ProcessEnv): EtcdCredentials {
  const dir = env[etcdCredentialEnv.dir];
  const inDir = (name: string): [string, string] | undefined => {
    if (dir === undefined || dir === '') return undefined;
    const path = join(dir, name);
    return nonEmptyFile(path) ? [path, `${etcdCredentialEnv.dir} ${path}`] : undefined;
  };
  const pick = (flag: string | undefined, flagName: string, variable: string): [string, string] | undefined => {
    if (flag !== undefined && flag !== '') return [flag, `--${flagName} ${flag}`];
    const value = env[variable];
    if (value !== undefined && value !== '') return [value, `${variable} ${value}`];
    const field = (Object.keys(etcdCredentialEnv) as (keyof typeof etcdCredentialEnv)[]).find(
      (k) => etcdCredentialEnv[k] === variable,
    );
    return field !== undefined && field in etcdCredentialDirFiles
      ? inDir(etcdCredentialDirFiles[field as keyof typeof etcdCredentialDirFiles])
      : undefined;
  };
  const file = (picked: [string, string] | undefined): Buffer | undefined =>
    picked === undefined ? undefined : readCredentialFile(picked[0], picked[1]);
  const ca = file(pick(flags.ca, 'etcd-ca', etcdCredentialEnv.ca));
  const certPicked = pick(flags.cert, 'etcd-cert', etcdCredentialEnv.cert);
  const keyPicked = pick(flags.key, 'etcd-key', etcdCredentialEnv.key);
  if ((certPicked === undefined) !== (keyPicked === undefined))
    throw new InvalidArgumentError(
      `An etcd client certificate needs its key and a key its certificate: set both --etcd-cert and --etcd-key (or ${etcdCredentialEnv.cert} and ${etcdCredentialEnv.key})`,
    );
  const cert = file(certPicked);
  const key = file(keyPicked);
  const userPicked = pick(flags.user, 'etcd-user', etcdCredentialEnv.user);
  // From the directory, the user name is a file's content; elsewhere the value itself.
  const username =
    userPicked !== undefined && userPicked[1].startsWith(etcdCredentialEnv.dir)
      ? readCredentialFile(userPicked[0], userPicked[1]).toString('utf8').trim()
      : userPicked?.[0];
  const passwordPicked = pick(flags.passwordFile, 'etcd-password-file', etcdCredentialEnv.passwordFile);
  let password: string | undefined;
  if (passwordPicked !== undefined) {
    // A trailing newline is how editors and `echo` save files, never part of the password.
    password = readCredentialFile(passwordPicked[0], passwordPicked[1])
      .toString('utf8')
      .replace(/[\r\n]+$/, '');
  } else {
    const inline = env[etcdCredentialEnv.password];
    password = inline === undefined || inline === '' ? undefined : inline;
  }
  if ((username === undefined) !== (password === undefined))
    throw new InvalidArgumentError(
      username === undefined
        ? `An etcd password is set but no user: set --etcd-user or ${etcdCredentialEnv.user}`
        : `etcd user "${username}" has no password: set --etcd-password-file or ${etcdCredentialEnv.passwordFile}`,
    );
  return {
    ...(ca === undefined ? {} : { ca }),
    ...(cert === undefined ? {} : { cert }),
    ...(key === undefined ? {} : { key }),
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password }),
  };
}

function nonEmptyFile(path: string): boolean {
  try {
    return statSync(path).size > 0;
  } catch {
    return false;
  }
}

/**
 * The etcd3 options for `endpoints` with `credentials`: TLS credentials when a CA or client
 * certificate is given (etcd3 then speaks TLS to every endpoint, so each must be https://), `auth`
 * with a user. Without TLS credentials, https:// endpoints are verified against the system's
 * trust store. Throws InvalidArgumentError for TLS credentials with an http:// endpoint.
 */
export function etcd3CredentialOptions(
  endpoints: readonly string[],
  credentials: EtcdCredentials,
): Pick<IOptions, 'credentials' | 'auth'> {
  const { ca, cert, key, username, password } = credentials;
  const plain = endpoints.find((e) => e.startsWith('http://'));
  if ((ca !== undefined || cert !== undefined) && plain !== undefined)
    throw new InvalidArgumentError(
      `etcd TLS credentials are set (${etcdCredentialEnv.ca} or --etcd-ca) but the etcd endpoint ${plain} is plaintext: write it https://`,
    );
  const tls =
    ca === undefined && cert === undefined
      ? {}
      : {
          credentials: {
            // grpc-js wants a root certificate whenever client credentials are given; without a
            // CA of our own, the system's roots stand in (tls.rootCertificates).
            rootCertificate: ca ?? Buffer.from(rootCertificates.join('\n')),
            ...(cert === undefined ? {} : { certChain: cert }),
            ...(key === undefined ? {} : { privateKey: key }),
          },
        };
  const auth = username === undefined || password === undefined ? {} : { auth: { username, password } };
  if (ca !== undefined || cert !== undefined || endpoints.some((e) => e.startsWith('https://'))) quietIpServername();
  return { ...tls, ...auth };
}

let quieted = false;

/**
 * grpc-js sets the TLS server name to the endpoint's host even when it is an IP address, and Node
 * warns about that (DEP0123) on stderr of every command. The certificate is still checked against
 * the address (its IP SANs), so the warning says nothing the user can act on: drop that one code,
 * once per process, and pass every other warning on.
 */
function quietIpServername(): void {
  if (quieted) return;
  quieted = true;
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]) => {
    const [, typeOrOptions, code] = args;
    const named =
      typeof typeOrOptions === 'object' && typeOrOptions !== null ? (typeOrOptions as { code?: unknown }).code : code;
    if (named === 'DEP0123') return;
    emit(...args);
  }) as typeof process.emitWarning;
}

/** How long the TLS diagnosis waits for a handshake, and for an alert after it (TLS 1.3 sends the client-certificate refusal late). */
const probeHandshakeMs = 1_500;
const probeAlertMs = 300;

/**
 * Why `endpoint` cannot be reached over TLS with `credentials`, in words, or undefined when a TLS
 * handshake with them works (or the endpoint does not answer at all). gRPC reports every TLS
 * failure as "No connection established. Last error: null"; this asks the endpoint directly so
 * the error can say "certificate not trusted (CA CAIRN_ETCD_CA ...)" or "speaks TLS: use https://".
 * Never throws.
 */
export async function diagnoseEtcdTls(endpoint: string, credentials: EtcdCredentials): Promise<string | undefined> {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return undefined;
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = Number(url.port);
  const withTls = credentials.ca !== undefined || credentials.cert !== undefined;
  const plain = url.protocol === 'http:';
  return new Promise((resolve) => {
    let done = false;
    const finish = (why: string | undefined): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(why);
    };
    const socket = tlsConnect({
      host,
      port,
      minVersion: tlsMinVersion,
      ALPNProtocols: ['h2'],
      // A plaintext endpoint is asked only whether it speaks TLS at all.
      rejectUnauthorized: !plain,
      ...(isIP(host) === 0 ? { servername: host } : {}),
      ...(credentials.ca === undefined ? {} : { ca: credentials.ca }),
      ...(credentials.cert === undefined ? {} : { cert: credentials.cert }),
      ...(credentials.key === undefined ? {} : { key: credentials.key }),
    });
    const timer = setTimeout(() => finish(undefined), probeHandshakeMs);
    socket.on('secureConnect', () => {
      if (plain) {
        finish(`it speaks TLS: write the endpoint https://${url.host} and set ${etcdCredentialEnv.ca}`);
        return;
      }
      // Read, so an alert the server sends after the handshake (TLS 1.3) arrives as an error.
      socket.resume();
      setTimeout(() => finish(undefined), probeAlertMs).unref();
    });
    socket.on('error', (err: Error & { code?: string }) => {
      if (plain) return finish(undefined);
      const code = err.code ?? '';
      if (/ALERT_(CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE|BAD_CERTIFICATE|UNKNOWN_CA)/.test(code))
        return finish(
          `it refused this client's certificate (${err.message}); set ${etcdCredentialEnv.cert} and ${etcdCredentialEnv.key} to a certificate its CA signed`,
        );
      if (code === 'ERR_SSL_WRONG_VERSION_NUMBER')
        return finish(`it does not speak TLS (${err.message}): write http://`);
      if (/CERT|SIGNATURE|ISSUER|ALTNAME/.test(code))
        return finish(
          `its TLS certificate is not trusted (${err.message}); trusted CA: ${withTls && credentials.ca !== undefined ? etcdCredentialEnv.ca : "the system's (set " + etcdCredentialEnv.ca + ')'}`,
        );
      finish(undefined);
    });
  });
}

/**
 * Turns on etcd authentication for a new cluster: a `root` user (the administrator, role root)
 * and `user` with a role of the same name that may read and write Cairn's keys (`cairn/`) and
 * nothing else, then `auth enable`. Run it once, before auth is on, with a client that may (a
 * fresh etcd allows everything). Not idempotent: a second run fails on the existing users.
 * @example
 * await enableEtcdAuth(meta.client, { rootPassword, user: 'cairn', password });
 */
export async function enableEtcdAuth(
  client: Etcd3,
  options: { readonly rootPassword: string; readonly user: string; readonly password: string },
): Promise<void> {
  const root = client.user('root');
  await root.create(options.rootPassword);
  await root.addRole('root');
  const role = client.role(options.user);
  await role.create();
  await role.grant({ permission: 'Readwrite', range: Range.prefix(cairnKeyPrefix) });
  const user = client.user(options.user);
  await user.create(options.password);
  await user.addRole(role);
  await client.auth.authEnable();
}

/** Every key Cairn writes starts with this (schema.ts's rootPrefix is below it). */
const cairnKeyPrefix = 'cairn/';
