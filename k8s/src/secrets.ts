/**
 * Templates for the two Secrets Cairn reads, with placeholders only: the S3 credentials file and
 * the storage nodes' shared secret. Not part of all.yaml, so applying all.yaml can never
 * overwrite real secrets with placeholders; docs/kubernetes.md shows `kubectl create secret`.
 *
 * What it keeps true: the placeholders fail loudly if applied unchanged. The node secret
 * placeholder holds spaces, which cairnd refuses (it travels in an HTTP header), so a
 * forgotten edit stops cairnd rather than running with a guessable secret; the S3 placeholder
 * keys are refused by any S3 server.
 */
import { Secret } from 'kubernetes-models/v1';
import { nodeSecret, s3Secret } from './config.js';
import { meta } from './parts.js';

/** The shape CAIRN_S3_CREDENTIALS_FILE holds (src/api/stores.ts); per-target entries may follow "default". */
export const s3CredentialsTemplate = {
  default: { accessKeyId: 'REPLACE-WITH-ACCESS-KEY-ID', secretAccessKey: 'REPLACE-WITH-SECRET-ACCESS-KEY' },
};

export const nodeSecretPlaceholder =
  'REPLACE ME with one line of 16-4096 printable characters, e.g. openssl rand -hex 32';

export function secretObjects() {
  return [
    new Secret({
      metadata: meta(s3Secret.name, 'secrets'),
      type: 'Opaque',
      stringData: { [s3Secret.key]: `${JSON.stringify(s3CredentialsTemplate, null, 2)}\n` },
    }),
    new Secret({
      metadata: meta(nodeSecret.name, 'secrets'),
      type: 'Opaque',
      stringData: { [nodeSecret.key]: nodeSecretPlaceholder },
    }),
  ];
}
