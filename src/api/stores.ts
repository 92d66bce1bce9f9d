/**
 * Opens the ShardStore behind a registered target: an HTTP client for a storage node, an S3 client
 * for a bucket. Secrets come from the environment of the process, never from etcd:
 *
 * - S3: `CAIRN_S3_CREDENTIALS_FILE`, a JSON file `{"default": {"accessKeyId", "secretAccessKey"},
 *   "<target name>": {...}}` (a per-target entry wins), else `AWS_ACCESS_KEY_ID` and
 *   `AWS_SECRET_ACCESS_KEY`. In Kubernetes the file is a mounted Secret.
 * - Storage nodes: `CAIRN_NODE_SECRET_FILE` or `CAIRN_NODE_SECRET`, when nodes require auth.
 */
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, errorMessage, type ShardStore } from '../core/index.js';
import type { TargetRecord } from '../meta/index.js';
import { NodeShardStore, S3ShardStore } from '../shard/index.js';

export interface S3Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

export interface SecretSource {
  s3Credentials(target: string): S3Credentials;
  nodeSecret(): string | undefined;
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
  };
}

export function storeForTarget(target: TargetRecord, secrets: SecretSource): ShardStore {
  if (target.kind === 'node') {
    if (target.address === undefined) throw new InvalidArgumentError(`Node target "${target.name}" has no address`);
    const authSecret = secrets.nodeSecret();
    return new NodeShardStore({
      name: target.name,
      address: target.address,
      ...(authSecret === undefined ? {} : { authSecret }),
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
