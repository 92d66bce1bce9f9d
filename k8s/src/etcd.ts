/**
 * etcd for Cairn's metadata: a 3-member StatefulSet, a headless Service for peer traffic, a
 * ClusterIP Service for clients, and a PodDisruptionBudget keeping a quorum up during drains.
 *
 * What it keeps true:
 * - Members have stable names (cairn-etcd-0..2) and DNS names through the headless Service, so
 *   the static `--initial-cluster` list built here is right on every start; the Service
 *   publishes members before they are ready, because a member is not ready until its peers
 *   find it.
 * - Members start in parallel: with ordered start, member 0 would wait for a readiness that
 *   needs a quorum it cannot have alone.
 * - Liveness asks `/health?serializable=true`, answered without quorum, so losing quorum never
 *   makes the kubelet restart healthy members (which would make it worse). Readiness asks plain
 *   `/health`, so the client Service sends clients only to members in a quorum.
 * - Voluntary evictions leave at least a quorum running (the PDB).
 *
 * - TLS on the client and peer ports, with certificates required of both clients and peers, from
 *   the cairn-etcd-tls Secret; the metrics port (health probes) stays plain HTTP.
 *
 * What it leaves out: etcd users (client certificates authenticate; docs/kubernetes.md shows
 * adding a user and password), backups, and changing the member count (the list is static;
 * scaling needs `etcdctl member add`). docs/kubernetes.md says how to use an external etcd.
 */
import { Service } from 'kubernetes-models/v1';
import { StatefulSet } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { etcd, etcdImage, etcdServerTls, namespace, plainServiceAccount, zoneLabel } from './config.js';
import { labels, lockedDown, meta, resources, selectorLabels } from './parts.js';

const component = 'etcd';
/** Members that form a quorum: a majority, 3 -> 2 (so one may be down). */
const quorum = Math.floor(etcd.replicas / 2) + 1;

/** DNS name of member i through the headless Service (resolved with the pod's search path). */
function memberHost(i: number): string {
  return `${etcd.name}-${i}.${etcd.peerService}.${namespace}.svc`;
}

/** `cairn-etcd-0=https://cairn-etcd-0.cairn-etcd-peer.cairn.svc:2380,...` */
export function initialCluster(): string {
  return Array.from(
    { length: etcd.replicas },
    (_, i) => `${etcd.name}-${i}=https://${memberHost(i)}:${etcd.peerPort}`,
  ).join(',');
}

export function etcdObjects() {
  const selector = selectorLabels(etcd.name);
  // $(POD_NAME) (cairn-etcd-0, ...) is expanded by Kubernetes from the env below: the image
  // has no shell.
  const self = `$(POD_NAME).${etcd.peerService}.${namespace}.svc`;
  return [
    new Service({
      metadata: meta(etcd.peerService, component, false),
      spec: {
        clusterIP: 'None',
        publishNotReadyAddresses: true,
        selector,
        ports: [
          { name: 'peer', port: etcd.peerPort, targetPort: 'peer' },
          { name: 'client', port: etcd.clientPort, targetPort: 'client' },
        ],
      },
    }),
    new Service({
      metadata: meta(etcd.clientService, component, false),
      spec: {
        type: 'ClusterIP',
        selector,
        ports: [{ name: 'client', port: etcd.clientPort, targetPort: 'client' }],
      },
    }),
    new StatefulSet({
      metadata: meta(etcd.name, component, false),
      spec: {
        serviceName: etcd.peerService,
        replicas: etcd.replicas,
        podManagementPolicy: 'Parallel',
        selector: { matchLabels: selector },
        template: {
          metadata: { labels: labels(etcd.name, component, false) },
          spec: {
            serviceAccountName: plainServiceAccount,
            automountServiceAccountToken: false,
            securityContext: {
              runAsNonRoot: true,
              runAsUser: etcd.uid,
              runAsGroup: etcd.uid,
              fsGroup: etcd.uid,
              fsGroupChangePolicy: 'OnRootMismatch',
              seccompProfile: { type: 'RuntimeDefault' },
            },
            // One member per node (hard), and over zones where there are several (soft): a
            // quorum should outlive a node, and ideally a zone.
            topologySpreadConstraints: [
              {
                maxSkew: 1,
                topologyKey: 'kubernetes.io/hostname',
                whenUnsatisfiable: 'DoNotSchedule',
                labelSelector: { matchLabels: selector },
              },
              {
                maxSkew: 1,
                topologyKey: zoneLabel,
                whenUnsatisfiable: 'ScheduleAnyway',
                labelSelector: { matchLabels: selector },
              },
            ],
            containers: [
              {
                name: 'etcd',
                image: etcdImage,
                imagePullPolicy: 'IfNotPresent',
                command: ['/usr/local/bin/etcd'],
                args: [
                  '--name=$(POD_NAME)',
                  `--data-dir=${etcd.dataDir}`,
                  `--listen-peer-urls=https://0.0.0.0:${etcd.peerPort}`,
                  `--listen-client-urls=https://0.0.0.0:${etcd.clientPort}`,
                  `--listen-metrics-urls=http://0.0.0.0:${etcd.metricsPort}`,
                  `--advertise-client-urls=https://${self}:${etcd.clientPort}`,
                  `--initial-advertise-peer-urls=https://${self}:${etcd.peerPort}`,
                  // Clients and peers alike need a certificate the cluster CA signed.
                  `--cert-file=${etcdServerTls.cert}`,
                  `--key-file=${etcdServerTls.key}`,
                  `--trusted-ca-file=${etcdServerTls.ca}`,
                  '--client-cert-auth',
                  `--peer-cert-file=${etcdServerTls.cert}`,
                  `--peer-key-file=${etcdServerTls.key}`,
                  `--peer-trusted-ca-file=${etcdServerTls.ca}`,
                  // etcd itself accepts TLS 1.2 or newer only (etcd-io/etcd#5541).
                  '--peer-client-cert-auth',
                  `--initial-cluster=${initialCluster()}`,
                  '--initial-cluster-state=new',
                  `--initial-cluster-token=${etcd.name}`,
                  // docs/operations.md: a long-running cluster needs compaction.
                  '--auto-compaction-mode=revision',
                  '--auto-compaction-retention=1000',
                ],
                env: [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
                ports: [
                  { name: 'client', containerPort: etcd.clientPort },
                  { name: 'peer', containerPort: etcd.peerPort },
                  { name: 'metrics', containerPort: etcd.metricsPort },
                ],
                startupProbe: {
                  httpGet: { path: '/health?serializable=true', port: 'metrics' },
                  periodSeconds: 5,
                  failureThreshold: 60,
                },
                livenessProbe: {
                  httpGet: { path: '/health?exclude=NOSPACE&serializable=true', port: 'metrics' },
                  periodSeconds: 10,
                  timeoutSeconds: 5,
                  failureThreshold: 6,
                },
                readinessProbe: {
                  httpGet: { path: '/health', port: 'metrics' },
                  periodSeconds: 5,
                  timeoutSeconds: 5,
                },
                resources: resources({ cpu: '250m', memory: '512Mi' }, { cpu: '1', memory: '2Gi' }),
                securityContext: lockedDown,
                volumeMounts: [
                  { name: 'data', mountPath: '/var/lib/etcd' },
                  { name: 'tls', mountPath: etcdServerTls.mountDir, readOnly: true },
                ],
              },
            ],
            volumes: [{ name: 'tls', secret: { secretName: etcdServerTls.name, optional: false, defaultMode: 0o440 } }],
          },
        },
        volumeClaimTemplates: [
          {
            // The cluster's default StorageClass; etcd wants low-latency fsync, so prefer SSD.
            metadata: { name: 'data', labels: labels(etcd.name, component, false) },
            spec: {
              accessModes: ['ReadWriteOnce'],
              resources: { requests: { storage: etcd.storage } },
            },
          },
        ],
      },
    }),
    new PodDisruptionBudget({
      metadata: meta(etcd.name, component, false),
      spec: { minAvailable: quorum, selector: { matchLabels: selector } },
    }),
  ];
}
