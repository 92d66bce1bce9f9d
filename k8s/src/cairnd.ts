/**
 * The storage node, `cairnd`, as a DaemonSet: one per Kubernetes node, shards on a hostPath.
 *
 * What it keeps true:
 * - Identity is stable: the initContainer (node_identity.ts) derives the Cairn node name from
 *   spec.nodeName and reads the zone from the node's `topology.kubernetes.io/zone` label, so a
 *   restarted pod re-registers as the same node in the same zone over the same data.
 * - Data outlives the pod: /var/lib/cairn on the host. Deleting the DaemonSet keeps the shards.
 * - Clients reach the node at its pod IP (downward API status.podIP), advertised to etcd; the
 *   address is rewritten on every start, so a new pod IP after a restart is picked up.
 * - Probes use GET /v1/health, which needs no secret and answers once the shard API listens.
 * - Only the initContainer holds an API token (a short-lived projected one); cairnd does not.
 * - The node secret is optional: cairnd requires `authorization: Bearer` only when the Secret
 *   exists (when the pod starts).
 *
 * What it leaves out: disk selection (one hostPath per node; set --capacity to bound it) and
 * tolerations (add them to run on tainted nodes).
 */
import { DaemonSet } from 'kubernetes-models/apps/v1';
import type { IContainer, IVolume } from 'kubernetes-models/v1';
import { cairnd, image, imageAppDir, nodeSecret, nodeTls } from './config.js';
import {
  etcdAccess,
  labels,
  lockedDown,
  meta,
  nodeSecretMount,
  nodeSecretVolume,
  nodeUid,
  resources,
  selectorLabels,
  shellCommand,
  smallResources,
  tmpMount,
  tmpVolume,
} from './parts.js';

const component = 'storage-node';

/**
 * Reads the identity the initContainer wrote, adds --auth-secret-file when the node Secret
 * exists, and execs cairnd with the container's args, so cairnd is PID 1 and gets SIGTERM.
 * `read` rather than command substitution: see the `$(` rule in parts.ts.
 */
export const cairndScript = [
  'set -eu',
  `read -r name < ${cairnd.identityDir}/name`,
  `read -r zone < ${cairnd.identityDir}/zone`,
  `if [ -s ${nodeSecret.file} ]; then set -- --auth-secret-file ${nodeSecret.file} "$@"; fi`,
  'exec cairnd --name "$name" --zone "$zone" "$@"',
].join('\n');

/** cairnd's flags apart from --name, --zone and --auth-secret-file (those come from the script). */
export const cairndArgs = [
  '--listen',
  `0.0.0.0:${cairnd.port}`,
  // Kubernetes expands $(POD_IP) from the env var below. IPv4: an IPv6 pod IP would need [...].
  '--advertise',
  `$(POD_IP):${cairnd.port}`,
  '--data-dir',
  cairnd.dataDir,
];

/** The identity emptyDir the initContainer writes and the main container reads. */
export const identityMount = { name: 'identity', mountPath: cairnd.identityDir };

/**
 * The initContainer that writes this node's Cairn name and zone (from the Node's
 * topology.kubernetes.io/zone label) into the identity emptyDir: the one user of the API token
 * in its pod (identityVolumes). cairnd and the CSI node plugin both start with it.
 */
export function nodeIdentityContainer(): IContainer {
  return {
    name: 'node-identity',
    image,
    imagePullPolicy: 'IfNotPresent',
    command: ['node', `${imageAppDir}/dist/k8s/src/node_identity.js`, cairnd.identityDir],
    env: [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }],
    resources: smallResources,
    // It needs neither root nor the host: only the API and the emptyDir it writes.
    securityContext: { ...lockedDown, runAsNonRoot: true, runAsUser: nodeUid, runAsGroup: nodeUid },
    volumeMounts: [identityMount, { name: 'api-token', mountPath: cairnd.tokenDir, readOnly: true }],
  };
}

/** The identity emptyDir and the API token projected for the identity initContainer only. */
export const identityVolumes: IVolume[] = [
  { name: 'identity', emptyDir: { medium: 'Memory', sizeLimit: '1Mi' } },
  {
    // What automounting would give, but for the initContainer only, expiring soon.
    name: 'api-token',
    projected: {
      sources: [
        { serviceAccountToken: { path: 'token', expirationSeconds: 600 } },
        { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
      ],
    },
  },
];

export function cairndObjects() {
  const selector = selectorLabels(cairnd.name);
  const nodeIdentity = nodeIdentityContainer();
  // HTTPS: cairnd serves TLS only; /v1/health needs no client certificate, and probes skip verification.
  const health = { httpGet: { path: '/v1/health', port: 'shards', scheme: 'HTTPS' } } as const;
  const node: IContainer = {
    name: 'cairnd',
    image,
    imagePullPolicy: 'IfNotPresent',
    command: shellCommand('cairnd', cairndScript),
    args: cairndArgs,
    env: [
      ...etcdAccess.env,
      { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
      // Mutual TLS on the shard and journal ports (src/node/args.ts reads these).
      { name: 'CAIRN_NODE_TLS_CERT', value: nodeTls.cert },
      { name: 'CAIRN_NODE_TLS_KEY', value: nodeTls.key },
      { name: 'CAIRN_NODE_TLS_CA', value: nodeTls.ca },
    ],
    ports: [{ name: 'shards', containerPort: cairnd.port, protocol: 'TCP' }],
    readinessProbe: { ...health, periodSeconds: 10, timeoutSeconds: 5 },
    livenessProbe: { ...health, initialDelaySeconds: 10, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 6 },
    resources: resources({ cpu: '250m', memory: '256Mi' }, { cpu: '2', memory: '1Gi' }),
    // Root, because the hostPath directory is root's (the kubelet creates it 0755); yet no
    // capabilities, so root here can write only what it owns.
    securityContext: { ...lockedDown, runAsUser: 0 },
    volumeMounts: [
      { name: 'data', mountPath: cairnd.dataDir },
      { ...identityMount, readOnly: true },
      nodeSecretMount,
      { name: 'node-tls', mountPath: nodeTls.mountDir, readOnly: true },
      ...etcdAccess.mounts,
      tmpMount,
    ],
  };
  return [
    new DaemonSet({
      metadata: meta(cairnd.name, component),
      spec: {
        selector: { matchLabels: selector },
        // One node at a time: a restarting node costs at most its own shards of each extent.
        updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
        template: {
          metadata: { labels: labels(cairnd.name, component) },
          spec: {
            serviceAccountName: cairnd.serviceAccount,
            automountServiceAccountToken: false,
            terminationGracePeriodSeconds: cairnd.terminationGraceS,
            securityContext: { seccompProfile: { type: 'RuntimeDefault' } },
            initContainers: [nodeIdentity],
            containers: [node],
            volumes: [
              { name: 'data', hostPath: { path: cairnd.hostDataDir, type: 'DirectoryOrCreate' } },
              ...identityVolumes,
              nodeSecretVolume,
              { name: 'node-tls', secret: { secretName: nodeTls.name, optional: false, defaultMode: 0o440 } },
              ...etcdAccess.volumes,
              tmpVolume,
            ],
          },
        },
      },
    }),
  ];
}
