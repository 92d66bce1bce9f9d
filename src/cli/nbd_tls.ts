/**
 * The TLS flags of `cairnctl nbd serve`: --tls off|on|require, --tls-cert, --tls-key, --tls-ca,
 * --tls-psk-file and --tls-allow (repeatable), read and checked into the NbdServer's TLS options.
 *
 * What it keeps true: a TLS flag without TLS on, a certificate without its key, TLS on with
 * neither a certificate nor a PSK file, and a file that cannot be read are refused before the
 * frontend starts, each with a message naming the flag or the file.
 * What it leaves out: the handshake and the policy themselves (src/nbd/tls_server.ts, session.ts).
 */
import type { Argv } from 'yargs';
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, errorMessage } from '../core/index.js';
import { nbdTls, type NbdTlsMode, type NbdTlsOptions } from '../nbd/index.js';

/** Adds the TLS flags to `nbd serve`. */
export function nbdTlsFlags<T>(y: Argv<T>) {
  return y
    .option('tls', {
      type: 'string',
      choices: nbdTls.nbdTlsModes,
      default: 'off',
      describe:
        'NBD_OPT_STARTTLS: off; on (offered, plaintext allowed); require (TCP clients must use TLS; the Unix socket stays plaintext, guarded by its file permissions)',
    })
    .option('tls-cert', { type: 'string', describe: 'PEM server certificate (chain) for TLS' })
    .option('tls-key', { type: 'string', describe: 'PEM private key of --tls-cert' })
    .option('tls-ca', {
      type: 'string',
      describe: 'PEM CA: clients must present a certificate it signed (or use a PSK); its CN is their identity',
    })
    .option('tls-psk-file', {
      type: 'string',
      describe: 'TLS-PSK keys, one IDENTITY:HEXKEY per line (gnutls psktool format)',
    })
    .option('tls-allow', {
      type: 'string',
      describe:
        'IDENTITY=VOLUME[,VOLUME...] (repeatable; * = any volume): once given, a TCP client reaches only the volumes listed for its TLS identity',
    });
}

function readFlagFile(argv: Record<string, unknown>, flag: string): Buffer | undefined {
  const value = argv[flag];
  if (value === undefined) return undefined;
  const path = String(value);
  try {
    return readFileSync(path);
  } catch (err) {
    throw new InvalidArgumentError(`Cannot read --${flag} ${path}: ${errorMessage(err)}`);
  }
}

/** The TLS options the flags ask for, or undefined for --tls off. Throws InvalidArgumentError. */
export function nbdTlsOptionsOf(argv: Record<string, unknown>): NbdTlsOptions | undefined {
  const mode = String(argv['tls'] ?? 'off') as NbdTlsMode;
  const allowValues = argv['tls-allow'] === undefined ? [] : [argv['tls-allow']].flat().map(String);
  const files = ['tls-cert', 'tls-key', 'tls-ca', 'tls-psk-file'];
  if (mode === 'off') {
    const given = [...files, 'tls-allow'].filter((flag) => argv[flag] !== undefined);
    if (given.length > 0) throw new InvalidArgumentError(`--${given[0]} needs --tls on or --tls require`);
    return undefined;
  }
  if ((argv['tls-cert'] === undefined) !== (argv['tls-key'] === undefined)) {
    throw new InvalidArgumentError('--tls-cert and --tls-key go together');
  }
  if (argv['tls-cert'] === undefined && argv['tls-psk-file'] === undefined) {
    throw new InvalidArgumentError(`--tls ${mode} needs --tls-cert and --tls-key, or --tls-psk-file`);
  }
  if (allowValues.length > 0 && argv['tls-ca'] === undefined && argv['tls-psk-file'] === undefined) {
    // Without either no client proves an identity, so the list would refuse everyone.
    throw new InvalidArgumentError('--tls-allow needs --tls-ca or --tls-psk-file: clients need an identity');
  }
  const [cert, key, ca, pskText] = files.map((flag) => readFlagFile(argv, flag));
  const psk =
    pskText === undefined ? undefined : nbdTls.parsePskFile(pskText.toString('utf8'), String(argv['tls-psk-file']));
  const allow = nbdTls.parseTlsAllow(allowValues);
  return {
    mode,
    ...(cert === undefined ? {} : { cert }),
    ...(key === undefined ? {} : { key }),
    ...(ca === undefined ? {} : { ca }),
    ...(psk === undefined ? {} : { psk }),
    allow,
  };
}
