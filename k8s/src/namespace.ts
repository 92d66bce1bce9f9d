/**
 * The `cairn` Namespace and the ConfigMap every Cairn process reads its etcd endpoints from.
 *
 * What it keeps true: the ConfigMap's CAIRN_ETCD names the in-cluster etcd client Service; to
 * use an external etcd, change that one value (comma-separated URLs) and skip etcd.yaml.
 * The Namespace enforces the `privileged` Pod Security level because it must: cairnd keeps
 * shards on a hostPath, and the example pod drives the kernel NBD client. Each pod still asks
 * only for what it uses (see the securityContext of each).
 */
import { ConfigMap, Namespace } from 'kubernetes-models/v1';
import { configMapName, etcdClientUrl, etcdEnvKey, namespace } from './config.js';
import { clusterMeta, meta } from './parts.js';

export function namespaceObjects() {
  const base = clusterMeta(namespace, 'namespace');
  return [
    new Namespace({
      metadata: {
        ...base,
        labels: {
          ...base.labels,
          'pod-security.kubernetes.io/enforce': 'privileged',
          // Warn on what a baseline namespace would refuse, so the exceptions stay visible.
          'pod-security.kubernetes.io/warn': 'baseline',
        },
      },
    }),
  ];
}

export function configObjects() {
  return [
    new ConfigMap({
      metadata: meta(configMapName, 'config'),
      data: { [etcdEnvKey]: etcdClientUrl },
    }),
  ];
}
