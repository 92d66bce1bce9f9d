/**
 * Who may call the Kubernetes API: only cairnd's initContainer, and only to `get` Node objects
 * (for the zone label; see node_identity.ts). Every other Cairn pod runs as the `cairn`
 * ServiceAccount with no token mounted and no role bound.
 *
 * What it keeps true: least privilege. No wildcard, no list or watch, no Secret access; the
 * binding names one ServiceAccount. A ClusterRole because Nodes are cluster-scoped, and RBAC
 * cannot narrow `get` to "the node this pod runs on", so any node's labels are readable: labels
 * are not secret.
 */
import { ServiceAccount } from 'kubernetes-models/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { cairnd, namespace, nodeReaderRole, plainServiceAccount } from './config.js';
import { clusterMeta, meta } from './parts.js';

export function rbacObjects() {
  return [
    new ServiceAccount({ metadata: meta(plainServiceAccount, 'rbac'), automountServiceAccountToken: false }),
    // The token is projected into the one container that needs it, never automounted.
    new ServiceAccount({ metadata: meta(cairnd.serviceAccount, 'rbac'), automountServiceAccountToken: false }),
    new ClusterRole({
      metadata: clusterMeta(nodeReaderRole, 'rbac'),
      rules: [{ apiGroups: [''], resources: ['nodes'], verbs: ['get'] }],
    }),
    new ClusterRoleBinding({
      metadata: clusterMeta(nodeReaderRole, 'rbac'),
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: nodeReaderRole },
      subjects: [{ kind: 'ServiceAccount', name: cairnd.serviceAccount, namespace }],
    }),
  ];
}
