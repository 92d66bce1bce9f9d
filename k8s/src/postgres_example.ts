/**
 * An example database on Cairn: PostgreSQL as a StatefulSet whose data directory is a
 * PersistentVolumeClaim of the `cairn` StorageClass (provisioned, staged and mounted by the CSI
 * driver). Not in all.yaml: apply it once the driver runs (docs/kubernetes.md walks through it).
 *
 * The password is a Secret the user creates (`kubectl create secret generic
 * cairn-example-postgres --from-literal=password=...`); the pod refuses to start without it
 * rather than running with a default.
 */
import { StatefulSet } from 'kubernetes-models/apps/v1';
import { Service } from 'kubernetes-models/v1';
import { csi, postgresExample } from './config.js';
import { labels, lockedDown, meta, resources, selectorLabels } from './parts.js';

const component = 'example';

export function postgresExampleObjects() {
  const { name } = postgresExample;
  const selector = selectorLabels(name);
  return [
    new Service({
      metadata: meta(name, component),
      spec: { clusterIP: 'None', selector, ports: [{ name: 'postgres', port: 5432, targetPort: 'postgres' }] },
    }),
    new StatefulSet({
      metadata: meta(name, component),
      spec: {
        serviceName: name,
        replicas: 1,
        selector: { matchLabels: selector },
        template: {
          metadata: { labels: labels(name, component) },
          spec: {
            automountServiceAccountToken: false,
            securityContext: {
              runAsNonRoot: true,
              runAsUser: postgresExample.uid,
              runAsGroup: postgresExample.uid,
              fsGroup: postgresExample.uid,
              seccompProfile: { type: 'RuntimeDefault' },
            },
            containers: [
              {
                name: 'postgres',
                image: postgresExample.image,
                imagePullPolicy: 'IfNotPresent',
                env: [
                  {
                    name: 'POSTGRES_PASSWORD',
                    valueFrom: { secretKeyRef: { name, key: 'password' } },
                  },
                  // A directory below the mount point: the filesystem's lost+found stays out of it.
                  { name: 'PGDATA', value: '/var/lib/postgresql/data/pgdata' },
                ],
                ports: [{ name: 'postgres', containerPort: 5432, protocol: 'TCP' }],
                readinessProbe: { exec: { command: ['pg_isready', '-U', 'postgres'] }, periodSeconds: 10 },
                livenessProbe: {
                  exec: { command: ['pg_isready', '-U', 'postgres'] },
                  initialDelaySeconds: 30,
                  periodSeconds: 20,
                },
                resources: resources({ cpu: '250m', memory: '512Mi' }, { cpu: '2', memory: '2Gi' }),
                securityContext: lockedDown,
                volumeMounts: [
                  { name: 'data', mountPath: '/var/lib/postgresql/data' },
                  { name: 'run', mountPath: '/var/run/postgresql' },
                  { name: 'tmp', mountPath: '/tmp' },
                ],
              },
            ],
            volumes: [
              { name: 'run', emptyDir: {} },
              { name: 'tmp', emptyDir: { sizeLimit: '64Mi' } },
            ],
          },
        },
        volumeClaimTemplates: [
          {
            metadata: { name: 'data', labels: labels(name, component, false) },
            spec: {
              accessModes: ['ReadWriteOnce'],
              storageClassName: csi.storageClass,
              resources: { requests: { storage: postgresExample.size } },
            },
          },
        ],
      },
    }),
  ];
}
