/**
 * The cairnd pod's initContainer: reads this pod's Node object from the Kubernetes API and writes
 * the storage node's identity for the cairnd container, `name` and `zone`, one line each.
 *
 * Why a program and not the downward API: the downward API exposes the node's name
 * (spec.nodeName) but not the node's labels, and the zone is the node label
 * `topology.kubernetes.io/zone`. So this reads the Node with the pod's ServiceAccount token,
 * which RBAC allows to `get` nodes and nothing else, and only this container mounts the token.
 *
 * What it keeps true:
 * - The Cairn node name is a pure function of the Kubernetes node name, so a restarted pod on the
 *   same node gets the same name, the same zone and the same hostPath data: cairnd re-registers
 *   as itself. Cairn names are 1-63 of [a-z0-9-] while node names may hold dots and run to 253
 *   characters; dots become '-', and a name still too long is cut and suffixed with a hash of
 *   the whole name, so two long names sharing a prefix stay apart.
 * - A node without the zone label, or with a zone Cairn cannot use as a name, stops the pod with
 *   a message saying what to run; it never guesses a zone, because placement's promise (losing
 *   one zone costs at most m shards) is only as true as the zones.
 *
 * Usage (in the image): `node dist/k8s/src/node_identity.js OUT_DIR`, with NODE_NAME set from
 * spec.nodeName. Exits 0 having written OUT_DIR/name and OUT_DIR/zone, else 1 with one line.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { checkName, errorMessage } from '../../src/core/index.js';
import { cairnd, zoneLabel } from './config.js';

/** Cairn's name rule allows 63 characters, as a Kubernetes label value does. */
const nameCharsMax = 63;
/** Hex digits of sha256 kept when a long name is shortened: 32 bits, ample for one cluster's nodes. */
const hashChars = 8;
/** One GET to the API server; the kubelet restarts a failed initContainer with backoff. */
const apiTimeoutMs = 10_000;
/** A Node object is a few KiB; far more is not a Node. */
const responseBytesMax = 4 * 1024 * 1024;

export interface NodeIdentity {
  readonly name: string;
  readonly zone: string;
}

/**
 * Cairn node name for a Kubernetes node name. Worked example: `ip-10-0-1-7.ec2.internal` becomes
 * `ip-10-0-1-7-ec2-internal`; a 70-character name keeps its first 54 characters (trailing '-'
 * trimmed), then '-' and 8 hex digits of sha256(name): at most 54 + 1 + 8 = 63.
 */
export function cairnNodeName(nodeName: string): string {
  const plain = nodeName
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '');
  if (plain !== '' && plain.length <= nameCharsMax) return checkName(plain, 'node');
  const hash = createHash('sha256').update(nodeName).digest('hex').slice(0, hashChars);
  const head = plain.slice(0, nameCharsMax - hashChars - 1).replace(/-+$/, '');
  return checkName(head === '' ? `node-${hash}` : `${head}-${hash}`, 'node');
}

/**
 * The identity of the node described by `node` (a Node object as the API returns it). Throws an
 * Error whose message tells the operator what to do.
 */
export function nodeIdentity(nodeName: string, node: unknown): NodeIdentity {
  const metadata = (node as { metadata?: { name?: unknown; labels?: Record<string, unknown> } } | null)?.metadata;
  if (metadata?.name !== nodeName) {
    throw new Error(`The API answered with something other than Node "${nodeName}"`);
  }
  const zone = metadata.labels?.[zoneLabel];
  if (typeof zone !== 'string' || zone === '') {
    throw new Error(
      `Node "${nodeName}" has no ${zoneLabel} label, so cairnd cannot know its zone: ` +
        `kubectl label node ${nodeName} ${zoneLabel}=<zone>`,
    );
  }
  try {
    checkName(zone, 'zone');
  } catch (err) {
    throw new Error(
      `Node "${nodeName}" is in zone "${zone}", which Cairn cannot use: ${errorMessage(err)}. ` +
        `Relabel the node or run cairnd outside this DaemonSet`,
    );
  }
  return { name: cairnNodeName(nodeName), zone };
}

/** Where the API server is and where the pod's token and CA are. */
export interface ApiAccess {
  readonly host: string;
  readonly port: number;
  /** Holds `token` and `ca.crt`, as a projected ServiceAccount volume does. */
  readonly tokenDir: string;
}

/** In a pod: the address Kubernetes puts in every container's environment. */
export function apiAccessFromEnv(env: NodeJS.ProcessEnv): ApiAccess {
  const host = env['KUBERNETES_SERVICE_HOST'];
  const port = Number(env['KUBERNETES_SERVICE_PORT'] ?? '443');
  if (host === undefined || host === '') throw new Error('KUBERNETES_SERVICE_HOST is not set: not running in a pod?');
  return { host, port, tokenDir: cairnd.tokenDir };
}

/** GET /api/v1/nodes/NAME with the pod's token, trusting only the cluster CA. */
export async function readNode(nodeName: string, api: ApiAccess): Promise<unknown> {
  const { host, port, tokenDir } = api;
  const token = readFileSync(join(tokenDir, 'token'), 'utf8').trim();
  const ca = readFileSync(join(tokenDir, 'ca.crt'));
  const path = `/api/v1/nodes/${encodeURIComponent(nodeName)}`;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host,
        port,
        path,
        method: 'GET',
        ca,
        headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
        timeout: apiTimeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let bytes = 0;
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (bytes > responseBytesMax) req.destroy(new Error(`GET ${path}: answer above ${responseBytesMax} bytes`));
          else chunks.push(chunk);
        });
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200) {
            // 403 means the ClusterRole or its binding is missing: say so, it is the likely fix.
            const hint = res.statusCode === 403 ? ' (is the cairn-node-reader ClusterRoleBinding applied?)' : '';
            reject(new Error(`GET ${path} answered ${res.statusCode}${hint}: ${text.slice(0, 200)}`));
            return;
          }
          try {
            resolve(JSON.parse(text));
          } catch (err) {
            reject(new Error(`GET ${path} answered with invalid JSON: ${errorMessage(err)}`));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer within ${apiTimeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const outDir = argv[0];
  const nodeName = env['NODE_NAME'];
  if (outDir === undefined || nodeName === undefined || nodeName === '') {
    process.stderr.write('usage: NODE_NAME=<node> node node_identity.js OUT_DIR\n');
    return 2;
  }
  try {
    const identity = nodeIdentity(nodeName, await readNode(nodeName, apiAccessFromEnv(env)));
    writeFileSync(join(outDir, 'name'), `${identity.name}\n`);
    writeFileSync(join(outDir, 'zone'), `${identity.zone}\n`);
    process.stdout.write(`node ${nodeName}: cairnd name ${identity.name}, zone ${identity.zone}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`node-identity: ${errorMessage(err)}\n`);
    return 1;
  }
}

// Run only as a program, so tests can import the pure functions above.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2), process.env);
}
