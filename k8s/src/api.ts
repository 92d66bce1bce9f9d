/**
 * The control-plane API and dashboard, `cairnctl api serve` (docs/api.md, docs/dashboard.md), as
 * a Deployment of two replicas behind the `cairn-api` ClusterIP Service on port 8080.
 *
 * What it keeps true: the replicas are interchangeable (tokens, volumes and the audit log live in
 * etcd), so the Service may send any request to either and a rolling update never takes the API
 * away; /healthz answers 200 only while etcd does, so a replica cut off from etcd leaves the
 * Service. It reaches etcd, the storage nodes and S3 like the repairer does, because a drain, a
 * repair pass and a snapshot of a detached volume run in it; with the optional key-encryption
 * keys it can snapshot encrypted volumes too.
 * What it leaves out: TLS on port 8080 (put an Ingress or a mesh in front, or add --tls-cert and
 * --tls-key from a Secret) and an Ingress itself: exposing the API outside the cluster is the
 * operator's choice.
 */
import { Deployment } from 'kubernetes-models/apps/v1';
import { Service } from 'kubernetes-models/v1';
import { image } from './config.js';
import {
  shardClientAccess,
  labels,
  lockedDown,
  meta,
  noApiAccess,
  nodeUserPod,
  resources,
  selectorLabels,
  withNodeSecretCommand,
} from './parts.js';

export const api = {
  name: 'cairn-api',
  port: 8080,
  replicas: 2,
} as const;

const component = 'api';

export const apiArgs = ['cairnctl', 'api', 'serve', '--listen', `0.0.0.0:${api.port}`];

export function apiObjects() {
  const access = shardClientAccess('secret');
  const selector = selectorLabels(api.name);
  const healthz = { httpGet: { path: '/healthz', port: 'http' } } as const;
  return [
    new Service({
      metadata: meta(api.name, component),
      spec: {
        type: 'ClusterIP',
        selector,
        ports: [{ name: 'http', port: api.port, targetPort: 'http', protocol: 'TCP' }],
      },
    }),
    new Deployment({
      metadata: meta(api.name, component),
      spec: {
        replicas: api.replicas,
        selector: { matchLabels: selector },
        // One replica at a time: the other keeps serving.
        strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 1 } },
        template: {
          metadata: { labels: labels(api.name, component) },
          spec: {
            ...noApiAccess,
            securityContext: nodeUserPod,
            containers: [
              {
                name: 'api',
                image,
                imagePullPolicy: 'IfNotPresent',
                command: withNodeSecretCommand,
                args: apiArgs,
                env: access.env,
                ports: [{ name: 'http', containerPort: api.port, protocol: 'TCP' }],
                readinessProbe: { ...healthz, periodSeconds: 5, failureThreshold: 2 },
                livenessProbe: { ...healthz, initialDelaySeconds: 10, periodSeconds: 20, failureThreshold: 3 },
                // Requests are small; a drain or repair pass started here runs the codec pool.
                resources: resources({ cpu: '100m', memory: '128Mi' }, { cpu: '2', memory: '1Gi' }),
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
