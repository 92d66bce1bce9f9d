/**
 * Opens the ShardStore behind a registered target: an HTTP client for a storage node, an S3 client
 * for a bucket. Secrets come from the environment of the process, never from etcd:
 *
 * - S3: `CAIRN_S3_CREDENTIALS_FILE`, a JSON file `{"default": {"accessKeyId", "secretAccessKey"},
 *   "<target name>": {...}}` (a per-target entry wins), else `AWS_ACCESS_KEY_ID` and
 *   `AWS_SECRET_ACCESS_KEY`. In Kubernetes the file is a mounted Secret.
 * - Storage nodes: `CAIRN_NODE_SECRET_FILE` or `CAIRN_NODE_SECRET`, when nodes require auth;
 *   for nodes that speak TLS (`tls: true` in their etcd record), `CAIRN_NODE_CA` (the CA their
 *   certificates chain to; absent: the system's trust store) and `CAIRN_NODE_CERT` and
 *   `CAIRN_NODE_KEY` (this client's certificate, for nodes started with --tls-ca), and
 *   `CAIRN_NODE_TLS_SERVER_NAME` (the name node certificates carry, when not their address). With
 *   `CAIRN_NODE_CA` set, a node registered without TLS is refused: a plaintext node in a TLS
 *   cluster is a misconfiguration or an impostor.
 */
import { readFileSync } from 'node:fs';
import { AuthRejectedError, InvalidArgumentError, errorMessage, type ShardStore } from '../core/index.js';
import type { TargetRecord } from '../meta/index.js';
import { JournalNodeClient, NodeShardStore, S3ShardStore, type NodeClientTls } from '../shard/index.js';

export interface S3Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

export interface SecretSource {
  s3Credentials(target: string): S3Credentials;
  nodeSecret(): string | undefined;
  /** What a client of storage nodes trusts and presents; undefined when nothing is configured. */
  nodeTls(): NodeClientTls | undefined;
}

/** Reads secrets from `env` (process.env by default) as described above, on first use. */
export function environmentSecrets(env: NodeJS.ProcessEnv = process.env): SecretSource {
  return {
    s3Credentials(target: string): S3Credentials {
      const file = env['CAIRN_S3_CREDENTIALS_FILE'];
      if (file !== undefined && file !== '') {
        let parsed: Record<string, Partial<S3Credentials>>;
        try {
          parsed = JSON.parse(readFileSync(file, 'utf8')) as Record<string, Partial<S3Credentials>>;
        } catch (err) {
          throw new InvalidArgumentError(`Cannot read S3 credentials from ${file}: ${errorMessage(err)}`);
        }
        const entry = parsed[target] ?? parsed['default'];
        if (entry?.accessKeyId === undefined || entry.secretAccessKey === undefined) {
          throw new InvalidArgumentError(
            `${file} has no credentials for S3 target "${target}" (nor a "default" entry)`,
          );
        }
        return { accessKeyId: entry.accessKeyId, secretAccessKey: entry.secretAccessKey };
      }
      const accessKeyId = env['AWS_ACCESS_KEY_ID'];
      const secretAccessKey = env['AWS_SECRET_ACCESS_KEY'];
      if (!accessKeyId || !secretAccessKey) {
        throw new InvalidArgumentError(
          `No credentials for S3 target "${target}": set CAIRN_S3_CREDENTIALS_FILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`,
        );
      }
      return { accessKeyId, secretAccessKey };
    },
    nodeSecret(): string | undefined {
      const file = env['CAIRN_NODE_SECRET_FILE'];
      if (file !== undefined && file !== '') return readFileSync(file, 'utf8').trim();
      const secret = env['CAIRN_NODE_SECRET'];
      return secret === undefined || secret === '' ? undefined : secret;
    },
    nodeTls(): NodeClientTls | undefined {
      return nodeTlsFromEnv(env);
    },
  };
}

/** The node client TLS variables, read now; undefined when none is set. */
export function nodeTlsFromEnv(env: NodeJS.ProcessEnv): NodeClientTls | undefined {
  const path = (name: string): string | undefined => {
    const value = env[name];
    return value === undefined || value === '' ? undefined : value;
  };
  const read = (name: string, file: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new InvalidArgumentError(`Cannot read ${name} ${file}: ${errorMessage(err)}`);
    }
  };
  const ca = path('CAIRN_NODE_CA');
  const cert = path('CAIRN_NODE_CERT');
  const key = path('CAIRN_NODE_KEY');
  if ((cert === undefined) !== (key === undefined))
    throw new InvalidArgumentError(
      'A node client certificate needs its key: set both CAIRN_NODE_CERT and CAIRN_NODE_KEY',
    );
  const serverName = path('CAIRN_NODE_TLS_SERVER_NAME');
  if (ca === undefined && cert === undefined && serverName === undefined) return undefined;
  return {
    ...(serverName === undefined ? {} : { serverName }),
    ...(ca === undefined ? {} : { ca: read('CAIRN_NODE_CA', ca), caSource: `CAIRN_NODE_CA ${ca}` }),
    ...(cert === undefined || key === undefined
      ? {}
      : { cert: read('CAIRN_NODE_CERT', cert), key: read('CAIRN_NODE_KEY', key) }),
  };
}

/**
 * How to reach one node: its secret, and TLS when its record says `tls: true`. Throws
 * AuthRejectedError when CAIRN_NODE_CA is set and the node is registered without TLS.
 */
export function nodeClientCredentials(
  secrets: SecretSource,
  node: { readonly name: string; readonly tls?: boolean },
): { authSecret?: string; tls?: NodeClientTls } {
  const authSecret = secrets.nodeSecret();
  const tls = secrets.nodeTls();
  if (node.tls !== true && tls?.ca !== undefined)
    throw new AuthRejectedError(
      `Refusing node "${node.name}": it is registered without TLS but ${tls.caSource ?? 'CAIRN_NODE_CA'} is set (start it with --tls-cert, --tls-key and --tls-ca)`,
    );
  return {
    ...(authSecret === undefined ? {} : { authSecret }),
    ...(node.tls === true ? { tls: tls ?? {} } : {}),
  };
}

/** A client of one node's journal port (`address`), with its secret and TLS as for its shard API. */
export function journalClientFor(
  secrets: SecretSource,
  node: { readonly name: string; readonly address: string; readonly tls?: boolean },
): JournalNodeClient {
  return new JournalNodeClient({ name: node.name, address: node.address, ...nodeClientCredentials(secrets, node) });
}

export function storeForTarget(target: TargetRecord, secrets: SecretSource): ShardStore {
  if (target.kind === 'node') {
    if (target.address === undefined) throw new InvalidArgumentError(`Node target "${target.name}" has no address`);
    return new NodeShardStore({
      name: target.name,
      address: target.address,
      ...nodeClientCredentials(secrets, target),
      // Shard reads and writes go on the node's binary connection when it serves one.
      ...(target.journal === undefined ? {} : { journalAddress: target.journal }),
    });
  }
  if (target.endpoint === undefined || target.bucket === undefined) {
    throw new InvalidArgumentError(`S3 target "${target.name}" has no endpoint or bucket`);
  }
  return new S3ShardStore({
    name: target.name,
    zone: target.zone,
    endpoint: target.endpoint,
    bucket: target.bucket,
    ...(target.region === undefined ? {} : { region: target.region }),
    credentials: secrets.s3Credentials(target.name),
  });
}
