/**
 * The whole set of Cairn manifests: which objects go in which k8s/*.yaml file, in apply order,
 * and how they are rendered. build.ts writes them; test/unit/k8s/manifests.test.ts renders them
 * again in memory and compares, so the committed YAML never drifts from these sources.
 *
 * What it keeps true: rendering is deterministic (no clocks, no environment), every file opens
 * with a comment naming its source, and all.yaml is exactly the files marked `inAll`, in order:
 * everything a cluster needs except the Secrets (templates) and the example.
 */
import { stringify } from 'yaml';
import { apiObjects } from './api.js';
import { cairndObjects } from './cairnd.js';
import { csiObjects } from './csi.js';
import { postgresExampleObjects } from './postgres_example.js';
import { etcdObjects } from './etcd.js';
import { exampleObjects } from './example.js';
import { frontendObjects } from './frontend.js';
import { initJobObjects } from './init_job.js';
import { repairerObjects } from './repairer.js';
import { configObjects, namespaceObjects } from './namespace.js';
import type { ObjectMeta } from './parts.js';
import { rbacObjects } from './rbac.js';
import { secretObjects } from './secrets.js';

/** What every kubernetes-models class instance offers. */
export interface KubeObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata?: ObjectMeta;
  toJSON(): unknown;
  validate(): void;
}

export interface ManifestFile {
  /** File name under k8s/. */
  readonly file: string;
  /** The k8s/src module that builds it, for the header. */
  readonly source: string;
  readonly title: string;
  readonly objects: readonly KubeObject[];
  /** Part of all.yaml. */
  readonly inAll: boolean;
}

export const allFile = 'all.yaml';
const regenerate = 'make k8s (node dist/k8s/src/build.js)';

/** The files in apply order: the Namespace and RBAC before what uses them, etcd before its clients. */
export function manifestFiles(): ManifestFile[] {
  return [
    {
      file: 'namespace.yaml',
      source: 'namespace.ts',
      title: 'the cairn Namespace',
      objects: namespaceObjects(),
      inAll: true,
    },
    {
      file: 'config.yaml',
      source: 'namespace.ts',
      title: 'settings every Cairn process reads (CAIRN_ETCD)',
      objects: configObjects(),
      inAll: true,
    },
    {
      file: 'rbac.yaml',
      source: 'rbac.ts',
      title: 'ServiceAccounts, and the one ClusterRole (get nodes, for the zone label)',
      objects: rbacObjects(),
      inAll: true,
    },
    {
      file: 'etcd.yaml',
      source: 'etcd.ts',
      title: 'etcd, 3 members (StatefulSet, Services, PodDisruptionBudget)',
      objects: etcdObjects(),
      inAll: true,
    },
    {
      file: 'init_job.yaml',
      source: 'init_job.ts',
      title: 'the Job that runs cairnctl init once',
      objects: initJobObjects(),
      inAll: true,
    },
    {
      file: 'cairnd.yaml',
      source: 'cairnd.ts',
      title: 'storage nodes, one per Kubernetes node (DaemonSet)',
      objects: cairndObjects(),
      inAll: true,
    },
    {
      file: 'frontend.yaml',
      source: 'frontend.ts',
      title: 'the NBD frontend, one per Kubernetes node, and its node-local Service',
      objects: frontendObjects(),
      inAll: true,
    },
    {
      file: 'csi.yaml',
      source: 'csi.ts',
      title:
        'the CSI driver: CSIDriver, controller with sidecars, node plugin, RBAC, StorageClass, VolumeSnapshotClass',
      objects: csiObjects(),
      inAll: true,
    },
    {
      file: 'repairer.yaml',
      source: 'repairer.ts',
      title: 'the background repairer (cairnctl repair --daemon), two replicas, one elected leader',
      objects: repairerObjects(),
      inAll: true,
    },
    {
      file: 'api.yaml',
      source: 'api.ts',
      title: 'the control-plane API and dashboard (cairnctl api serve), two replicas behind the cairn-api Service',
      objects: apiObjects(),
      inAll: true,
    },
    {
      file: 'secrets.yaml',
      source: 'secrets.ts',
      title: 'TEMPLATES for the S3 credentials and node secret: fill in before applying (not in all.yaml)',
      objects: secretObjects(),
      inAll: false,
    },
    {
      file: 'example.yaml',
      source: 'example.ts',
      title: 'example: create a volume and attach it with the kernel NBD client (not in all.yaml)',
      objects: exampleObjects(),
      inAll: false,
    },
    {
      file: 'example_postgres.yaml',
      source: 'postgres_example.ts',
      title: 'an example PostgreSQL on a Cairn PersistentVolumeClaim (apply after the CSI driver runs)',
      objects: postgresExampleObjects(),
      inAll: false,
    },
  ];
}

function header(title: string, sources: readonly string[]): string {
  const from = sources.map((s) => `k8s/src/${s}`).join(', ');
  const lines = [`# Cairn: ${title}.`, `# Generated from ${from}; do not edit by hand. Regenerate: ${regenerate}.`];
  return `${lines.join('\n')}\n`;
}

/**
 * One YAML document per object, each opening with `---`. lineWidth 0 never folds long strings;
 * single quotes are what prettier writes here (.prettierrc.json), so `make format` leaves the
 * generated files as they are.
 */
export function renderObjects(objects: readonly KubeObject[]): string {
  return objects.map((o) => `---\n${stringify(o.toJSON(), { lineWidth: 0, singleQuote: true })}`).join('');
}

/** File name -> text, for every file under k8s/ that the generator owns. */
export function renderManifests(): Map<string, string> {
  const files = manifestFiles();
  const out = new Map<string, string>();
  for (const f of files) out.set(f.file, header(f.title, [f.source]) + renderObjects(f.objects));
  const all = files.filter((f) => f.inAll);
  out.set(
    allFile,
    header(
      `everything a cluster needs, in apply order (${all.map((f) => f.file).join(', ')}); Secrets and the example are separate`,
      [...new Set(all.map((f) => f.source))],
    ) + renderObjects(all.flatMap((f) => f.objects)),
  );
  return out;
}
