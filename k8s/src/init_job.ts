/**
 * The Job that initialises the cluster once: `cairnctl init` writes cairn/v1/cluster to etcd.
 *
 * What it keeps true: applying it again is harmless. `cairnctl init` refuses a second init
 * ("already initialised") and leaves the config alone; the Job treats that refusal as success,
 * so re-applying all.yaml after the Job was deleted never fails and never overwrites the
 * config (that takes `cairnctl init --force`, by hand). Any other failure (etcd not up yet)
 * fails the pod and the Job retries it with backoff.
 */
import { Job } from 'kubernetes-models/batch/v1';
import { image, init } from './config.js';
import {
  etcdAccess,
  labels,
  lockedDown,
  meta,
  noApiAccess,
  nodeUserPod,
  shellCommand,
  smallResources,
  tmpMount,
  tmpVolume,
} from './parts.js';

const component = 'init';

export const initArgs = [
  'cairnctl',
  'init',
  '--profile',
  init.profile,
  '--extent-size',
  init.extentSize,
  '--zones-required',
  String(init.zonesRequired),
  '--targets',
  init.targets,
];

/** Runs the args; an "already initialised" refusal counts as done. */
const initScript = [
  'set -u',
  'if "$@" 2>/tmp/init.err; then exit 0; fi',
  "if grep -q 'already initialised' /tmp/init.err; then",
  '  echo "cairn-init: the cluster is already initialised; its config is left as it is"',
  '  exit 0',
  'fi',
  'cat /tmp/init.err >&2',
  'exit 1',
].join('\n');

export function initJobObjects() {
  return [
    new Job({
      metadata: meta(init.jobName, component),
      spec: {
        // etcd may take a minute or two to form a quorum after a first apply: 10 tries with
        // the Job's exponential backoff (10 s, 20 s, ... capped at 6 min) wait long enough.
        backoffLimit: 10,
        template: {
          metadata: { labels: labels(init.jobName, component) },
          spec: {
            ...noApiAccess,
            restartPolicy: 'OnFailure',
            securityContext: nodeUserPod,
            containers: [
              {
                name: 'init',
                image,
                imagePullPolicy: 'IfNotPresent',
                command: shellCommand('cairn-init', initScript),
                args: initArgs,
                env: [...etcdAccess.env],
                resources: smallResources,
                securityContext: lockedDown,
                volumeMounts: [...etcdAccess.mounts, tmpMount],
              },
            ],
            volumes: [...etcdAccess.volumes, tmpVolume],
          },
        },
      },
    }),
  ];
}
