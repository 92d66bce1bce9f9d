/**
 * The background repairer: `cairnctl repair --daemon`, which rebuilds shards lost with a node,
 * moves shards off draining nodes, and runs a slow scrub once a day.
 *
 * What it keeps true: two replicas, one working. The daemons elect a leader through an etcd
 * lease (cairn/v1/repair/leader), so the second replica is a hot standby that takes over within
 * the lease TTL when the leader's pod dies, never a second writer. It needs no Kubernetes API
 * access; it reads the targets from etcd and reaches nodes and S3 like a frontend does.
 */
import { Deployment } from 'kubernetes-models/apps/v1';
import { image } from './config.js';
import {
  shardClientAccess,
  labels,
  lockedDown,
  meta,
  noApiAccess,
  nodeUserPod,
  resources,
  withNodeSecretCommand,
} from './parts.js';

const name = 'cairn-repairer';
const component = 'repairer';

export const repairerArgs = [
  'cairnctl',
  'repair',
  '--daemon',
  '--interval',
  '30000',
  '--max-bytes-per-second',
  '100MiB',
  '--scrub-rate',
  '10MiB',
];

export function repairerObjects() {
  const access = shardClientAccess('none');
  return [
    new Deployment({
      metadata: meta(name, component),
      spec: {
        replicas: 2,
        selector: { matchLabels: labels(name, component) },
        template: {
          metadata: { labels: labels(name, component) },
          spec: {
            ...noApiAccess,
            securityContext: nodeUserPod,
            containers: [
              {
                name: 'repairer',
                image,
                imagePullPolicy: 'IfNotPresent',
                command: withNodeSecretCommand,
                args: repairerArgs,
                env: access.env,
                // The codec pool and a few extents in flight: about 300 MiB at most.
                resources: resources({ cpu: '100m', memory: '256Mi' }, { cpu: '2', memory: '1Gi' }),
                securityContext: lockedDown,
                volumeMounts: access.mounts,
              },
            ],
            volumes: access.volumes,
          },
        },
      },
    }),
  ];
}
