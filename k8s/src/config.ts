/**
 * The names, ports, paths and sizes the Cairn manifests share. One object refers to another by
 * name (a DaemonSet mounts a Secret, a ConfigMap points at a Service), so each name is written
 * once, here, and a renamed object cannot leave a dangling reference behind.
 *
 * What it keeps true: the image tag is the package version (a test compares them), so a release
 * bump makes the committed YAML stale until it is regenerated. Paths inside containers match the
 * image built by k8s/Dockerfile.
 *
 * What it leaves out: anything a user tunes per cluster beyond sizes (they edit the YAML or
 * these constants and regenerate; docs/kubernetes.md says which).
 */

/** Every namespaced object lives here; the Namespace itself is generated too. */
export const namespace = 'cairn';

/**
 * The Cairn image, built by the user from k8s/Dockerfile (there is no public registry). The tag
 * is pinned, never `latest`, so every node runs the same code and `IfNotPresent` never pulls.
 */
export const imageName = 'cairn';
export const imageTag = '0.1.0';
export const image = `${imageName}:${imageTag}`;
/** Where the Dockerfile puts the package; the binaries are also on PATH as cairnctl and cairnd. */
export const imageAppDir = '/opt/cairn';

/**
 * etcd from its maintainers' image. 3.5 because Cairn needs 3.4+ and 3.5 serves
 * `/health?serializable=true`, a liveness check that does not need quorum (kubeadm uses it too).
 */
export const etcdImage = 'quay.io/coreos/etcd:v3.5.17';

/** Labels every object carries, so `kubectl get all -l app.kubernetes.io/part-of=cairn` finds them. */
export const partOf = 'cairn';

export const etcd = {
  /** StatefulSet name; its members are cairn-etcd-0, cairn-etcd-1, ... */
  name: 'cairn-etcd',
  /** Headless Service giving each member a stable DNS name for peer traffic. */
  peerService: 'cairn-etcd-peer',
  /** ClusterIP Service clients use: CAIRN_ETCD points here. */
  clientService: 'cairn-etcd',
  /** Three members survive the loss of one (a quorum is two); five would survive two. */
  replicas: 3,
  clientPort: 2379,
  peerPort: 2380,
  /** Metrics and /health on their own listener, so probes never touch the client port. */
  metricsPort: 2381,
  storage: '10Gi',
  /**
   * A subdirectory of the volume: etcd wants its data directory mode 0700 and creates it so,
   * while the volume's root belongs to the fsGroup and is group-writable.
   */
  dataDir: '/var/lib/etcd/data',
  /** Non-root user of the distroless etcd image. */
  uid: 65532,
} as const;

/** The client URL every Cairn process uses unless the ConfigMap is edited for an external etcd. */
export const etcdClientUrl = `https://${etcd.clientService}.${namespace}.svc:${etcd.clientPort}`;

/**
 * etcd's own certificate, for clients and for its peers: a `kubernetes.io/tls` Secret (tls.crt,
 * tls.key, ca.crt) whose certificate names every member (`*.cairn-etcd-peer.cairn.svc`) and the
 * client Service (`cairn-etcd.cairn.svc`), for both server and client auth (members are each
 * other's clients). Clients and peers must present a certificate its ca.crt signed. Required.
 */
export const etcdServerTls = {
  name: 'cairn-etcd-tls',
  mountDir: '/etc/etcd/tls',
  cert: '/etc/etcd/tls/tls.crt',
  key: '/etc/etcd/tls/tls.key',
  ca: '/etc/etcd/tls/ca.crt',
} as const;

/** ConfigMap of settings shared by every Cairn process; `CAIRN_ETCD` is the only one so far. */
export const configMapName = 'cairn-config';
export const etcdEnvKey = 'CAIRN_ETCD';

export const cairnd = {
  name: 'cairnd',
  serviceAccount: 'cairnd',
  /** The shard API port (cairnd --listen); docs/operations.md uses the same. */
  port: 4100,
  /** hostPath on every node: shards outlive the pod, as they must outlive a cairnd restart. */
  hostDataDir: '/var/lib/cairn',
  /** Where the container sees it (cairnd --data-dir). */
  dataDir: '/var/lib/cairn',
  /** The initContainer writes `name` and `zone` here; the cairnd container reads them. */
  identityDir: '/run/cairn/identity',
  /** Where the initContainer alone finds its API token and the cluster CA. */
  tokenDir: '/var/run/secrets/kubernetes.io/serviceaccount',
  /** Above cairnd's 10 s drain, so it revokes its lease before the kubelet's SIGKILL. */
  terminationGraceS: 30,
} as const;

export const frontend = {
  name: 'cairn-frontend',
  /** IANA's NBD port; the kernel nbd-client defaults to it. */
  port: 10809,
  /** Long enough for the write-back cache to flush on SIGTERM. */
  terminationGraceS: 60,
  /** --final-flush-retry: well inside the grace period above. */
  finalFlushRetryMs: 45_000,
} as const;

/** The ServiceAccount for pods that need no Kubernetes API access at all. */
export const plainServiceAccount = 'cairn';
/** The one ClusterRole: read Node objects, for the zone label. */
export const nodeReaderRole = 'cairn-node-reader';

/** S3 credentials: a JSON file in a Secret, read through CAIRN_S3_CREDENTIALS_FILE. */
export const s3Secret = {
  name: 'cairn-s3-credentials',
  key: 's3.json',
  mountDir: '/etc/cairn/s3',
  file: '/etc/cairn/s3/s3.json',
  envKey: 'CAIRN_S3_CREDENTIALS_FILE',
} as const;

/**
 * Key-encryption keys of encrypted volumes (docs/encryption.md): an optional Secret, one KEK per
 * entry, read through CAIRN_KEK_DIR by the processes that attach volumes (the frontend, the CSI
 * controller). Absent: encrypted volumes are refused at attach, naming the key they need.
 */
export const kekSecret = {
  name: 'cairn-kek',
  mountDir: '/etc/cairn/kek',
  envKey: 'CAIRN_KEK_DIR',
  /**
   * A host directory where the CSI node plugin puts a volume's key from its node-stage secret
   * while the volume is staged; the frontend on the same node reads it too.
   */
  stagedDir: '/run/cairn/kek',
} as const;

/** The shared secret storage nodes require (cairnd --auth-secret-file, clients CAIRN_NODE_SECRET_FILE). */
export const nodeSecret = {
  name: 'cairn-node-secret',
  key: 'secret',
  mountDir: '/etc/cairn/node-secret',
  file: '/etc/cairn/node-secret/secret',
  envKey: 'CAIRN_NODE_SECRET_FILE',
} as const;

/**
 * cairnd's TLS: a `kubernetes.io/tls` Secret (tls.crt, tls.key and ca.crt, as cert-manager
 * writes it) whose certificate names `serverName`; clients check every node against that name
 * (CAIRN_NODE_TLS_SERVER_NAME), since pod IPs are not known when the certificate is made. The CA
 * in it signs the client certificates cairnd accepts (--tls-ca). Required: cairnd does not start
 * without it.
 */
export const nodeTls = {
  name: 'cairn-node-tls',
  mountDir: '/etc/cairn/node-tls',
  cert: '/etc/cairn/node-tls/tls.crt',
  key: '/etc/cairn/node-tls/tls.key',
  ca: '/etc/cairn/node-tls/ca.crt',
  serverName: 'cairnd.cairn.svc',
} as const;

/**
 * The client certificate frontends, repairers and the CSI controller present to cairnd: a
 * `kubernetes.io/tls` Secret with ca.crt (the CA that signed the nodes' certificate). Required.
 */
export const clientTls = {
  name: 'cairn-client-tls',
  mountDir: '/etc/cairn/client-tls',
  cert: '/etc/cairn/client-tls/tls.crt',
  key: '/etc/cairn/client-tls/tls.key',
  ca: '/etc/cairn/client-tls/ca.crt',
} as const;

/**
 * etcd client credentials every Cairn process reads through CAIRN_ETCD_CREDENTIALS_DIR: ca.crt,
 * tls.crt and tls.key (the bundled etcd requires a client certificate), and optionally username
 * and password (etcd authentication). Required.
 */
export const etcdClientSecret = {
  name: 'cairn-etcd-client',
  mountDir: '/etc/cairn/etcd-client',
  envKey: 'CAIRN_ETCD_CREDENTIALS_DIR',
} as const;

/** `cairnctl init` settings for the init Job: Cairn's defaults (4+2 needs six targets). */
export const init = {
  jobName: 'cairn-init',
  profile: '4+2',
  extentSize: '4MiB',
  zonesRequired: 1,
  targets: 'any',
} as const;

/** The example volume: 2+1 so that it fits on three storage nodes. */
export const example = {
  volume: 'example',
  size: '1GiB',
  profile: '2+1',
  jobName: 'cairn-example-volume',
  podName: 'cairn-example-nbd',
  mountDir: '/mnt/example',
} as const;

/** The well-known node label the zone comes from. */
export const zoneLabel = 'topology.kubernetes.io/zone';

/**
 * The CSI driver (`cairnctl csi serve`): its controller Deployment with the standard sidecars,
 * its node plugin DaemonSet, and the StorageClass and VolumeSnapshotClass users name.
 */
export const csi = {
  driver: 'csi.cairn.io',
  controllerName: 'cairn-csi-controller',
  controllerServiceAccount: 'cairn-csi-controller',
  controllerRole: 'cairn-csi-controller',
  nodeName: 'cairn-csi-node',
  /** The socket inside each pod (an emptyDir in the controller, the plugin dir on nodes). */
  socketDir: '/csi',
  socket: '/csi/csi.sock',
  kubeletDir: '/var/lib/kubelet',
  /** Where kubelet finds the node plugin's socket (--kubelet-registration-path). */
  pluginDir: '/var/lib/kubelet/plugins/csi.cairn.io',
  registrationDir: '/var/lib/kubelet/plugins_registry',
  /** The node plugin's record of staged volumes (csi serve --state-dir): gone with a reboot, as its devices are. */
  stateDir: '/run/cairn/csi',
  storageClass: 'cairn',
  snapshotClass: 'cairn',
  /** The Kubernetes CSI sidecars, pinned. */
  images: {
    provisioner: 'registry.k8s.io/sig-storage/csi-provisioner:v5.1.0',
    snapshotter: 'registry.k8s.io/sig-storage/csi-snapshotter:v8.2.0',
    resizer: 'registry.k8s.io/sig-storage/csi-resizer:v1.12.0',
    registrar: 'registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.12.0',
    livenessprobe: 'registry.k8s.io/sig-storage/livenessprobe:v2.14.0',
  },
  /** The liveness probe sidecars' ports (controller, node). */
  healthPorts: { controller: 9808, node: 9809 },
} as const;

/** The example database on a Cairn PersistentVolumeClaim. */
export const postgresExample = {
  name: 'cairn-example-postgres',
  image: 'postgres:16.6-bookworm',
  size: '10Gi',
  /** The postgres image's user. */
  uid: 999,
} as const;
