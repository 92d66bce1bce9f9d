/**
 * The Kubernetes manifests, offline: the committed k8s/*.yaml are exactly what k8s/src renders
 * (so they never drift), every document passes kubernetes-models' schema validation, and the
 * facts Cairn relies on hold in the YAML a user applies: zone from the node label, data on a
 * hostPath, etcd through its Service, S3 credentials as a Secret file, least-privilege RBAC,
 * resources on every container, health probes, pinned images. No cluster, no network.
 *
 * Typos in field names are caught earlier, by tsc over k8s/src (the schemas allow unknown
 * fields, so validate() would not); the last test pins that down with @ts-expect-error.
 */
import { expect } from 'chai';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { parseAllDocuments } from 'yaml';
import type { IContainer, IEnvVar, IPodSpec, IVolume } from 'kubernetes-models/v1';
import { Service } from 'kubernetes-models/v1';
import { parseDaemonArgs } from '../../../src/node/index.js';
import { api, apiArgs } from '../../../k8s/src/api.js';
import { cairndArgs } from '../../../k8s/src/cairnd.js';
import * as config from '../../../k8s/src/config.js';
import { frontendArgs } from '../../../k8s/src/frontend.js';
import { VolumeSnapshotClass } from '../../../k8s/src/csi.js';
import { allFile, manifestFiles, renderManifests } from '../../../k8s/src/manifests.js';
import { s3CredentialsTemplate } from '../../../k8s/src/secrets.js';

/** dist/test/unit/k8s/ -> the repository root. */
const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));
const k8sDir = join(repoRoot, 'k8s');

interface Doc {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/** The committed file's documents, as kubectl would read them. */
function docsOf(file: string): Doc[] {
  const text = readFileSync(join(k8sDir, file), 'utf8');
  return parseAllDocuments(text).map((d) => {
    expect(d.errors, `${file}: ${d.errors.join('; ')}`).to.deep.equal([]);
    return d.toJS() as Doc;
  });
}

const committedFiles = readdirSync(k8sDir)
  .filter((f) => f.endsWith('.yaml'))
  .sort();
const componentFiles = manifestFiles().map((f) => f.file);
/** Every object once: the component files (all.yaml repeats some of them). */
const docs = componentFiles.flatMap(docsOf);

function find(kind: string, name: string): Doc {
  const found = docs.filter((d) => d.kind === kind && d.metadata.name === name);
  expect(found, `${kind} ${name}`).to.have.length(1);
  return found[0] as Doc;
}

/** The pod spec inside a workload, or undefined for other kinds. */
function podSpecOf(doc: Doc): IPodSpec | undefined {
  if (doc.kind === 'Pod') return doc['spec'] as IPodSpec;
  const spec = doc['spec'] as { template?: { spec?: IPodSpec } } | undefined;
  return spec?.template?.spec;
}

interface Placed {
  readonly where: string;
  readonly doc: Doc;
  readonly pod: IPodSpec;
  readonly container: IContainer;
  readonly init: boolean;
}

/** Every container and initContainer of every workload, with where it is for messages. */
const containers: Placed[] = docs.flatMap((doc) => {
  const pod = podSpecOf(doc);
  if (pod === undefined) return [];
  const at = (c: IContainer, init: boolean): Placed => ({
    where: `${doc.kind} ${doc.metadata.name} container ${c.name}`,
    doc,
    pod,
    container: c,
    init,
  });
  return [...(pod.initContainers ?? []).map((c) => at(c, true)), ...pod.containers.map((c) => at(c, false))];
});

function containerOf(kind: string, name: string, containerName: string): Placed {
  const found = containers.filter(
    (p) => p.doc.kind === kind && p.doc.metadata.name === name && p.container.name === containerName,
  );
  expect(found, `${kind} ${name} container ${containerName}`).to.have.length(1);
  return found[0] as Placed;
}

function volumeOf(pod: IPodSpec, name: string): IVolume {
  const v = (pod.volumes ?? []).find((x) => x.name === name);
  expect(v, `volume ${name}`).to.not.equal(undefined);
  return v as IVolume;
}

/** The volume mounted at the directory holding `path`, if any. */
function volumeHolding(p: Placed, path: string): { volume: IVolume; relative: string } | undefined {
  for (const m of p.container.volumeMounts ?? []) {
    if (path.startsWith(`${m.mountPath}/`)) {
      return { volume: volumeOf(p.pod, m.name), relative: path.slice(m.mountPath.length + 1) };
    }
  }
  return undefined;
}

function envOf(c: IContainer, name: string): IEnvVar | undefined {
  return (c.env ?? []).find((e) => e.name === name);
}

/** command + args as one line, to look for a program's invocation. */
function commandLine(c: IContainer): string {
  return [...(c.command ?? []), ...(c.args ?? [])].join(' ');
}

/** Selector labels match a pod template's labels. */
function selects(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

describe('k8s manifests: generated, committed, valid', () => {
  it('commits exactly what k8s/src renders, and nothing else, so the YAML never drifts', () => {
    const rendered = renderManifests();
    expect(committedFiles).to.deep.equal([...rendered.keys()].sort());
    for (const [file, text] of rendered) {
      expect(readFileSync(join(k8sDir, file), 'utf8'), `k8s/${file} is stale: run make k8s`).to.equal(text);
    }
  });

  it('renders YAML that prettier leaves alone, so make format and the drift test agree', async () => {
    for (const file of committedFiles) {
      const path = join(k8sDir, file);
      const options = (await prettier.resolveConfig(path)) ?? {};
      const text = readFileSync(path, 'utf8');
      expect(await prettier.check(text, { ...options, filepath: path }), `k8s/${file}`).to.equal(true);
    }
  });

  it("passes kubernetes-models' schema validation, every document of every file", async () => {
    let count = 0;
    for (const file of committedFiles) {
      for (const doc of docsOf(file)) {
        const [group, version] = doc.apiVersion.includes('/') ? doc.apiVersion.split('/') : ['', doc.apiVersion];
        if (group === 'snapshot.storage.k8s.io') {
          // A CRD kubernetes-models does not ship: checked by its own typed class.
          const { apiVersion: _a, kind: _k, ...data } = doc;
          expect(doc.kind, file).to.equal('VolumeSnapshotClass');
          expect(
            () => new VolumeSnapshotClass(data as never).validate(),
            `${file}: ${doc.metadata.name}`,
          ).to.not.throw();
          count += 1;
          continue;
        }
        const module = (await import(`kubernetes-models/${group === '' ? '' : `${group}/`}${version}`)) as Record<
          string,
          new (data: unknown) => { validate(): void }
        >;
        const Model = module[doc.kind];
        expect(Model, `${file}: no model for ${doc.apiVersion} ${doc.kind}`).to.not.equal(undefined);
        const { apiVersion: _a, kind: _k, ...data } = doc;
        expect(() => new Model!(data).validate(), `${file}: ${doc.kind} ${doc.metadata.name}`).to.not.throw();
        count += 1;
      }
    }
    expect(count).to.be.greaterThan(15);
  });

  it('puts everything but the Secret templates and the example in all.yaml, in an order kubectl can apply', () => {
    const all = docsOf(allFile);
    const inAll = manifestFiles().filter((f) => f.inAll);
    expect(all.length).to.equal(inAll.reduce((n, f) => n + f.objects.length, 0));
    expect(all.map((d) => d.kind)).to.not.include('Secret');
    expect(all.map((d) => d.metadata.name)).to.not.include(config.example.podName);
    // What an object refers to by name is created before it.
    const seen = new Set<string>();
    for (const doc of all) {
      if (doc.metadata.namespace !== undefined)
        expect(seen, doc.metadata.name).to.include(`Namespace/${doc.metadata.namespace}`);
      const pod = podSpecOf(doc);
      if (pod?.serviceAccountName !== undefined) expect(seen).to.include(`ServiceAccount/${pod.serviceAccountName}`);
      for (const c of [...(pod?.initContainers ?? []), ...(pod?.containers ?? [])]) {
        for (const e of c.env ?? []) {
          const ref = e.valueFrom?.configMapKeyRef?.name;
          if (ref !== undefined) expect(seen).to.include(`ConfigMap/${ref}`);
        }
      }
      seen.add(`${doc.kind}/${doc.metadata.name}`);
    }
  });

  it('keeps every namespaced object in the cairn namespace, and labels every object as part of cairn', () => {
    const clusterScoped = new Set([
      'Namespace',
      'ClusterRole',
      'ClusterRoleBinding',
      'CSIDriver',
      'StorageClass',
      'VolumeSnapshotClass',
    ]);
    for (const doc of docs) {
      expect(doc.metadata.namespace, `${doc.kind} ${doc.metadata.name}`).to.equal(
        clusterScoped.has(doc.kind) ? undefined : config.namespace,
      );
      expect(doc.metadata.labels?.['app.kubernetes.io/part-of']).to.equal('cairn');
    }
  });
});

describe('k8s manifests: what every container keeps true', () => {
  it('gives every container and initContainer cpu and memory requests and limits', () => {
    expect(containers.length).to.be.greaterThan(6);
    for (const { where, container } of containers) {
      const r = container.resources;
      for (const key of ['cpu', 'memory']) {
        expect(r?.requests?.[key], `${where} requests.${key}`).to.not.equal(undefined);
        expect(r?.limits?.[key], `${where} limits.${key}`).to.not.equal(undefined);
      }
    }
  });

  it('pins every image to a tag, never latest, and runs the Cairn image at the package version', () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    expect(config.imageTag).to.equal(pkg.version);
    for (const { where, container } of containers) {
      const image = container.image ?? '';
      const tag = /:([^/:@]+)$/.exec(image)?.[1];
      expect(tag, `${where} image ${image}`).to.not.equal(undefined);
      expect(tag, `${where} image ${image}`).to.not.equal('latest');
      if (image.startsWith(`${config.imageName}:`)) {
        expect(image).to.equal(`${config.imageName}:${pkg.version}`);
        // There is no registry: a node must use the image it was given, never try to pull.
        expect(container.imagePullPolicy, where).to.equal('IfNotPresent');
      }
    }
  });

  it('lets Kubernetes expand $(NAME) in command and args only for env vars the container declares', () => {
    // Kubernetes rewrites $(NAME) in command and args when NAME is an env var of the
    // container; a shell's $(command) would be left alone only by luck, so scripts use none.
    for (const { where, container } of containers) {
      const declared = new Set((container.env ?? []).map((e) => e.name));
      for (const text of [...(container.command ?? []), ...(container.args ?? [])]) {
        for (const m of text.matchAll(/\$\(([^)]*)\)/g)) {
          expect(declared.has(m[1] ?? ''), `${where}: ${m[0]} in ${JSON.stringify(text)}`).to.equal(true);
        }
      }
    }
  });

  it('runs every container without privilege escalation and without capabilities, but the example NBD pod and the CSI node plugin', () => {
    for (const { where, doc, container } of containers) {
      const sc = container.securityContext;
      if (
        (doc.metadata.name === config.example.podName && container.name === 'nbd') ||
        (doc.metadata.name === config.csi.nodeName && container.name === 'cairn-csi')
      ) {
        // They attach NBD devices and mount filesystems on the host.
        expect(sc?.privileged, where).to.equal(true);
        expect(sc?.runAsUser, where).to.equal(0);
        continue;
      }
      expect(sc?.privileged, where).to.not.equal(true);
      expect(sc?.allowPrivilegeEscalation, where).to.equal(false);
      expect(sc?.capabilities?.drop, where).to.deep.equal(['ALL']);
      expect(sc?.capabilities?.add, where).to.equal(undefined);
    }
  });
});

describe('k8s/Dockerfile', () => {
  it('builds the image the manifests expect: node 20, the app where they look, cairnctl and cairnd on PATH', () => {
    const text = readFileSync(join(k8sDir, 'Dockerfile'), 'utf8');
    expect(text).to.match(/^FROM node:20-bookworm-slim$/m);
    expect(text).to.match(new RegExp(`^WORKDIR ${config.imageAppDir}$`, 'm'));
    expect(text).to.include(`docker build -f k8s/Dockerfile -t ${config.image} .`);
    for (const bin of ['cairnctl', 'cairnd']) {
      expect(text).to.include(`ln -s ${config.imageAppDir}/dist/src/bin/${bin}.js /usr/local/bin/${bin}`);
    }
    // node_identity.js, which the cairnd initContainer runs, and the wasm kernels.
    expect(text).to.match(/^COPY dist\/k8s \.\/dist\/k8s$/m);
    expect(text).to.match(/^COPY wasm\/SHA256SUMS wasm\/\*\.wasm \.\/wasm\/$/m);
  });
});

describe('k8s manifests: Cairn facts', () => {
  const cairnd = find('DaemonSet', config.cairnd.name);
  const cairndPod = podSpecOf(cairnd) as IPodSpec;
  const identity = containerOf('DaemonSet', config.cairnd.name, 'node-identity');
  const node = containerOf('DaemonSet', config.cairnd.name, 'cairnd');

  it("reads cairnd's zone from the node's topology.kubernetes.io/zone label, through the identity initContainer", () => {
    expect(identity.init).to.equal(true);
    expect(envOf(identity.container, 'NODE_NAME')?.valueFrom?.fieldRef?.fieldPath).to.equal('spec.nodeName');
    expect(identity.container.command).to.deep.equal([
      'node',
      `${config.imageAppDir}/dist/k8s/src/node_identity.js`,
      config.cairnd.identityDir,
    ]);
    // The program reads the label named in config (node_identity.test.ts checks it uses it).
    expect(config.zoneLabel).to.equal('topology.kubernetes.io/zone');
    // cairnd reads what the initContainer wrote, from a volume both mount.
    const written = identity.container.volumeMounts?.find((m) => m.mountPath === config.cairnd.identityDir);
    const read = node.container.volumeMounts?.find((m) => m.mountPath === config.cairnd.identityDir);
    expect(written?.name).to.equal(read?.name);
    expect(volumeOf(cairndPod, written?.name ?? '').emptyDir).to.not.equal(undefined);
    const script = commandLine(node.container);
    expect(script).to.include(`read -r zone < ${config.cairnd.identityDir}/zone`);
    expect(script).to.include(`read -r name < ${config.cairnd.identityDir}/name`);
    expect(script).to.include('exec cairnd --name "$name" --zone "$zone" "$@"');
  });

  it("parses cairnd's args with cairnd's own parser: data on the hostPath, pod IP advertised, probes on its port", async () => {
    expect(node.container.args).to.deep.equal(cairndArgs);
    const podIp = '10.1.2.3';
    expect(envOf(node.container, 'POD_IP')?.valueFrom?.fieldRef?.fieldPath).to.equal('status.podIP');
    const argv = ['--name', 'n-1', '--zone', 'a', ...cairndArgs.map((a) => a.replace('$(POD_IP)', podIp))];
    const parsed = await parseDaemonArgs(argv, { CAIRN_ETCD: config.etcdClientUrl });
    if (parsed.kind !== 'run') throw new Error('cairnd printed help instead of running');
    const { dataDir, listenPort, advertise } = parsed.config;
    expect(advertise).to.equal(`${podIp}:${config.cairnd.port}`);

    const data = node.container.volumeMounts?.find((m) => m.mountPath === dataDir);
    expect(data, `a volume mounted at --data-dir ${dataDir}`).to.not.equal(undefined);
    const hostPath = volumeOf(cairndPod, data?.name ?? '').hostPath;
    expect(hostPath?.path).to.equal(config.cairnd.hostDataDir);
    expect(hostPath?.type).to.equal('DirectoryOrCreate');

    const port = node.container.ports?.find((p) => p.containerPort === listenPort);
    expect(port?.name).to.equal('shards');
    for (const probe of [node.container.livenessProbe, node.container.readinessProbe]) {
      expect(probe?.httpGet?.path).to.equal('/v1/health');
      expect(probe?.httpGet?.port).to.equal(port?.name);
    }
    expect(cairndPod.terminationGracePeriodSeconds).to.be.greaterThan(10);
  });

  it('points every Cairn process at the etcd client Service through the one ConfigMap key', () => {
    const configMap = find('ConfigMap', config.configMapName);
    const url = new URL((configMap['data'] as Record<string, string>)[config.etcdEnvKey] ?? '');
    const service = find('Service', config.etcd.clientService);
    const serviceSpec = service['spec'] as {
      selector: Record<string, string>;
      ports: { port: number; targetPort: string }[];
    };
    expect(url.hostname).to.equal(`${config.etcd.clientService}.${config.namespace}.svc`);
    expect(Number(url.port)).to.equal(serviceSpec.ports[0]?.port);

    const statefulSet = find('StatefulSet', config.etcd.name);
    const etcdPod = podSpecOf(statefulSet) as IPodSpec;
    const template = (statefulSet['spec'] as { template: { metadata: { labels: Record<string, string> } } }).template;
    expect(selects(serviceSpec.selector, template.metadata.labels)).to.equal(true);
    const clientPort = etcdPod.containers[0]?.ports?.find((p) => p.name === serviceSpec.ports[0]?.targetPort);
    expect(clientPort?.containerPort).to.equal(Number(url.port));
    expect(etcdPod.containers[0]?.args).to.include(`--listen-client-urls=https://0.0.0.0:${url.port}`);
    expect(url.protocol).to.equal('https:');
    // Clients and peers need a certificate the CA in cairn-etcd-tls signed.
    expect(etcdPod.containers[0]?.args).to.include.members(['--client-cert-auth', '--peer-client-cert-auth']);
    expect(etcdPod.volumes?.find((v) => v.secret?.secretName === config.etcdServerTls.name)?.secret?.optional).to.equal(
      false,
    );

    const cairnProcesses = containers.filter((p) => /\bcairn(ctl|d)\b/.test(commandLine(p.container)));
    expect(cairnProcesses.length).to.be.greaterThan(4);
    for (const { where, container } of cairnProcesses) {
      expect(envOf(container, config.etcdEnvKey)?.valueFrom?.configMapKeyRef, where).to.deep.equal({
        name: config.configMapName,
        key: config.etcdEnvKey,
      });
    }
  });

  it('runs 3 etcd members that find each other through the headless Service, with a quorum kept by the PDB', () => {
    const statefulSet = find('StatefulSet', config.etcd.name);
    const spec = statefulSet['spec'] as { replicas: number; serviceName: string; podManagementPolicy: string };
    expect(spec.replicas).to.equal(3);
    expect(spec.podManagementPolicy).to.equal('Parallel');
    const peers = find('Service', spec.serviceName)['spec'] as { clusterIP: string; publishNotReadyAddresses: boolean };
    expect(peers.clusterIP).to.equal('None');
    expect(peers.publishNotReadyAddresses).to.equal(true);
    const args = (podSpecOf(statefulSet) as IPodSpec).containers[0]?.args ?? [];
    const initial = args.find((a) => a.startsWith('--initial-cluster='))?.slice('--initial-cluster='.length) ?? '';
    expect(initial.split(',')).to.deep.equal(
      [0, 1, 2].map(
        (i) =>
          `${config.etcd.name}-${i}=https://${config.etcd.name}-${i}.${spec.serviceName}.${config.namespace}.svc:${config.etcd.peerPort}`,
      ),
    );
    expect(args).to.include(
      `--initial-advertise-peer-urls=https://$(POD_NAME).${spec.serviceName}.${config.namespace}.svc:${config.etcd.peerPort}`,
    );
    // volumeClaimTemplates are immutable and the template's labels restart members: neither may
    // carry the Cairn version, or a Cairn release would fail to apply or restart etcd.
    const claims = (statefulSet['spec'] as { volumeClaimTemplates: Doc[] }).volumeClaimTemplates;
    for (const labels of [...claims.map((c) => c.metadata.labels), podLabels(statefulSet)]) {
      expect(labels).to.not.have.property('app.kubernetes.io/version');
    }
    const pdb = find('PodDisruptionBudget', config.etcd.name)['spec'] as { minAvailable: number };
    expect(pdb.minAvailable).to.equal(2);
  });

  it('hands S3 credentials only as a file from the Secret, named by CAIRN_S3_CREDENTIALS_FILE', () => {
    const withS3 = containers.filter((p) => envOf(p.container, config.s3Secret.envKey) !== undefined);
    expect(withS3.map((p) => p.doc.metadata.name)).to.include(config.frontend.name);
    for (const p of withS3) {
      const file = envOf(p.container, config.s3Secret.envKey)?.value ?? '';
      const holder = volumeHolding(p, file);
      expect(holder?.volume.secret?.secretName, `${p.where}: ${file}`).to.equal(config.s3Secret.name);
      expect(holder?.relative).to.equal(config.s3Secret.key);
    }
    for (const { where, container } of containers) {
      for (const e of container.env ?? []) expect(e.name, where).to.not.match(/^AWS_/);
    }
    const template = find('Secret', config.s3Secret.name)['stringData'] as Record<string, string>;
    const json = JSON.parse(template[config.s3Secret.key] ?? '') as typeof s3CredentialsTemplate;
    expect(Object.keys(json.default).sort()).to.deep.equal(['accessKeyId', 'secretAccessKey']);
    expect(JSON.stringify(json)).to.include('REPLACE');
  });

  it('gives the processes that attach volumes the optional key-encryption keys Secret, through CAIRN_KEK_DIR', () => {
    const withKeys = containers.filter((p) => envOf(p.container, config.kekSecret.envKey) !== undefined);
    // The API server attaches a detached volume here to snapshot or resize it.
    expect(withKeys.map((p) => p.container.name).sort()).to.deep.equal(['api', 'cairn-csi', 'frontend']);
    for (const p of withKeys) {
      const [dir, staged] = (envOf(p.container, config.kekSecret.envKey)?.value ?? '').split(',');
      const holder = volumeHolding(p, `${dir}/any`);
      expect(holder?.volume.secret?.secretName, p.where).to.equal(config.kekSecret.name);
      // Optional: a cluster without encrypted volumes runs without it (the directory is empty).
      expect(holder?.volume.secret?.optional, p.where).to.equal(true);
      // The frontend also reads the keys the CSI node plugin stages on its host (node-stage secrets).
      if (p.container.name === 'frontend') {
        expect(staged).to.equal(config.kekSecret.stagedDir);
        expect(volumeHolding(p, `${staged}/v.kek`)?.volume.hostPath?.path).to.equal(config.kekSecret.stagedDir);
      } else expect(staged).to.equal(undefined);
    }
    const plugin = containers.find((p) => p.container.name === 'cairn-csi' && p.container.args?.includes('--node'));
    expect(plugin?.container.args).to.include.members(['--kek-dir', config.kekSecret.stagedDir]);
    expect(volumeHolding(plugin!, `${config.kekSecret.stagedDir}/v.kek`)?.volume.hostPath?.path).to.equal(
      config.kekSecret.stagedDir,
    );
  });

  it('runs cairnd with mutual TLS from its required TLS Secret, and gives every client of cairnd its certificate', () => {
    for (const [name, file] of [
      ['CAIRN_NODE_TLS_CERT', config.nodeTls.cert],
      ['CAIRN_NODE_TLS_KEY', config.nodeTls.key],
      ['CAIRN_NODE_TLS_CA', config.nodeTls.ca],
    ] as const) {
      expect(envOf(node.container, name)?.value).to.equal(file);
      const holder = volumeHolding(node, file);
      expect(holder?.volume.secret?.secretName).to.equal(config.nodeTls.name);
      expect(holder?.volume.secret?.optional).to.equal(false);
    }
    for (const probe of [node.container.livenessProbe, node.container.readinessProbe])
      expect(probe?.httpGet?.scheme).to.equal('HTTPS');
    const clients = containers.filter((p) => envOf(p.container, 'CAIRN_NODE_CA') !== undefined);
    expect(clients.map((p) => p.doc.metadata.name).sort()).to.deep.equal(
      [config.frontend.name, 'cairn-repairer', config.csi.controllerName, api.name].sort(),
    );
    for (const p of clients) {
      expect(envOf(p.container, 'CAIRN_NODE_TLS_SERVER_NAME')?.value, p.where).to.equal(config.nodeTls.serverName);
      for (const variable of ['CAIRN_NODE_CA', 'CAIRN_NODE_CERT', 'CAIRN_NODE_KEY']) {
        const holder = volumeHolding(p, envOf(p.container, variable)?.value ?? '');
        expect(holder?.volume.secret?.secretName, `${p.where} ${variable}`).to.equal(config.clientTls.name);
      }
    }
    // Every process with CAIRN_ETCD reads etcd credentials from the (required) etcd client Secret.
    for (const p of containers.filter((c) => envOf(c.container, config.etcdEnvKey) !== undefined)) {
      const dir = envOf(p.container, config.etcdClientSecret.envKey)?.value ?? '';
      expect(dir, p.where).to.equal(config.etcdClientSecret.mountDir);
      const mount = p.container.volumeMounts?.find((m) => m.mountPath === dir);
      expect(volumeOf(p.pod, mount?.name ?? '').secret?.secretName, p.where).to.equal(config.etcdClientSecret.name);
    }
  });

  it('mounts the node Secret wherever a script reads it, and ships a placeholder cairnd would refuse', async () => {
    const readers = containers.filter((p) => commandLine(p.container).includes(config.nodeSecret.file));
    expect(readers.map((p) => p.doc.metadata.name).sort()).to.deep.equal(
      [config.cairnd.name, config.frontend.name, 'cairn-repairer', config.csi.controllerName, api.name].sort(),
    );
    for (const p of readers) {
      const holder = volumeHolding(p, config.nodeSecret.file);
      expect(holder?.volume.secret?.secretName, p.where).to.equal(config.nodeSecret.name);
      // Required: authentication is on by default, a pod without the Secret waits for it.
      expect(holder?.volume.secret?.optional, p.where).to.equal(false);
      expect(holder?.relative).to.equal(config.nodeSecret.key);
    }
    const placeholder = (find('Secret', config.nodeSecret.name)['stringData'] as Record<string, string>)[
      config.nodeSecret.key
    ];
    const argv = ['--name', 'n', '--zone', 'a', '--data-dir', '/d', '--listen', '127.0.0.1:0'];
    await parseDaemonArgs(argv, { CAIRN_ETCD: config.etcdClientUrl, CAIRN_NODE_SECRET: placeholder ?? '' }).then(
      () => expect.fail('cairnd accepted the placeholder secret'),
      (err: Error) => expect(err.message).to.include('Invalid shared secret'),
    );
  });

  it('runs the background repairer as two replicas of cairnctl repair --daemon (one elected leader)', () => {
    const deployment = find('Deployment', 'cairn-repairer');
    const spec = deployment['spec'] as { replicas: number; template: { spec: { containers: { args: string[] }[] } } };
    expect(spec.replicas).to.equal(2);
    expect(spec.template.spec.containers[0]!.args.slice(0, 3)).to.deep.equal(['cairnctl', 'repair', '--daemon']);
  });

  it('grants the Kubernetes API to two users only: the identity initContainers (get nodes) and the CSI controller sidecars (no wildcard, no Secrets)', () => {
    const roles = docs.filter((d) => d.kind === 'ClusterRole' || d.kind === 'Role');
    expect(roles.map((r) => r.metadata.name).sort()).to.deep.equal(
      [config.nodeReaderRole, config.csi.controllerRole, `${config.csi.controllerRole}-leases`].sort(),
    );
    expect(find('ClusterRole', config.nodeReaderRole)['rules']).to.deep.equal([
      { apiGroups: [''], resources: ['nodes'], verbs: ['get'] },
    ]);
    for (const role of roles)
      for (const rule of role['rules'] as { apiGroups: string[]; resources: string[]; verbs: string[] }[]) {
        for (const list of [rule.apiGroups, rule.resources, rule.verbs])
          expect(list, `${role.metadata.name}: no wildcard`).to.not.include('*');
        expect(rule.resources, `${role.metadata.name}: no Secrets`).to.not.include('secrets');
      }
    const bindings = docs.filter((d) => d.kind === 'ClusterRoleBinding' || d.kind === 'RoleBinding');
    const boundTo = Object.fromEntries(
      bindings.map((b) => [
        b.metadata.name,
        (b['subjects'] as { name: string; namespace: string }[]).map((x) => x.name),
      ]),
    );
    expect(boundTo).to.deep.equal({
      [config.nodeReaderRole]: [config.cairnd.serviceAccount],
      [config.csi.controllerRole]: [config.csi.controllerServiceAccount],
      [`${config.csi.controllerRole}-leases`]: [config.csi.controllerServiceAccount],
    });
    // Tokens: none automounted, but in the CSI controller pod (its sidecars call the API).
    for (const sa of docs.filter((d) => d.kind === 'ServiceAccount')) {
      if (sa.metadata.name === config.csi.controllerServiceAccount) continue;
      expect(sa['automountServiceAccountToken'], sa.metadata.name).to.equal(false);
    }
    for (const doc of docs) {
      const pod = podSpecOf(doc);
      if (pod === undefined) continue;
      if (doc.metadata.name === config.csi.controllerName)
        expect(pod.serviceAccountName).to.equal(config.csi.controllerServiceAccount);
      else expect(pod.automountServiceAccountToken, doc.metadata.name).to.equal(false);
    }
    // (A mount may name a volumeClaimTemplate rather than a pod volume: etcd's data.)
    const withToken = containers.filter((p) =>
      (p.container.volumeMounts ?? []).some((m) =>
        (p.pod.volumes ?? []).some(
          (v) => v.name === m.name && v.projected?.sources?.some((s) => s.serviceAccountToken),
        ),
      ),
    );
    // The identity initContainer, in cairnd's pod and in the CSI node plugin's (its zone).
    expect(withToken.map((p) => p.where).sort()).to.deep.equal(
      [identity.where, `DaemonSet ${config.csi.nodeName} container node-identity`].sort(),
    );
    for (const p of withToken) expect(p.init, p.where).to.equal(true);
    expect(cairndPod.serviceAccountName).to.equal(config.cairnd.serviceAccount);
  });

  it('deploys the CSI driver: no attach step, the controller with its sidecars, the node plugin registered with kubelet, a default expandable StorageClass', () => {
    expect(find('CSIDriver', config.csi.driver)['spec']).to.deep.include({ attachRequired: false });
    const controller = containerOf('Deployment', config.csi.controllerName, 'cairn-csi');
    expect(commandLine(controller.container)).to.include(
      `cairnctl csi serve --endpoint unix://${config.csi.socket} --controller`,
    );
    const sidecars = (podSpecOf(controller.doc)!.containers ?? []).map((c) => c.name);
    expect(sidecars).to.include.members(['csi-provisioner', 'csi-snapshotter', 'csi-resizer', 'liveness-probe']);
    expect(sidecars, 'no attacher: attachRequired is false').to.not.include('csi-attacher');
    expect(commandLine(controller.container)).to.include('--controller --topology');
    const node = containerOf('DaemonSet', config.csi.nodeName, 'cairn-csi');
    const line = commandLine(node.container);
    expect(line).to.include('--node --node-id $(NODE_NAME)');
    // Its zone: the file the identity initContainer writes from the Node's zone label.
    expect(line).to.include(`read -r zone < ${config.cairnd.identityDir}/zone`);
    expect(line).to.include('--zone "$zone"');
    expect(podSpecOf(node.doc)!.initContainers?.map((c) => c.name)).to.deep.equal(['node-identity']);
    expect(line).to.include(`--nbd nbd://${config.frontend.name}.${config.namespace}.svc:${config.frontend.port}`);
    expect(node.container.volumeMounts?.find((m) => m.mountPath === config.csi.kubeletDir)?.mountPropagation).to.equal(
      'Bidirectional',
    );
    const registrar = (podSpecOf(node.doc)!.containers ?? []).find((c) => c.name === 'node-driver-registrar')!;
    expect(registrar.args).to.include(`--kubelet-registration-path=${config.csi.pluginDir}/csi.sock`);
    const sc = find('StorageClass', config.csi.storageClass);
    expect(sc).to.deep.include({
      provisioner: config.csi.driver,
      allowVolumeExpansion: true,
      volumeBindingMode: 'WaitForFirstConsumer',
    });
    expect(sc.metadata).to.deep.include({ annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } });
    expect(find('VolumeSnapshotClass', config.csi.snapshotClass)).to.deep.include({ driver: config.csi.driver });
    const pg = docsOf('example_postgres.yaml').find((d) => d.kind === 'StatefulSet')!;
    const claim = (pg['spec'] as { volumeClaimTemplates: { spec: { storageClassName: string } }[] })
      .volumeClaimTemplates[0]!;
    expect(claim.spec.storageClassName).to.equal(config.csi.storageClass);
  });

  it('runs the frontend on every node behind a node-local Service: cairnctl nbd serve on 10809', () => {
    const frontend = containerOf('DaemonSet', config.frontend.name, 'frontend');
    expect(frontend.container.args).to.deep.equal(frontendArgs);
    expect(commandLine(frontend.container)).to.include('cairnctl nbd serve --listen 0.0.0.0:10809');
    const service = find('Service', config.frontend.name)['spec'] as {
      internalTrafficPolicy: string;
      selector: Record<string, string>;
      ports: { port: number; targetPort: string }[];
    };
    expect(service.internalTrafficPolicy).to.equal('Local');
    expect(selects(service.selector, podLabels(frontend.doc))).to.equal(true);
    expect(service.ports[0]?.port).to.equal(10809);
    const port = frontend.container.ports?.find((p) => p.name === service.ports[0]?.targetPort);
    expect(port?.containerPort).to.equal(10809);
    // A rolling update would cut every NBD connection on each host in turn.
    expect((frontend.doc['spec'] as { updateStrategy: { type: string } }).updateStrategy.type).to.equal('OnDelete');
  });

  it('serves the API and dashboard from two replicas of cairnctl api serve behind the cairn-api Service, probed on /healthz', () => {
    const placed = containerOf('Deployment', api.name, 'api');
    expect(placed.container.args).to.deep.equal(apiArgs);
    expect(commandLine(placed.container)).to.include('cairnctl api serve --listen 0.0.0.0:8080');
    expect((placed.doc['spec'] as { replicas: number }).replicas).to.equal(2);
    const service = find('Service', api.name)['spec'] as {
      selector: Record<string, string>;
      ports: { port: number; targetPort: string }[];
    };
    expect(selects(service.selector, podLabels(placed.doc))).to.equal(true);
    expect(service.ports[0]?.port).to.equal(8080);
    const port = placed.container.ports?.find((p) => p.name === service.ports[0]?.targetPort);
    expect(port?.containerPort).to.equal(8080);
    for (const probe of [placed.container.readinessProbe, placed.container.livenessProbe])
      expect(probe?.httpGet).to.deep.include({ path: '/healthz', port: 'http' });
    // The same credentials as the repairer: etcd, the storage nodes, S3.
    const repairer = containerOf('Deployment', 'cairn-repairer', 'repairer');
    const names = (c: IContainer) => (c.env ?? []).map((e) => e.name).sort();
    expect(names(placed.container)).to.include.members(names(repairer.container));
    const mounts = (c: IContainer) => (c.volumeMounts ?? []).map((m) => m.mountPath).sort();
    expect(mounts(placed.container)).to.include.members(mounts(repairer.container));
  });

  it('initialises the cluster with a Job that runs cairnctl init', () => {
    const init = containerOf('Job', config.init.jobName, 'init');
    expect(init.container.args?.slice(0, 2)).to.deep.equal(['cairnctl', 'init']);
    expect(commandLine(init.container)).to.include('already initialised');
  });

  it('attaches the example volume with the kernel NBD client through the local frontend Service', () => {
    const nbd = containerOf('Pod', config.example.podName, 'nbd');
    expect(commandLine(nbd.container)).to.include(
      `nbd-client ${config.frontend.name}.${config.namespace}.svc ${config.frontend.port} "$dev" -N ${config.example.volume}`,
    );
    const create = containerOf('Job', config.example.jobName, 'create');
    expect(commandLine(create.container)).to.include(`cairnctl volume create ${config.example.volume}`);
  });

  it('makes a misspelt field a compile error (the schemas themselves allow unknown fields)', () => {
    // @ts-expect-error 'selectr' does not exist in type 'IServiceSpec'. Did you mean 'selector'?
    const typo = new Service({ metadata: { name: 'x' }, spec: { selectr: { a: 'b' } } });
    expect(() => typo.validate()).to.not.throw();
  });
});

function podLabels(doc: Doc): Record<string, string> | undefined {
  return (doc['spec'] as { template?: { metadata?: { labels?: Record<string, string> } } }).template?.metadata?.labels;
}
