/**
 * etcdArgs() against the three etcd command lines it replaced, flag by flag: the dev cluster's
 * member (src/dev/cluster.ts), the harness's single member (test/harness/etcd.ts) and a member of
 * the harness's 3-member cluster (test/harness/faults.ts), as each was written out before.
 */
import { expect } from 'chai';
import { etcdArgs } from '../../../src/dev/index.js';

const client = 'http://127.0.0.1:40001';
const peer = 'http://127.0.0.1:40002';

describe('etcdArgs()', () => {
  it("gives the dev cluster's member warnings, a cluster of its own and compaction by revision", () => {
    expect(
      etcdArgs({
        name: 'dev',
        dataDir: '/d/etcd',
        clientUrl: client,
        peerUrl: peer,
        logLevel: 'warn',
        compactionRetentionRevisions: 1000,
      }),
    ).to.deep.equal([
      '--name',
      'dev',
      '--logger',
      'zap',
      '--log-level',
      'warn',
      '--data-dir',
      '/d/etcd',
      '--listen-client-urls',
      client,
      '--advertise-client-urls',
      client,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      `dev=${peer}`,
      '--auto-compaction-mode',
      'revision',
      '--auto-compaction-retention',
      '1000',
    ]);
  });

  it("gives the harness's single member errors only and etcd's defaults for the rest", () => {
    expect(
      etcdArgs({
        name: 'cairn-test',
        dataDir: '/dev/shm/cairn-etcd-x',
        clientUrl: client,
        peerUrl: peer,
        logLevel: 'error',
      }),
    ).to.deep.equal([
      '--name',
      'cairn-test',
      '--logger',
      'zap',
      '--log-level',
      'error',
      '--data-dir',
      '/dev/shm/cairn-etcd-x',
      '--listen-client-urls',
      client,
      '--advertise-client-urls',
      client,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      `cairn-test=${peer}`,
    ]);
  });

  it('gives a member of a 3-member cluster every peer, a new-cluster token and fast raft timing', () => {
    const initialCluster = `m1=${peer},m2=http://127.0.0.1:40004,m3=http://127.0.0.1:40006`;
    expect(
      etcdArgs({
        name: 'm1',
        dataDir: '/dev/shm/cairn-etcd3-x/m1',
        clientUrl: client,
        peerUrl: peer,
        logLevel: 'error',
        cluster: { initialCluster, token: 'cairn-fault-0123abcd' },
        raft: { heartbeatIntervalMs: 50, electionTimeoutMs: 500 },
      }),
    ).to.deep.equal([
      '--name',
      'm1',
      '--logger',
      'zap',
      '--log-level',
      'error',
      '--data-dir',
      '/dev/shm/cairn-etcd3-x/m1',
      '--listen-client-urls',
      client,
      '--advertise-client-urls',
      client,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      initialCluster,
      '--initial-cluster-state',
      'new',
      '--initial-cluster-token',
      'cairn-fault-0123abcd',
      '--heartbeat-interval',
      '50',
      '--election-timeout',
      '500',
    ]);
  });
});
