/**
 * Throwaway TLS material for the dev cluster (`cairnctl dev up --tls`) and tests: a CA, a server
 * certificate for loopback, a client certificate, and a PSK file, made with Debian's openssl.
 *
 * What it keeps true: the directory is 0700 and every private key and the PSK file are 0600; the
 * layout is what libnbd's `tls-certificates=DIR` expects (ca-cert.pem, client-cert.pem,
 * client-key.pem) and what qemu's tls-creds-x509 reads (the same three names, plus server-*.pem
 * for its server endpoint); the PSK file is `identity:hex` lines, as gnutls psktool writes them.
 * What it leaves out: revocation, rotation and any real PKI; keys are EC P-256, valid one year.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { CairnError } from '../core/index.js';

/** The paths of one TLS directory made by makeTlsDir. */
export interface TlsFiles {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
  readonly pskFile: string;
}

/** Where openssl lives on the Debian machines this project runs on. */
const opensslPath = '/usr/bin/openssl';
/** Certificates last a year: longer than any dev cluster, short enough to be plainly throwaway. */
const validityDays = 365;
/** Bytes of a PSK key: 32, i.e. 64 hex characters, as psktool makes by default. */
const pskKeyBytes = 32;
/** The client identity's default name (certificate CN and PSK identity). */
export const tlsClientNameDefault = 'cairn-admin';

function openssl(args: readonly string[], what: string): void {
  const result = spawnSync(opensslPath, args, { encoding: 'utf8' });
  if (result.error !== undefined || result.status !== 0) {
    const detail = result.error?.message ?? result.stderr.trim();
    throw new CairnError('tls_material', `Cannot ${what} with ${opensslPath}: ${detail}`, { retryable: false });
  }
}

function newKey(path: string): void {
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path], `make key ${path}`);
  chmodSync(path, 0o600);
}

/**
 * Signs a certificate for `subject` with the CA in (caCert, caKey), for `usage` ('serverAuth' or
 * 'clientAuth'), with the given subjectAltName entries (already `DNS:`/`IP:` prefixed).
 */
function signCert(
  dir: string,
  name: string,
  ca: { cert: string; key: string },
  subject: string,
  usage: 'serverAuth' | 'clientAuth',
  altNames: readonly string[],
): { cert: string; key: string } {
  const key = join(dir, `${name}-key.pem`);
  const cert = join(dir, `${name}-cert.pem`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  newKey(key);
  openssl(['req', '-new', '-key', key, '-subj', subject, '-out', csr], `make request ${csr}`);
  const lines = [
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature, keyEncipherment',
    `extendedKeyUsage = ${usage}`,
  ];
  if (altNames.length > 0) lines.push(`subjectAltName = ${altNames.join(', ')}`);
  writeFileSync(ext, `${lines.join('\n')}\n`);
  openssl(
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-CAcreateserial',
      '-days',
      String(validityDays),
      '-sha256',
      '-extfile',
      ext,
      '-out',
      cert,
    ],
    `sign ${cert}`,
  );
  rmSync(csr);
  rmSync(ext);
  return { cert, key };
}

function altName(host: string): string {
  return isIP(host) === 0 ? `DNS:${host}` : `IP:${host}`;
}

/**
 * Creates dir (0700) with ca-cert.pem, ca-key.pem, server-cert.pem, server-key.pem (SAN:
 * localhost, 127.0.0.1, ::1 plus options.hosts), client-cert.pem, client-key.pem (CN
 * options.clientName ?? 'cairn-admin'), psk.keys (one line `clientName:64-hex-chars`, the format
 * libnbd/gnutls psktool use; also as keys.psk, the name qemu's tls-creds-psk reads). Keys 0600.
 * The layout is libnbd's tls-certificates= directory and qemu's tls-creds-x509/psk dir=.
 *
 * Throws CairnError('tls_material') when openssl fails.
 */
export function makeTlsDir(dir: string, options: { hosts?: readonly string[]; clientName?: string } = {}): TlsFiles {
  const clientName = options.clientName ?? tlsClientNameDefault;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const caKey = join(dir, 'ca-key.pem');
  const caCert = join(dir, 'ca-cert.pem');
  newKey(caKey);
  openssl(
    [
      'req',
      '-x509',
      '-new',
      '-key',
      caKey,
      '-subj',
      '/CN=Cairn dev CA',
      '-days',
      String(validityDays),
      '-sha256',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-out',
      caCert,
    ],
    `make CA ${caCert}`,
  );
  const ca = { cert: caCert, key: caKey };
  const hosts = [...new Set(['localhost', '127.0.0.1', '::1', ...(options.hosts ?? [])])];
  const server = signCert(dir, 'server', ca, '/CN=localhost', 'serverAuth', hosts.map(altName));
  const client = signCert(dir, 'client', ca, `/CN=${clientName}`, 'clientAuth', [`DNS:${clientName}`]);
  const pskFile = join(dir, 'psk.keys');
  const pskLine = `${clientName}:${randomBytes(pskKeyBytes).toString('hex')}\n`;
  // keys.psk holds the same line: the name qemu's tls-creds-psk reads from its dir=.
  for (const path of [pskFile, join(dir, 'keys.psk')]) {
    writeFileSync(path, pskLine, { mode: 0o600 });
    chmodSync(path, 0o600);
  }
  return {
    dir,
    caCert,
    caKey,
    serverCert: server.cert,
    serverKey: server.key,
    clientCert: client.cert,
    clientKey: client.key,
    pskFile,
  };
}

/**
 * Another client identity signed by the CA in caDir, written into outDir as ca-cert.pem (copy),
 * client-cert.pem, client-key.pem (so outDir works as a libnbd tls-certificates= dir).
 */
export function makeClientCert(
  caDir: string,
  outDir: string,
  name: string,
): { dir: string; cert: string; key: string } {
  mkdirSync(outDir, { recursive: true, mode: 0o700 });
  chmodSync(outDir, 0o700);
  const ca = { cert: join(caDir, 'ca-cert.pem'), key: join(caDir, 'ca-key.pem') };
  if (outDir !== caDir) copyFileSync(ca.cert, join(outDir, 'ca-cert.pem'));
  const client = signCert(outDir, 'client', ca, `/CN=${name}`, 'clientAuth', [`DNS:${name}`]);
  return { dir: outDir, ...client };
}
