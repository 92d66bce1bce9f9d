/**
 * Options every cluster command shares (--etcd, --etcd-timeout, --json), and the one place the CLI
 * turns them into a connected EtcdMeta that is always closed afterwards.
 */
import type { Argv } from 'yargs';
import {
  EtcdMeta,
  etcdCallTimeoutMsDefault,
  etcdCredentialFlags,
  etcdCredentialOptions,
  parseEndpoints,
} from '../meta/index.js';
import { InvalidArgumentError, assert } from '../core/index.js';
import { keksFrom, transitKey, transitToken, type Kek, type TransitKey } from '../crypt/index.js';

export function clusterOptions<T>(y: Argv<T>) {
  return y
    .option('etcd', {
      type: 'string',
      describe: 'etcd endpoints, comma-separated (default: $CAIRN_ETCD)',
    })
    .option('etcd-timeout', {
      type: 'number',
      default: etcdCallTimeoutMsDefault,
      describe: 'milliseconds an etcd call may take before the command fails naming the endpoint',
    })
    .options(etcdCredentialOptions())
    .middleware(etcdFlagsToEnv)
    .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' })
    .option('api', {
      type: 'string',
      describe:
        'go through a Cairn API server at this URL instead of etcd (status, volume, snapshot and node commands; also: $CAIRN_API)',
    })
    .option('token', { type: 'string', describe: 'bearer token for --api (also: $CAIRN_API_TOKEN)' })
    .option('kek-file', {
      type: 'string',
      describe:
        'key-encryption key of an encrypted volume: a file of 32 bytes (raw, hex or base64); repeatable, matched by key id (also: $CAIRN_KEK_FILE, comma-separated)',
    });
}

/**
 * What `volume create` (and `volume import`) asks about encryption: --encrypt, or a --kek-file
 * given to create (which asks for it too), and the one KEK to wrap the new data key (a policy
 * rule may ask for encryption too; then the KEK must be given).
 */
export function encryptionRequest(argv: Record<string, unknown>): {
  encrypted?: boolean;
  kek?: Kek;
  transit?: { at: TransitKey; token: string };
} {
  if (typeof argv['kms'] === 'string' || typeof argv['kms-key'] === 'string') {
    if (typeof argv['kms'] !== 'string' || typeof argv['kms-key'] !== 'string')
      throw new InvalidArgumentError('--kms URL and --kms-key NAME go together');
    if (argv['kek-file'] !== undefined) throw new InvalidArgumentError('Give --kek-file or --kms, not both');
    return {
      encrypted: argv['encrypt'] !== false,
      transit: { at: transitKey(argv['kms'], argv['kms-key']), token: transitToken() },
    };
  }
  // --kek-file names the key; without it, the one key the environment holds (if it holds one).
  const flagged = argv['kek-file'] !== undefined;
  const keks = flagged ? keksFrom(kekFilesOf(argv), {}) : keksOf(argv);
  if (keks.length > 1)
    throw new InvalidArgumentError(
      `Give one key-encryption key to create a volume (${keks.length} found: ${keks.map((k) => `${k.id} (${k.source})`).join(', ')}); choose one with --kek-file`,
    );
  const asked = argv['encrypt'] ?? (argv['kek-file'] === undefined ? undefined : true);
  return {
    ...(asked === undefined ? {} : { encrypted: asked === true }),
    ...(keks[0] === undefined ? {} : { kek: keks[0] }),
  };
}

/**
 * For a long-running process: the keys as keksOf reads them, read once now (a bad file is refused
 * at start) and again at each call, so keys added to a CAIRN_KEK_DIR later are found.
 */
export function kekReader(argv: Record<string, unknown>): () => Kek[] {
  keksOf(argv);
  return () => keksOf(argv);
}

/** The key-encryption keys a command was given: --kek-file (repeatable), CAIRN_KEK_FILE, CAIRN_KEK. */
export function keksOf(argv: Record<string, unknown>): Kek[] {
  return keksFrom(kekFilesOf(argv));
}

function kekFilesOf(argv: Record<string, unknown>): string[] {
  const files = argv['kek-file'];
  return Array.isArray(files) ? files.map(String) : typeof files === 'string' ? [files] : [];
}

/**
 * The --etcd-* credential flags stand in for their variables: set into this process's environment
 * before the handler runs, so every etcd client the command opens (its own, a frontend's, a
 * background gc it starts) uses them, as EtcdMeta reads the variables by default.
 */
export function etcdFlagsToEnv(argv: Record<string, unknown>): void {
  for (const { flag, variable } of etcdCredentialFlags) {
    const value = argv[flag];
    if (typeof value === 'string' && value !== '') process.env[variable] = value;
  }
}

export function endpointsFrom(argv: Record<string, unknown>): string[] {
  const text = typeof argv['etcd'] === 'string' ? argv['etcd'] : process.env['CAIRN_ETCD'];
  if (text === undefined || text === '')
    throw new InvalidArgumentError('No etcd endpoint given: pass --etcd URL or set CAIRN_ETCD');
  return parseEndpoints(text);
}

/** Connects, runs `work`, and closes the client whatever happens. */
export async function withMeta<T>(argv: Record<string, unknown>, work: (meta: EtcdMeta) => Promise<T>): Promise<T> {
  // Commands that can go through the API do so before they get here (via_api.ts).
  if (typeof argv['api'] === 'string')
    throw new InvalidArgumentError(
      `This command talks to etcd and does not work through --api; drop --api (see cairnctl --help for those that do)`,
    );
  const timeoutMs = Number(argv['etcd-timeout'] ?? etcdCallTimeoutMsDefault);
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0)
    throw new InvalidArgumentError(`Invalid --etcd-timeout ${argv['etcd-timeout']}: use milliseconds > 0`);
  const meta = new EtcdMeta(endpointsFrom(argv), { timeoutMs });
  try {
    return await work(meta);
  } finally {
    meta.close();
  }
}

/**
 * A string argument yargs requires or defaults: a `<positional>`, a demandOption option or one
 * with a default. main.ts refuses a command line that lacks it (or gives it empty) before any
 * handler runs; this asserts the same fact below that edge, so a missing argument can never reach
 * etcd or the file system as the string "undefined".
 */
export function stringArg(argv: Record<string, unknown>, key: string): string {
  const value = argv[key];
  assert(typeof value === 'string' && value !== '', `argument ${key} reached a handler without a value`);
  return value;
}

export const isJson = (argv: Record<string, unknown>): boolean => Boolean(argv['json']);

/** Renders rows as aligned columns under a header. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

/** What a lone '-' on the command line becomes (main.ts): standard input or output. No path holds a NUL. */
export const stdioArg = '\u0000-';
