/**
 * `cairnctl --api URL --token TOKEN` (or CAIRN_API and CAIRN_API_TOKEN; CAIRN_API_CA for an https URL
 * signed by a private CA): the commands that can go
 * through the HTTP API instead of etcd (status, volume list|info|create|delete|resize, snapshot
 * create|list|delete, node list|drain) ask a Cairn API server, and print what they print against
 * etcd (the API returns the same JSON, src/api/http/views.ts). Other commands refuse --api, so a
 * flag is never silently ignored; CAIRN_API alone leaves them on etcd.
 *
 * What it keeps true: a server that cannot be reached fails the command naming the URL; the
 * server's error comes back with its own code, so the exit code is the one etcd would give.
 */
import { readFileSync } from 'node:fs';
import { CairnError, InvalidArgumentError, errorMessage } from '../core/index.js';
import { ApiClient, type RepairSummary } from '../api/index.js';
import type { EtcdMeta } from '../meta/index.js';
import { withMeta } from './common.js';

/** The API client a command should use, or undefined to use etcd. */
export function apiOf(argv: Record<string, unknown>): ApiClient | undefined {
  const url = typeof argv['api'] === 'string' ? argv['api'] : process.env['CAIRN_API'];
  if (url === undefined || url === '') return undefined;
  const token = typeof argv['token'] === 'string' ? argv['token'] : process.env['CAIRN_API_TOKEN'];
  if (token === undefined || token === '')
    throw new InvalidArgumentError(`--api ${url} needs a token: pass --token TOKEN or set CAIRN_API_TOKEN`);
  // An https:// API signed by a private CA: CAIRN_API_CA names its PEM file.
  const caFile = process.env['CAIRN_API_CA'];
  let ca: Buffer | undefined;
  if (caFile !== undefined && caFile !== '') {
    try {
      ca = readFileSync(caFile);
    } catch (err) {
      throw new InvalidArgumentError(`Cannot read CAIRN_API_CA ${caFile}: ${errorMessage(err)}`);
    }
  }
  return new ApiClient(url, { token, ...(ca === undefined ? {} : { ca }) });
}

/** Runs `viaApi` when the command goes through the API, else `viaMeta` against etcd. */
export function viaApiOrMeta<T>(
  argv: Record<string, unknown>,
  viaApi: (api: ApiClient) => Promise<T>,
  viaMeta: (meta: EtcdMeta) => Promise<T>,
): Promise<T> {
  const api = apiOf(argv);
  return api === undefined ? withMeta(argv, viaMeta) : viaApi(api);
}

/** Path segment of a name (names are [a-z0-9-], so this changes nothing today but keeps URLs sound). */
export const seg = (name: string): string => encodeURIComponent(name);

/** How often `node drain --api` asks whether the server's drain job has ended. */
const drainPollMs = 1_000;
/** Polls in a row that may not find the job before the command gives up on it. */
const drainJobUnseenMax = 30;

interface DrainJob {
  readonly id: string;
  readonly state: 'running' | 'done' | 'failed';
  readonly result?: RepairSummary;
  readonly error?: string;
}

/**
 * `node drain` through the API: the server marks the node and moves its shards as a background
 * job; with `wait` this follows the job (GET /repair) until it ends, so the command reports what
 * moved as it does against etcd.
 */
export async function drainThroughApi(
  api: ApiClient,
  name: string,
  options: { readonly undo: boolean; readonly wait: boolean },
): Promise<{ target: string; draining: boolean; moved: RepairSummary | null }> {
  const started = await api.request<{ target: string; draining: boolean; job: DrainJob | null }>(
    'POST',
    `/nodes/${seg(name)}/drain`,
    { undo: options.undo },
  );
  if (started.job === null || !options.wait) return { target: started.target, draining: started.draining, moved: null };
  const id = started.job.id;
  // Behind a Service of several replicas a poll may reach one that did not start the job: it is
  // asked again; only a long run of such answers means the job is gone (its server restarted).
  let unseen = 0;
  for (;;) {
    const status = await api.request<{ jobs: DrainJob[] }>('GET', '/repair');
    const job = status.jobs.find((j) => j.id === id);
    if (job === undefined && ++unseen > drainJobUnseenMax)
      throw new CairnError('EUNAVAILABLE', `The API server no longer lists drain job ${id} (restarted?)`, {
        retryable: true,
      });
    if (job !== undefined && job.state !== 'running') {
      if (job.result === undefined)
        throw new CairnError('EIO', `Draining ${name} failed on the API server: ${job.error ?? 'no reason given'}`);
      return { target: started.target, draining: true, moved: job.result };
    }
    await new Promise((resolve) => setTimeout(resolve, drainPollMs));
  }
}
