/**
 * cairnd's command line: parsed with yargs, then validated once, here, into a DaemonConfig. A
 * bad argument is an InvalidArgumentError with a one-line reason (the entry point prints it and
 * exits 2); nothing below this file re-checks what it checked.
 *
 * Environment: CAIRN_ETCD stands in for --etcd; CAIRN_NODE_SECRET_FILE (the file clients read) or
 * CAIRN_NODE_SECRET (the secret itself) for --auth-secret-file; CAIRN_NODE_TLS_CERT, _KEY and _CA
 * for --tls-cert, --tls-key and --tls-ca; CAIRN_METRICS_TOKEN_FILE for --metrics-token-file; the
 * etcd credential variables (src/meta/etcd_credentials.ts) for --etcd-ca, --etcd-cert,
 * --etcd-key, --etcd-user and --etcd-password-file.
 */
import { readFileSync } from 'node:fs';
import yargs from 'yargs';
import { InvalidArgumentError, checkName, errorMessage, parseSize, type ServerTls } from '../core/index.js';
import { journalSegmentBytesDefault, journalSegmentBytesMax, journalSegmentBytesMin } from '../journal/index.js';
import {
  etcdCallTimeoutMsDefault,
  etcdCredentialFlagsOf,
  etcdCredentialOptions,
  etcdCredentialsFrom,
  readCredentialFile,
  type EtcdCredentials,
} from '../meta/index.js';
import { formatHostPort, parseHostPort } from '../shard/index.js';
import { metricsTokenFromEnv, readMetricsToken } from '../metrics/index.js';
import { checkNodeLimits, nodeLimitsDefault, type NodeLimits } from './limits.js';

/** Spare journal segments a node keeps ready by default (each one segment of disk). */
export const journalSparesDefault = 1;
/** At most this many: each holds a whole segment of disk. */
const journalSparesMax = 16;

/**
 * Time SIGTERM allows requests in flight to finish. Below Kubernetes' default 30 s grace period,
 * so the lease is revoked before the kubelet's SIGKILL.
 */
export const drainMsDefault = 10_000;
/** A shared secret shorter than this is guessable; longer than the max is surely the wrong file. */
const secretCharsMin = 16;
const secretCharsMax = 4096;

export interface DaemonConfig {
  readonly etcdEndpoints: readonly string[];
  readonly etcdTimeoutMs: number;
  /** Client TLS and user/password for etcd; empty: plaintext, no auth. */
  readonly etcdCredentials: EtcdCredentials;
  /**
   * The node's certificate (and the CA its clients' certificates must chain to): the shard API
   * and the journal port then speak TLS only, and the node registers `tls: true`.
   */
  readonly tls?: ServerTls;
  /** The metrics endpoint's TLS: --metrics-tls-*, else the node's certificate without client CA. */
  readonly metricsTls?: ServerTls;
  /** Bearer token GET /metrics and GET /v1/health require (--metrics-token-file). */
  readonly metricsToken?: string;
  readonly name: string;
  readonly zone: string;
  readonly dataDir: string;
  readonly listenHost: string;
  readonly listenPort: number;
  /** host:port clients should use; absent means the listen address (with the bound port). */
  readonly advertise?: string;
  readonly capacityBytes?: number;
  readonly authSecret?: string;
  readonly drainMs: number;
  /** Where GET /metrics is served (Prometheus text); absent: no metrics endpoint. */
  readonly metricsListen?: { readonly host: string; readonly port: number };
  /**
   * Where the journal protocol listens. Default: the --listen host, port + 1 (4101 -> 4102), so
   * firewalls and hostPorts can be written down; port 0 when --listen has port 0.
   */
  readonly journalListenHost: string;
  readonly journalListenPort: number;
  /** Host clients use for the journal: the --advertise host, else the journal listen host. */
  readonly journalAdvertiseHost: string;
  /** Size of each new journal segment file, in bytes. */
  readonly journalSegmentBytes: number;
  /** Preallocated journal segments kept ready, so a create does not zero a file while a writer waits. */
  readonly journalSpares: number;
  /** Bounds against slow, idle and greedy clients (src/node/limits.ts). */
  readonly limits: NodeLimits;
}

export type ParsedDaemonArgs =
  | { readonly kind: 'run'; readonly config: DaemonConfig }
  /** --help or --version: print `output` and exit 0. */
  | { readonly kind: 'print'; readonly output: string };

const usage = `cairnd --etcd URL --name NAME --zone ZONE --data-dir DIR --listen HOST:PORT [options]

Cairn storage node: stores shards in DIR, serves them over HTTP on HOST:PORT, keeps volumes'
write-ahead journals in DIR/journal~ and serves them on HOST:PORT+1 (--journal-listen), and
registers itself in etcd (cairn/v1/targets/NAME, and cairn/v1/alive/NAME under a 5 s lease).`;

/** Parses and validates argv (without node and script). Throws InvalidArgumentError. */
export async function parseDaemonArgs(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<ParsedDaemonArgs> {
  let failure: string | undefined;
  let output = '';
  const parser = yargs()
    .scriptName('cairnd')
    .usage(usage)
    .option('etcd', { type: 'string', describe: 'etcd endpoints, comma-separated (env CAIRN_ETCD)' })
    .option('etcd-timeout', { type: 'number', default: etcdCallTimeoutMsDefault, describe: 'ms an etcd call may take' })
    .option('name', { type: 'string', demandOption: true, describe: 'node name, unique in the cluster' })
    .option('zone', { type: 'string', demandOption: true, describe: 'availability zone of this node' })
    .option('data-dir', { type: 'string', demandOption: true, describe: 'directory holding the shards' })
    .option('listen', { type: 'string', demandOption: true, describe: 'HOST:PORT of the shard API (port 0 picks one)' })
    .option('advertise', { type: 'string', describe: 'HOST:PORT clients connect to (default: the listen address)' })
    .option('capacity', {
      type: 'string',
      describe: 'bytes this node may store, e.g. 500GiB (default: the file system size)',
    })
    .option('auth-secret-file', {
      type: 'string',
      describe: 'file holding the shared secret clients must send (env CAIRN_NODE_SECRET_FILE, or CAIRN_NODE_SECRET)',
    })
    .option('metrics-listen', {
      type: 'string',
      describe: 'HOST:PORT serving Prometheus metrics at /metrics (default: off)',
    })
    .option('tls-cert', {
      type: 'string',
      describe: 'PEM certificate: serve the shard API and the journal over TLS only (env CAIRN_NODE_TLS_CERT)',
    })
    .option('tls-key', { type: 'string', describe: 'PEM private key of --tls-cert (env CAIRN_NODE_TLS_KEY)' })
    .option('tls-ca', {
      type: 'string',
      describe: 'PEM CA: clients must present a certificate it signed (env CAIRN_NODE_TLS_CA)',
    })
    .option('metrics-tls-cert', {
      type: 'string',
      describe: 'PEM certificate of the metrics endpoint (default: --tls-cert when given)',
    })
    .option('metrics-tls-key', { type: 'string', describe: 'PEM private key of --metrics-tls-cert' })
    .option('metrics-tls-ca', {
      type: 'string',
      describe: 'PEM CA: scrapers must present a certificate it signed (default: none needed)',
    })
    .option('metrics-token-file', {
      type: 'string',
      describe: 'file holding a bearer token /metrics and /v1/health require (env CAIRN_METRICS_TOKEN_FILE)',
    })
    .options(etcdCredentialOptions())
    .option('journal-listen', {
      type: 'string',
      describe: 'HOST:PORT of the journal protocol (default: the --listen host and port + 1; port 0 if --listen has 0)',
    })
    .option('journal-segment-size', {
      type: 'string',
      describe: `size of each journal segment file, preallocated (default ${journalSegmentBytesDefault / 1024 / 1024}MiB)`,
    })
    .option('journal-spares', {
      type: 'string',
      default: String(journalSparesDefault),
      describe:
        'journal segments to keep preallocated (zeroed in the background once this node holds a journal), so creating one at attach or when one fills is a rename, not a write of a whole segment while writers wait; 0: none',
    })
    .option('drain-timeout', {
      type: 'number',
      default: drainMsDefault,
      describe: 'ms SIGTERM waits for requests in flight',
    })
    .options(limitOptions())
    .strict()
    .help()
    .version(false)
    .wrap(100)
    .exitProcess(false)
    .fail((message, err) => {
      failure = err?.message ?? message;
    });
  const args = await new Promise<Record<string, unknown>>((resolve) => {
    void parser.parse([...argv], {}, (err, parsed, text) => {
      if (err !== null && err !== undefined && failure === undefined) failure = errorMessage(err);
      output = text;
      resolve(parsed as Record<string, unknown>);
    });
  });
  if (failure !== undefined) throw new InvalidArgumentError(`${failure.split('\n')[0]} (see --help)`);
  if (args.help === true) return { kind: 'print', output };

  const etcdText = (args.etcd as string | undefined) ?? env.CAIRN_ETCD ?? '';
  const etcdEndpoints = etcdText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map(checkEndpoint);
  if (etcdEndpoints.length === 0)
    throw new InvalidArgumentError('Missing --etcd URL (or set CAIRN_ETCD), e.g. --etcd http://127.0.0.1:2379');
  const etcdTimeoutMs = positiveInt(args['etcd-timeout'], '--etcd-timeout');
  const drainMs = positiveInt(args['drain-timeout'], '--drain-timeout');
  const name = checkName(String(args.name), 'node');
  const zone = checkName(String(args.zone), 'zone');
  const dataDir = String(args['data-dir']);
  if (dataDir.trim() === '') throw new InvalidArgumentError('Invalid --data-dir "": name a directory');
  const { host: listenHost, port: listenPort } = parseHostPort(String(args.listen), '--listen address');
  const advertiseText = args.advertise as string | undefined;
  if (advertiseText !== undefined) {
    const advertised = parseHostPort(advertiseText, '--advertise address');
    if (advertised.port === 0)
      throw new InvalidArgumentError(
        `Invalid --advertise address "${advertiseText}": port 0 is not an address clients can use`,
      );
  } else if (listenHost === '0.0.0.0' || listenHost === '::') {
    throw new InvalidArgumentError(
      `--listen ${String(args.listen)} is not an address clients can connect to: add --advertise HOST:PORT`,
    );
  }
  const journal = journalListenOf(args['journal-listen'] as string | undefined, listenHost, listenPort);
  const advertisedHost =
    advertiseText === undefined ? undefined : parseHostPort(advertiseText, '--advertise address').host;
  const journalAdvertiseHost = advertisedHost ?? journal.host;
  if (journalAdvertiseHost === '0.0.0.0' || journalAdvertiseHost === '::')
    throw new InvalidArgumentError(
      `--journal-listen ${formatHostPort(journal.host, journal.port)} is not an address clients can connect to: add --advertise HOST:PORT (its host is used for the journal too)`,
    );
  const limits = limitsOf(args);
  const tls = serverTlsOf(
    { cert: args['tls-cert'], key: args['tls-key'], ca: args['tls-ca'] },
    { cert: 'tls-cert', key: 'tls-key', ca: 'tls-ca' },
    { cert: 'CAIRN_NODE_TLS_CERT', key: 'CAIRN_NODE_TLS_KEY', ca: 'CAIRN_NODE_TLS_CA' },
    env,
  );
  const metricsOwn = serverTlsOf(
    { cert: args['metrics-tls-cert'], key: args['metrics-tls-key'], ca: args['metrics-tls-ca'] },
    { cert: 'metrics-tls-cert', key: 'metrics-tls-key', ca: 'metrics-tls-ca' },
    undefined,
    env,
  );
  // Scrapers rarely hold a cluster certificate: the node's own TLS serves metrics without a client CA.
  const metricsTls = metricsOwn ?? (tls === undefined ? undefined : { cert: tls.cert, key: tls.key });
  const metricsToken = tokenOf(args['metrics-token-file'] as string | undefined, env);
  const etcdCredentials = etcdCredentialsFrom(etcdCredentialFlagsOf(args), env);
  const config: DaemonConfig = {
    limits,
    etcdEndpoints,
    etcdTimeoutMs,
    etcdCredentials,
    ...(tls === undefined ? {} : { tls }),
    ...(metricsTls === undefined ? {} : { metricsTls }),
    ...(metricsToken === undefined ? {} : { metricsToken }),
    name,
    zone,
    dataDir,
    listenHost,
    listenPort,
    drainMs,
    journalListenHost: journal.host,
    journalListenPort: journal.port,
    journalAdvertiseHost,
    journalSegmentBytes: checkSegmentSize(args['journal-segment-size'] as string | undefined),
    journalSpares: checkSpares(args['journal-spares']),
    ...(advertiseText === undefined ? {} : { advertise: advertiseText }),
    ...(args.capacity === undefined ? {} : { capacityBytes: checkCapacity(String(args.capacity)) }),
    ...(args['metrics-listen'] === undefined
      ? {}
      : { metricsListen: parseHostPort(String(args['metrics-listen']), '--metrics-listen address') }),
    ...secretOf(args['auth-secret-file'] as string | undefined, env),
  };
  return { kind: 'run', config };
}

/**
 * The flag of each limit in NodeLimits: a count (connections, milliseconds) or a size with units
 * (bytes). One table declares the options, parses them and names them in messages.
 */
const limitFlags: readonly { field: keyof NodeLimits; flag: string; size: boolean; describe: string }[] = [
  {
    field: 'connectionsMax',
    flag: 'max-connections',
    size: false,
    describe: 'connections each server accepts at once; more are refused (503) with a log line',
  },
  {
    field: 'connectionsPerClientMax',
    flag: 'max-connections-per-client',
    size: false,
    describe: 'connections one remote address may hold on each server',
  },
  {
    field: 'idleTimeoutMs',
    flag: 'idle-timeout',
    size: false,
    describe: 'ms after which an idle connection, or one whose client stopped reading, is closed',
  },
  { field: 'putBytesMax', flag: 'put-budget', size: true, describe: 'shard bodies held in memory at once' },
  {
    field: 'putBytesPerClientMax',
    flag: 'put-budget-per-client',
    size: true,
    describe: 'share of the PUT budget one remote address may hold',
  },
  {
    field: 'bodyRateMinBytesPerS',
    flag: 'body-rate-min',
    size: true,
    describe: 'bytes per second a body must bring over each --body-rate-window, else 408',
  },
  {
    field: 'bodyRateWindowMs',
    flag: 'body-rate-window',
    size: false,
    describe: 'ms over which a body rate is measured (and the grace before the first check)',
  },
  { field: 'responseBytesMax', flag: 'response-budget', size: true, describe: 'GET bodies held in memory until sent' },
  {
    field: 'responseBytesPerClientMax',
    flag: 'response-budget-per-client',
    size: true,
    describe: 'share of the response budget one remote address may hold',
  },
];

function limitOptions(): Record<string, { type: 'string'; describe: string }> {
  const options: Record<string, { type: 'string'; describe: string }> = {};
  for (const { field, flag, size, describe } of limitFlags) {
    const fallback = nodeLimitsDefault[field];
    options[flag] = { type: 'string', describe: `${describe} (default ${size ? sizeText(fallback) : fallback})` };
  }
  return options;
}

/** The limit flags as NodeLimits, each checked; a per-client share above its whole is refused too. */
function limitsOf(args: Record<string, unknown>): NodeLimits {
  const limits: Record<string, number> = {};
  for (const { field, flag, size } of limitFlags) {
    const text = args[flag] as string | undefined;
    if (text === undefined) {
      limits[field] = nodeLimitsDefault[field];
      continue;
    }
    const value = size ? parseSize(text, `--${flag}`) : /^\d+$/.test(text) ? Number(text) : Number.NaN;
    if (!Number.isSafeInteger(value) || value <= 0)
      throw new InvalidArgumentError(`Invalid --${flag} "${text}": expected a whole number above 0`);
    limits[field] = value;
  }
  try {
    return checkNodeLimits(limits);
  } catch (err) {
    // Name the flags, not the fields.
    let message = errorMessage(err).replace('Invalid node limits', 'Invalid limits');
    for (const { field, flag } of limitFlags) message = message.replace(new RegExp(`\\b${field}\\b`, 'g'), `--${flag}`);
    throw new InvalidArgumentError(message);
  }
}

function sizeText(bytes: number): string {
  const units: [string, number][] = [
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ];
  for (const [unit, n] of units) if (bytes % n === 0) return `${bytes / n}${unit}`;
  return `${bytes}`;
}

/** --journal-listen, or its default: the shard API's host and port + 1 (0 stays 0). */
function journalListenOf(
  text: string | undefined,
  listenHost: string,
  listenPort: number,
): { host: string; port: number } {
  if (text !== undefined) return parseHostPort(text, '--journal-listen address');
  if (listenPort === 0) return { host: listenHost, port: 0 };
  if (listenPort === 65535)
    throw new InvalidArgumentError(
      '--listen uses port 65535, so the journal has no default port (port + 1): add --journal-listen HOST:PORT',
    );
  return { host: listenHost, port: listenPort + 1 };
}

function checkSegmentSize(text: string | undefined): number {
  if (text === undefined) return journalSegmentBytesDefault;
  const bytes = parseSize(text, '--journal-segment-size');
  if (bytes < journalSegmentBytesMin || bytes > journalSegmentBytesMax)
    throw new InvalidArgumentError(
      `Invalid --journal-segment-size "${text}": must be from ${journalSegmentBytesMin} bytes (one largest record) to ${journalSegmentBytesMax / 1024 / 1024}MiB`,
    );
  return bytes;
}

function checkEndpoint(text: string): string {
  const withScheme = /^[a-z]+:\/\//i.test(text) ? text : `http://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new InvalidArgumentError(`Invalid --etcd endpoint "${text}": expected a URL such as http://127.0.0.1:2379`);
  }
  if (
    (url.protocol !== 'http:' && url.protocol !== 'https:') ||
    url.port === '' ||
    (url.pathname !== '/' && url.pathname !== '')
  ) {
    throw new InvalidArgumentError(`Invalid --etcd endpoint "${text}": expected http(s)://HOST:PORT`);
  }
  return `${url.protocol}//${url.host}`;
}

function positiveInt(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new InvalidArgumentError(
      `Invalid ${what} "${String(value)}": expected a whole number of milliseconds above 0`,
    );
  }
  return value;
}

function checkCapacity(text: string): number {
  const bytes = parseSize(text, '--capacity');
  if (bytes <= 0) throw new InvalidArgumentError(`Invalid --capacity "${text}": must be above 0`);
  return bytes;
}

function secretOf(file: string | undefined, env: NodeJS.ProcessEnv): { authSecret?: string } {
  let secret: string;
  let source: string;
  if (file !== undefined) {
    source = `--auth-secret-file ${file}`;
    try {
      secret = readFileSync(file, 'utf8');
    } catch (err) {
      throw new InvalidArgumentError(`Cannot read ${source}: ${errorMessage(err)}`);
    }
  } else if (env.CAIRN_NODE_SECRET_FILE !== undefined && env.CAIRN_NODE_SECRET_FILE !== '') {
    // What clients read: a node given only this must not run open while they send a secret.
    source = `CAIRN_NODE_SECRET_FILE ${env.CAIRN_NODE_SECRET_FILE}`;
    try {
      secret = readFileSync(env.CAIRN_NODE_SECRET_FILE, 'utf8');
    } catch (err) {
      throw new InvalidArgumentError(`Cannot read ${source}: ${errorMessage(err)}`);
    }
  } else if (env.CAIRN_NODE_SECRET !== undefined && env.CAIRN_NODE_SECRET !== '') {
    source = 'CAIRN_NODE_SECRET';
    secret = env.CAIRN_NODE_SECRET;
  } else {
    return {};
  }
  // A trailing newline is how editors and `echo` save files, never part of the secret.
  secret = secret.replace(/[\r\n]+$/, '');
  // It travels in an HTTP header, so printable ASCII without spaces.
  if (secret.length < secretCharsMin || secret.length > secretCharsMax || !/^[\x21-\x7e]+$/.test(secret)) {
    throw new InvalidArgumentError(
      `Invalid shared secret in ${source}: use one line of ${secretCharsMin}-${secretCharsMax} printable ASCII characters without spaces`,
    );
  }
  return { authSecret: secret };
}

type TlsTriple<T> = { readonly cert: T; readonly key: T; readonly ca: T };

/**
 * A server's TLS files from flags (else the variables), read now. A certificate needs its key
 * and a key its certificate; a CA alone is refused (it means nothing without a certificate).
 */
export function serverTlsOf(
  given: TlsTriple<unknown>,
  flags: TlsTriple<string>,
  variables: TlsTriple<string> | undefined,
  env: NodeJS.ProcessEnv,
): ServerTls | undefined {
  const pick = (field: 'cert' | 'key' | 'ca'): { path: string; source: string } | undefined => {
    const flag = given[field];
    if (typeof flag === 'string' && flag !== '') return { path: flag, source: `--${flags[field]} ${flag}` };
    const variable = variables?.[field];
    const value = variable === undefined ? undefined : env[variable];
    return value === undefined || value === '' ? undefined : { path: value, source: `${variable} ${value}` };
  };
  const cert = pick('cert');
  const key = pick('key');
  const ca = pick('ca');
  if (cert === undefined && key === undefined) {
    if (ca !== undefined)
      throw new InvalidArgumentError(`${ca.source} needs --${flags.cert} and --${flags.key}: a CA alone is not TLS`);
    return undefined;
  }
  if (cert === undefined || key === undefined)
    throw new InvalidArgumentError(
      `TLS needs both --${flags.cert} and --${flags.key} (${(cert ?? key)!.source} alone)`,
    );
  const read = (f: { path: string; source: string }): Buffer => readCredentialFile(f.path, f.source);
  return { cert: read(cert), key: read(key), ...(ca === undefined ? {} : { ca: read(ca) }) };
}

/** The metrics bearer token, from --metrics-token-file or CAIRN_METRICS_TOKEN_FILE (one line). */
function tokenOf(file: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  return file === undefined ? metricsTokenFromEnv(env) : readMetricsToken(file, `--metrics-token-file ${file}`);
}

function checkSpares(value: unknown): number {
  const n = value === undefined ? journalSparesDefault : /^\d+$/.test(String(value)) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < 0 || n > journalSparesMax)
    throw new InvalidArgumentError(
      `Invalid --journal-spares "${String(value)}": must be a whole number from 0 to ${journalSparesMax}`,
    );
  return n;
}
