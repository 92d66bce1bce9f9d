/**
 * The frontend, `cairnctl nbd serve`, as a DaemonSet with a node-local Service: every host runs
 * its own volume engine, write-back cache and NBD server, and an NBD client on a host talks to
 * the frontend on that host.
 *
 * Why per host rather than a Deployment behind a Service:
 * - The NBD link carries every block read and write and has no authentication or TLS here; on
 *   the same host it costs no network hop and never leaves the machine. Shard traffic to the
 *   storage nodes is the only cross-host traffic, as in the design.
 * - Failure domains line up: a host's frontend dies with the host whose pods use it, and the
 *   fenced volume lock lets another host's frontend take the volume over.
 * - The write-back cache is memory on the host that writes.
 * The Service has `internalTrafficPolicy: Local`: connections go only to the frontend on the
 * client's own node, and fail when it is absent rather than quietly crossing the network.
 *
 * What it keeps true: updates are `OnDelete`. Restarting a frontend cuts every NBD connection
 * on its host (the kernel then fails I/O), so an operator restarts one host's frontend after
 * moving that host's volume users away, never a rolling update that does it for them.
 *
 * The CSI node plugin (csi.ts) attaches volumes through this frontend; example.ts shows the
 * direct way, an NBD client in a pod.
 */
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { Service } from 'kubernetes-models/v1';
import { frontend, image } from './config.js';
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

const component = 'frontend';

/**
 * The frontend's command line (run under withNodeSecretScript). A final flush that keeps failing
 * is retried for 45 s, not the default 120: a SIGTERMed pod is killed after its 60 s grace, and
 * it should say what it could not flush (log line, metric) before that, not be cut off mid-retry.
 */
export const frontendArgs = [
  'cairnctl',
  'nbd',
  'serve',
  '--listen',
  `0.0.0.0:${frontend.port}`,
  '--final-flush-retry',
  String(frontend.finalFlushRetryMs),
];

export function frontendObjects() {
  const access = shardClientAccess('staged');
  const selector = selectorLabels(frontend.name);
  // A TCP connect proves the server accepts clients. The probe leaves during the handshake,
  // which an NBD server must survive anyway.
  const listening = { tcpSocket: { port: 'nbd' } } as const;
  return [
    new Service({
      metadata: meta(frontend.name, component),
      spec: {
        type: 'ClusterIP',
        internalTrafficPolicy: 'Local',
        selector,
        ports: [{ name: 'nbd', port: frontend.port, targetPort: 'nbd', protocol: 'TCP' }],
      },
    }),
    new DaemonSet({
      metadata: meta(frontend.name, component),
      spec: {
        selector: { matchLabels: selector },
        updateStrategy: { type: 'OnDelete' },
        template: {
          metadata: { labels: labels(frontend.name, component) },
          spec: {
            ...noApiAccess,
            terminationGracePeriodSeconds: frontend.terminationGraceS,
            securityContext: nodeUserPod,
            containers: [
              {
                name: 'frontend',
                image,
                imagePullPolicy: 'IfNotPresent',
                command: withNodeSecretCommand,
                args: frontendArgs,
                env: access.env,
                ports: [{ name: 'nbd', containerPort: frontend.port, protocol: 'TCP' }],
                readinessProbe: { ...listening, periodSeconds: 10 },
                livenessProbe: { ...listening, initialDelaySeconds: 10, periodSeconds: 20, failureThreshold: 3 },
                // The cache holds up to 512 MiB per attached volume (--cache-size, of which
                // --dirty-max 256 MiB dirty): 4 GiB is room for about seven busy volumes. An
                // out-of-memory kill cuts every NBD connection on the host, so size it for the
                // host's volumes, or lower --cache-size. Codec workers use one thread per core.
                resources: resources({ cpu: '250m', memory: '512Mi' }, { cpu: '2', memory: '4Gi' }),
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
