/**
 * An example, not part of all.yaml: a Job that creates the volume `example`, and a privileged
 * pod that attaches it with the kernel NBD client through the frontend on its own node, makes
 * an ext4 file system on it the first time, mounts it and appends a line to a file.
 *
 * What it shows, plainly: without a CSI driver a pod uses a Cairn volume by running an NBD
 * client itself. The kernel client needs the `nbd` module loaded on the host
 * (`modprobe nbd nbds_max=16`) before the pod starts, and a privileged pod, because it drives
 * /dev/nbdN. It uses the ioctl interface (-L), which works from a pod's network
 * namespace. On SIGTERM it unmounts and disconnects, so the frontend flushes and the volume's
 * lock is released for the next user.
 */
import { Job } from 'kubernetes-models/batch/v1';
import { Pod, type IContainer } from 'kubernetes-models/v1';
import { example, frontend, image, namespace } from './config.js';
import {
  etcdAccess,
  labels,
  lockedDown,
  meta,
  noApiAccess,
  nodeUid,
  nodeUserPod,
  shellCommand,
  smallResources,
  tmpMount,
  tmpVolume,
} from './parts.js';

const component = 'example';

/** Creates the volume unless it exists; a failure (etcd not up, no targets yet) is retried. */
const createScript = [
  'set -eu',
  `cairnctl volume info ${example.volume} || cairnctl volume create ${example.volume} ${example.size} --profile ${example.profile}`,
].join('\n');

/** Waits, bounded, for the Job above: the pod may start first. */
const waitScript = `timeout 600 sh -c 'until cairnctl volume info ${example.volume}; do sleep 5; done'`;

/**
 * Attach, format once, mount, write, then hold the mount until SIGTERM. A free device is one
 * without /sys/block/nbdN/pid (the kernel lists the client's pid while connected).
 */
export const attachScript = [
  'set -eu',
  'if [ ! -e /sys/block/nbd0 ]; then',
  '  echo "no /dev/nbd* devices: run modprobe nbd on this host first" >&2',
  '  exit 1',
  'fi',
  'dev=',
  'for d in /sys/block/nbd*; do',
  '  if [ ! -e "$d/pid" ]; then dev=/dev/${d##*/}; break; fi',
  'done',
  'if [ -z "$dev" ]; then echo "every /dev/nbd* device is in use" >&2; exit 1; fi',
  '# -N: the export is the volume. -L: the ioctl interface, not netlink, from a pod network namespace.',
  `nbd-client ${frontend.name}.${namespace}.svc ${frontend.port} "$dev" -N ${example.volume} -b 4096 -L`,
  `trap 'umount ${example.mountDir} || true; nbd-client -d "$dev"; exit 0' TERM INT`,
  'blkid "$dev" >/dev/null || mkfs.ext4 -q "$dev"',
  `mount "$dev" ${example.mountDir}`,
  `date >> ${example.mountDir}/hello.txt`,
  `cat ${example.mountDir}/hello.txt`,
  'sync',
  'sleep infinity &',
  'wait',
].join('\n');

export function exampleObjects() {
  const cairnctlContainer: Omit<IContainer, 'name'> = {
    image,
    imagePullPolicy: 'IfNotPresent',
    env: [...etcdAccess.env],
    resources: smallResources,
    securityContext: lockedDown,
    volumeMounts: [...etcdAccess.mounts, tmpMount],
  };
  return [
    new Job({
      metadata: meta(example.jobName, component),
      spec: {
        backoffLimit: 10,
        template: {
          metadata: { labels: labels(example.jobName, component) },
          spec: {
            ...noApiAccess,
            restartPolicy: 'OnFailure',
            securityContext: nodeUserPod,
            containers: [
              { ...cairnctlContainer, name: 'create', command: shellCommand('create-volume', createScript) },
            ],
            volumes: [...etcdAccess.volumes, tmpVolume],
          },
        },
      },
    }),
    new Pod({
      metadata: meta(example.podName, component),
      spec: {
        ...noApiAccess,
        terminationGracePeriodSeconds: 60,
        initContainers: [
          {
            name: 'wait-for-volume',
            ...cairnctlContainer,
            command: shellCommand('wait-for-volume', waitScript),
            securityContext: { ...lockedDown, runAsNonRoot: true, runAsUser: nodeUid },
          },
        ],
        containers: [
          {
            name: 'nbd',
            image,
            imagePullPolicy: 'IfNotPresent',
            command: shellCommand('attach', attachScript),
            resources: smallResources,
            // /dev/nbdN, its ioctls and mount(2) need it; nothing else in Cairn does. Root,
            // because the image's default user is unprivileged.
            securityContext: { privileged: true, runAsUser: 0 },
            volumeMounts: [{ name: 'mnt', mountPath: example.mountDir }],
          },
        ],
        volumes: [{ name: 'mnt', emptyDir: {} }, ...etcdAccess.volumes, tmpVolume],
      },
    }),
  ];
}
