/**
 * The CSI driver on Kubernetes: the CSIDriver object, the controller (a Deployment running
 * `cairnctl csi serve --controller` next to the standard sidecars: external-provisioner,
 * external-snapshotter, external-resizer, livenessprobe; no external-attacher, since the driver
 * needs no ControllerPublish), the node plugin (a DaemonSet running `cairnctl csi serve --node`
 * with node-driver-registrar and livenessprobe), their RBAC, the default StorageClass and a
 * VolumeSnapshotClass.
 *
 * Why the node plugin is privileged: it attaches NBD devices (the kernel nbd-client needs
 * /dev/nbd* and the nbd module) and mounts filesystems into kubelet's directories, with
 * Bidirectional mount propagation so the pods see them. It attaches through the node's own
 * frontend (the frontend DaemonSet, a separate pod): restarting the CSI plugin never drops an
 * attached device, and its state under /run/cairn/csi lets a new plugin undo what an old one did.
 *
 * Topology: the node plugin starts after cairnd's identity initContainer (the node's
 * topology.kubernetes.io/zone label) and offers its zone; the controller runs with --topology, so
 * a StorageClass's allowedTopologies pins volumes to zones (no restriction pins nothing).
 *
 * What it leaves out: the VolumeSnapshot CRDs and snapshot-controller, which a cluster installs
 * once for every driver.
 */
import { Deployment, DaemonSet } from 'kubernetes-models/apps/v1';
import { ServiceAccount } from 'kubernetes-models/v1';
import type { IContainer, IVolume, IVolumeMount } from 'kubernetes-models/v1';
import { CSIDriver, StorageClass } from 'kubernetes-models/storage.k8s.io/v1';
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { cairnd, csi, frontend, image, init, kekSecret, namespace } from './config.js';
import { identityMount, identityVolumes, nodeIdentityContainer } from './cairnd.js';
import {
  shardClientAccess,
  clusterMeta,
  etcdAccess,
  labels,
  lockedDown,
  meta,
  nodeUserPod,
  resources,
  selectorLabels,
  shellCommand,
  type ObjectMeta,
  withNodeSecretCommand,
} from './parts.js';

const component = 'csi';

/** A VolumeSnapshotClass (snapshot.storage.k8s.io/v1, a CRD kubernetes-models does not ship): typed and checked here. */
export class VolumeSnapshotClass {
  readonly apiVersion = 'snapshot.storage.k8s.io/v1';
  readonly kind = 'VolumeSnapshotClass';
  constructor(
    readonly data: {
      readonly metadata: ObjectMeta;
      readonly driver: string;
      readonly deletionPolicy: 'Delete' | 'Retain';
      readonly parameters?: Record<string, string>;
    },
  ) {}
  get metadata(): ObjectMeta {
    return this.data.metadata;
  }
  validate(): void {
    if (!/^[a-z0-9.-]+$/.test(this.data.driver))
      throw new Error(`VolumeSnapshotClass: bad driver "${this.data.driver}"`);
    if (!['Delete', 'Retain'].includes(this.data.deletionPolicy))
      throw new Error(`VolumeSnapshotClass: bad deletionPolicy "${this.data.deletionPolicy}"`);
  }
  toJSON(): unknown {
    return { apiVersion: this.apiVersion, kind: this.kind, ...this.data };
  }
}

const socketVolume = (name: string): IVolumeMount => ({ name, mountPath: csi.socketDir });

/** A sidecar: pinned image, the socket (in volume `socket`), small resources, locked down. */
function sidecar(
  name: string,
  sidecarImage: string,
  args: string[],
  socket = 'socket-dir',
  mounts: IVolumeMount[] = [],
): IContainer {
  return {
    name,
    image: sidecarImage,
    imagePullPolicy: 'IfNotPresent',
    args,
    volumeMounts: [socketVolume(socket), ...mounts],
    resources: resources({ cpu: '10m', memory: '32Mi' }, { cpu: '200m', memory: '128Mi' }),
    securityContext: lockedDown,
  };
}

function controllerRbac() {
  const sa = csi.controllerServiceAccount;
  const subject = { kind: 'ServiceAccount', name: sa, namespace };
  const rule = (apiGroups: string[], resources: string[], verbs: string[]) => ({ apiGroups, resources, verbs });
  return [
    new ServiceAccount({ metadata: meta(sa, component) }),
    // What external-provisioner, external-snapshotter and external-resizer read and write.
    new ClusterRole({
      metadata: clusterMeta(csi.controllerRole, component),
      rules: [
        rule([''], ['persistentvolumes'], ['get', 'list', 'watch', 'create', 'delete', 'patch']),
        rule([''], ['persistentvolumeclaims'], ['get', 'list', 'watch', 'update']),
        rule([''], ['persistentvolumeclaims/status'], ['patch']),
        rule([''], ['events'], ['get', 'list', 'watch', 'create', 'update', 'patch']),
        rule([''], ['nodes', 'pods'], ['get', 'list', 'watch']),
        rule(['storage.k8s.io'], ['storageclasses', 'csinodes'], ['get', 'list', 'watch']),
        rule(['snapshot.storage.k8s.io'], ['volumesnapshots', 'volumesnapshotclasses'], ['get', 'list', 'watch']),
        rule(
          ['snapshot.storage.k8s.io'],
          ['volumesnapshotcontents'],
          ['get', 'list', 'watch', 'create', 'update', 'delete', 'patch'],
        ),
        rule(['snapshot.storage.k8s.io'], ['volumesnapshotcontents/status'], ['update', 'patch']),
      ],
    }),
    new ClusterRoleBinding({
      metadata: clusterMeta(csi.controllerRole, component),
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: csi.controllerRole },
      subjects: [subject],
    }),
    // Leader election of the sidecars (two controller replicas), in the cairn namespace only.
    new Role({
      metadata: meta(`${csi.controllerRole}-leases`, component),
      rules: [
        rule(['coordination.k8s.io'], ['leases'], ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete']),
      ],
    }),
    new RoleBinding({
      metadata: meta(`${csi.controllerRole}-leases`, component),
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: `${csi.controllerRole}-leases` },
      subjects: [subject],
    }),
  ];
}

function controller() {
  const controllerAccess = shardClientAccess('secret');
  const selector = selectorLabels(csi.controllerName);
  const common = [
    '--csi-address=' + csi.socket,
    '--leader-election',
    `--leader-election-namespace=${namespace}`,
    '--timeout=60s',
  ];
  return new Deployment({
    metadata: meta(csi.controllerName, component),
    spec: {
      replicas: 2,
      selector: { matchLabels: selector },
      template: {
        metadata: { labels: labels(csi.controllerName, component) },
        spec: {
          serviceAccountName: csi.controllerServiceAccount,
          securityContext: nodeUserPod,
          containers: [
            {
              name: 'cairn-csi',
              image,
              imagePullPolicy: 'IfNotPresent',
              command: withNodeSecretCommand,
              args: ['cairnctl', 'csi', 'serve', '--endpoint', `unix://${csi.socket}`, '--controller', '--topology'],
              env: controllerAccess.env,
              ports: [{ name: 'healthz', containerPort: csi.healthPorts.controller, protocol: 'TCP' }],
              livenessProbe: {
                httpGet: { path: '/healthz', port: 'healthz' },
                initialDelaySeconds: 10,
                periodSeconds: 20,
                failureThreshold: 3,
              },
              // Snapshots and grows of detached volumes attach them here for a moment.
              resources: resources({ cpu: '100m', memory: '256Mi' }, { cpu: '1', memory: '1Gi' }),
              securityContext: lockedDown,
              volumeMounts: [socketVolume('socket-dir'), ...controllerAccess.mounts],
            },
            // --extra-create-metadata: the PVC's namespace and name become volume labels for policy rules.
            sidecar('csi-provisioner', csi.images.provisioner, [
              ...common,
              '--extra-create-metadata',
              '--default-fstype=ext4',
              '--feature-gates=Topology=true',
            ]),
            sidecar('csi-snapshotter', csi.images.snapshotter, common),
            sidecar('csi-resizer', csi.images.resizer, common),
            sidecar('liveness-probe', csi.images.livenessprobe, [
              '--csi-address=' + csi.socket,
              `--health-port=${csi.healthPorts.controller}`,
            ]),
          ],
          volumes: [{ name: 'socket-dir', emptyDir: {} }, ...controllerAccess.volumes],
        },
      },
    },
  });
}

/**
 * The node plugin's start: its zone from the file the identity initContainer wrote (the Node's
 * topology.kubernetes.io/zone label), offered to the CO as topology.cairn.io/zone.
 */
export const csiNodeScript = ['set -eu', `read -r zone < ${cairnd.identityDir}/zone`, 'exec "$@" --zone "$zone"'].join(
  '\n',
);

export const csiNodeArgs = [
  'cairnctl',
  'csi',
  'serve',
  '--endpoint',
  `unix://${csi.socket}`,
  '--node',
  '--node-id',
  '$(NODE_NAME)',
  '--attach',
  'nbd-client',
  '--nbd',
  `nbd://${frontend.name}.${namespace}.svc:${frontend.port}`,
  '--state-dir',
  csi.stateDir,
  '--kek-dir',
  kekSecret.stagedDir,
];

function nodePlugin() {
  const selector = selectorLabels(csi.nodeName);
  const hostDir = (name: string, path: string, type: 'Directory' | 'DirectoryOrCreate'): IVolume => ({
    name,
    hostPath: { path, type },
  });
  return new DaemonSet({
    metadata: meta(csi.nodeName, component),
    spec: {
      selector: { matchLabels: selector },
      // Like the frontend: a restart never drops a device (nbdfuse/nbd-client outlive it), but
      // an operator still chooses when.
      updateStrategy: { type: 'OnDelete' },
      template: {
        metadata: { labels: labels(csi.nodeName, component) },
        spec: {
          // The cairnd ServiceAccount (get nodes), its token for the identity initContainer only.
          serviceAccountName: cairnd.serviceAccount,
          automountServiceAccountToken: false,
          initContainers: [nodeIdentityContainer()],
          containers: [
            {
              name: 'cairn-csi',
              image,
              imagePullPolicy: 'IfNotPresent',
              command: shellCommand('cairn-csi', csiNodeScript),
              args: csiNodeArgs,
              env: [...etcdAccess.env, { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }],
              ports: [{ name: 'healthz', containerPort: csi.healthPorts.node, protocol: 'TCP' }],
              livenessProbe: {
                httpGet: { path: '/healthz', port: 'healthz' },
                initialDelaySeconds: 10,
                periodSeconds: 20,
                failureThreshold: 3,
              },
              resources: resources({ cpu: '50m', memory: '128Mi' }, { cpu: '500m', memory: '512Mi' }),
              // Attaching NBD devices and mounting into kubelet's directories need it.
              securityContext: { privileged: true, runAsUser: 0, allowPrivilegeEscalation: true },
              volumeMounts: [
                { ...identityMount, readOnly: true },
                { name: 'plugin-dir', mountPath: csi.socketDir },
                { name: 'kubelet-dir', mountPath: csi.kubeletDir, mountPropagation: 'Bidirectional' as const },
                { name: 'dev', mountPath: '/dev' },
                { name: 'state', mountPath: csi.stateDir },
                { name: 'staged-kek', mountPath: kekSecret.stagedDir },
                { name: 'modules', mountPath: '/lib/modules', readOnly: true },
                ...etcdAccess.mounts,
              ],
            },
            // The sidecars find the socket in the plugin directory, as kubelet does.
            sidecar(
              'node-driver-registrar',
              csi.images.registrar,
              ['--csi-address=' + csi.socket, `--kubelet-registration-path=${csi.pluginDir}/csi.sock`],
              'plugin-dir',
              [{ name: 'registration-dir', mountPath: '/registration' }],
            ),
            sidecar(
              'liveness-probe',
              csi.images.livenessprobe,
              ['--csi-address=' + csi.socket, `--health-port=${csi.healthPorts.node}`],
              'plugin-dir',
            ),
          ],
          volumes: [
            ...identityVolumes,
            hostDir('plugin-dir', csi.pluginDir, 'DirectoryOrCreate'),
            hostDir('registration-dir', csi.registrationDir, 'Directory'),
            hostDir('kubelet-dir', csi.kubeletDir, 'Directory'),
            hostDir('dev', '/dev', 'Directory'),
            hostDir('state', csi.stateDir, 'DirectoryOrCreate'),
            hostDir('staged-kek', kekSecret.stagedDir, 'DirectoryOrCreate'),
            ...etcdAccess.volumes,
            hostDir('modules', '/lib/modules', 'Directory'),
          ],
        },
      },
    },
  });
}

export function csiObjects() {
  return [
    new CSIDriver({
      metadata: clusterMeta(csi.driver, component),
      spec: {
        attachRequired: false,
        podInfoOnMount: false,
        volumeLifecycleModes: ['Persistent'],
        fsGroupPolicy: 'File',
      },
    }),
    ...controllerRbac(),
    controller(),
    nodePlugin(),
    new StorageClass({
      metadata: {
        ...clusterMeta(csi.storageClass, component),
        annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' },
      },
      provisioner: csi.driver,
      parameters: { profile: init.profile, 'csi.storage.k8s.io/fstype': 'ext4' },
      reclaimPolicy: 'Delete',
      allowVolumeExpansion: true,
      volumeBindingMode: 'WaitForFirstConsumer',
    }),
    new VolumeSnapshotClass({
      metadata: clusterMeta(csi.snapshotClass, component),
      driver: csi.driver,
      deletionPolicy: 'Delete',
    }),
  ];
}
