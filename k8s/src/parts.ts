/**
 * Pieces several manifests share: labels and metadata, resource sizes, the locked-down security
 * context, and the environment, volumes and mounts that hand a Cairn process its etcd endpoints
 * and secrets. Typed with the kubernetes-models interfaces, so a misspelt field is a tsc error.
 *
 * What it keeps true: every Cairn process finds etcd through the one ConfigMap key, S3
 * credentials only as a file from the S3 Secret, the node secret only as a file from the node
 * Secret, TLS material only as files from the TLS Secrets, and etcd credentials only from the
 * etcd client Secret. Authentication is on by default: the node Secret, the TLS Secrets and the
 * etcd client Secret are required, so a pod without them waits (its events name the missing
 * Secret) rather than running open; only the S3 Secret is optional (no S3 targets).
 */
import type {
  IEnvVar,
  IPodSecurityContext,
  IResourceRequirements,
  ISecurityContext,
  IVolume,
  IVolumeMount,
} from 'kubernetes-models/v1';
import type { IDaemonSet } from 'kubernetes-models/apps/v1';
import {
  clientTls,
  configMapName,
  etcdClientSecret,
  etcdEnvKey,
  imageTag,
  namespace,
  nodeSecret,
  nodeTls,
  partOf,
  plainServiceAccount,
  kekSecret,
  s3Secret,
} from './config.js';

/** ObjectMeta, named through a model so no transitive package is imported. */
export type ObjectMeta = NonNullable<IDaemonSet['metadata']>;

/** The labels a selector matches: stable for the life of the object. */
export function selectorLabels(name: string): Record<string, string> {
  return { 'app.kubernetes.io/name': name, 'app.kubernetes.io/part-of': partOf };
}

/**
 * Labels for an object and its pods. The version label says which Cairn release made it; it
 * stays out of selectors, which are immutable on a DaemonSet or StatefulSet. Objects that do
 * not run Cairn's code (etcd) go without it (`versioned` false): in a pod template it would
 * restart them on every Cairn release, and in a StatefulSet's volumeClaimTemplates, which are
 * immutable, it would make the next release's apply fail.
 */
export function labels(name: string, component: string, versioned = true): Record<string, string> {
  const base = { ...selectorLabels(name), 'app.kubernetes.io/component': component };
  return versioned ? { ...base, 'app.kubernetes.io/version': imageTag } : base;
}

/** Metadata of a namespaced object. */
export function meta(name: string, component: string, versioned = true): ObjectMeta {
  return { name, namespace, labels: labels(name, component, versioned) };
}

/** Metadata of a cluster-scoped object (Namespace, ClusterRole, ClusterRoleBinding). */
export function clusterMeta(name: string, component: string): ObjectMeta {
  return { name, labels: labels(name, component) };
}

/**
 * Requests and limits together: requests are what the scheduler reserves, limits stop a runaway
 * process from starving the node's other tenants (here, the storage daemon next to it).
 */
export function resources(request: { cpu: string; memory: string }, limit: { cpu: string; memory: string }) {
  const r: IResourceRequirements = {
    requests: { cpu: request.cpu, memory: request.memory },
    limits: { cpu: limit.cpu, memory: limit.memory },
  };
  return r;
}

/** Small one-shot commands (cairnctl init, volume create, the identity script). */
export const smallResources = resources({ cpu: '50m', memory: '64Mi' }, { cpu: '500m', memory: '256Mi' });

/**
 * No privilege beyond what a process that only opens files and sockets needs. The root file
 * system is read-only; a process that needs scratch space gets an emptyDir at /tmp.
 */
export const lockedDown: ISecurityContext = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ['ALL'] },
};

/** The node image's unprivileged user (uid 1000, "node"). */
export const nodeUid = 1000;

/**
 * Pods running as the node image's user. fsGroup makes mounted Secret files group-owned by it,
 * so they can be mode 0440 rather than readable by everyone.
 */
export const nodeUserPod: IPodSecurityContext = {
  runAsNonRoot: true,
  runAsUser: nodeUid,
  runAsGroup: nodeUid,
  fsGroup: nodeUid,
  seccompProfile: { type: 'RuntimeDefault' },
};

/** Pods that call no Kubernetes API get no token at all. */
export const noApiAccess = { serviceAccountName: plainServiceAccount, automountServiceAccountToken: false } as const;

/** CAIRN_ETCD from the ConfigMap: edit one key to move every process to another etcd. */
export const etcdEnv: IEnvVar = {
  name: etcdEnvKey,
  valueFrom: { configMapKeyRef: { name: configMapName, key: etcdEnvKey } },
};

/** CAIRN_S3_CREDENTIALS_FILE; read only when an S3 target is used, so a missing file is harmless until then. */
export const s3Env: IEnvVar = { name: s3Secret.envKey, value: s3Secret.file };

export const s3Volume: IVolume = {
  name: 's3-credentials',
  secret: { secretName: s3Secret.name, optional: true, defaultMode: 0o440 },
};
export const s3Mount: IVolumeMount = { name: 's3-credentials', mountPath: s3Secret.mountDir, readOnly: true };

/**
 * The optional key-encryption keys (config.ts kekSecret), for processes that attach volumes; with
 * `staged` (the frontend) also the host directory the CSI node plugin stages keys in.
 */
export function kekAccess(staged: boolean) {
  const secret = { name: 'kek', secret: { secretName: kekSecret.name, optional: true, defaultMode: 0o440 } };
  const host = { name: 'staged-kek', hostPath: { path: kekSecret.stagedDir, type: 'DirectoryOrCreate' } };
  return {
    env: [
      { name: kekSecret.envKey, value: staged ? `${kekSecret.mountDir},${kekSecret.stagedDir}` : kekSecret.mountDir },
    ] as IEnvVar[],
    volumes: (staged ? [secret, host] : [secret]) as IVolume[],
    mounts: [
      { name: 'kek', mountPath: kekSecret.mountDir, readOnly: true },
      ...(staged ? [{ name: 'staged-kek', mountPath: kekSecret.stagedDir, readOnly: true }] : []),
    ] as IVolumeMount[],
  };
}

export const nodeSecretVolume: IVolume = {
  name: 'node-secret',
  secret: { secretName: nodeSecret.name, optional: false, defaultMode: 0o440 },
};
export const nodeSecretMount: IVolumeMount = { name: 'node-secret', mountPath: nodeSecret.mountDir, readOnly: true };

/** The client certificate for cairnd, and the variables that name its files (src/api/stores.ts). */
export const clientTlsVolume: IVolume = {
  name: 'client-tls',
  secret: { secretName: clientTls.name, optional: false, defaultMode: 0o440 },
};
export const clientTlsMount: IVolumeMount = { name: 'client-tls', mountPath: clientTls.mountDir, readOnly: true };
export const clientTlsEnv: IEnvVar[] = [
  { name: 'CAIRN_NODE_CA', value: clientTls.ca },
  { name: 'CAIRN_NODE_CERT', value: clientTls.cert },
  { name: 'CAIRN_NODE_KEY', value: clientTls.key },
  { name: 'CAIRN_NODE_TLS_SERVER_NAME', value: nodeTls.serverName },
];

/** etcd client credentials from their Secret (the files it lacks are not used). */
export const etcdClientVolume: IVolume = {
  name: 'etcd-client',
  secret: { secretName: etcdClientSecret.name, optional: false, defaultMode: 0o440 },
};
export const etcdClientMount: IVolumeMount = {
  name: 'etcd-client',
  mountPath: etcdClientSecret.mountDir,
  readOnly: true,
};
export const etcdClientEnv: IEnvVar = { name: etcdClientSecret.envKey, value: etcdClientSecret.mountDir };

/** What every process that talks to etcd adds: CAIRN_ETCD and the etcd credentials. */
export const etcdAccess = {
  env: [etcdEnv, etcdClientEnv],
  volumes: [etcdClientVolume],
  mounts: [etcdClientMount],
} as const;

/** What every client of cairnd adds on top: the node secret and the client certificate. */
export const nodeAccess = {
  env: clientTlsEnv,
  volumes: [nodeSecretVolume, clientTlsVolume],
  mounts: [nodeSecretMount, clientTlsMount],
} as const;

export const tmpVolume: IVolume = { name: 'tmp', emptyDir: { sizeLimit: '64Mi' } };
export const tmpMount: IVolumeMount = { name: 'tmp', mountPath: '/tmp' };

/**
 * A shell prologue that points CAIRN_NODE_SECRET_FILE at the node secret only when the optional
 * Secret exists: clients fail on a named file that is missing, and a cluster without node auth
 * has none. Then it runs the container's args. Kubernetes expands only `$(NAME)` of a defined
 * variable in command and args, so the shell's own `$@` and `${...}` pass through untouched.
 */
export const withNodeSecretScript = [
  'set -eu',
  `if [ -s ${nodeSecret.file} ]; then export ${nodeSecret.envKey}=${nodeSecret.file}; fi`,
  'exec "$@"',
].join('\n');

/** `command` for a container whose args are a Cairn command line run under withNodeSecretScript. */
export const withNodeSecretCommand = ['sh', '-c', withNodeSecretScript, 'cairn'];

/** Runs a shell script; `$0` is the given name so error messages say which script failed. */
export function shellCommand(name: string, script: string): string[] {
  return ['sh', '-c', script, name];
}

/**
 * Everything a Cairn process that reads and writes shards needs (the frontend, the API server, the
 * CSI controller, the repairer): etcd and S3 credentials, the node secret and client certificate,
 * a /tmp; with `keys`, the key-encryption keys of encrypted volumes ('staged': also the directory
 * the CSI node plugin stages keys in, for the frontend on the same node).
 */
export function shardClientAccess(keys: 'none' | 'secret' | 'staged') {
  const kek = keys === 'none' ? { env: [], mounts: [], volumes: [] } : kekAccess(keys === 'staged');
  return {
    env: [...etcdAccess.env, s3Env, ...nodeAccess.env, ...kek.env] as IEnvVar[],
    mounts: [s3Mount, ...nodeAccess.mounts, ...etcdAccess.mounts, ...kek.mounts, tmpMount] as IVolumeMount[],
    volumes: [s3Volume, ...nodeAccess.volumes, ...etcdAccess.volumes, ...kek.volumes, tmpVolume] as IVolume[],
  };
}
