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
    .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' });
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
