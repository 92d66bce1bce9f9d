/**
 * node_identity: the pure part of cairnd's initContainer. Node names map to valid, stable,
 * distinct Cairn names; the zone is the node's topology.kubernetes.io/zone label or the pod
 * stops with what to run.
 */
import { expect } from 'chai';
import { checkName } from '../../../src/core/index.js';
import { cairnNodeName, nodeIdentity } from '../../../k8s/src/node_identity.js';

function nodeObject(name: string, labels: Record<string, string>): unknown {
  return { apiVersion: 'v1', kind: 'Node', metadata: { name, labels } };
}

describe('cairnNodeName()', () => {
  it('keeps a name Cairn accepts as it is', () => {
    expect(cairnNodeName('worker-1')).to.equal('worker-1');
  });

  it('turns dots into dashes', () => {
    expect(cairnNodeName('ip-10-0-1-7.ec2.internal')).to.equal('ip-10-0-1-7-ec2-internal');
  });

  it('shortens a name above 63 characters to 63 with a hash, keeping long names with one prefix apart', () => {
    const a = `${'n'.repeat(60)}.zone-a.example.com`;
    const b = `${'n'.repeat(60)}.zone-b.example.com`;
    const na = cairnNodeName(a);
    const nb = cairnNodeName(b);
    expect(na).to.have.length.at.most(63);
    expect(na).to.match(/-[0-9a-f]{8}$/);
    expect(na).to.not.equal(nb);
    expect(cairnNodeName(a)).to.equal(na);
    expect(checkName(na, 'node')).to.equal(na);
  });

  it('cuts before the hash at a letter or digit, never leaving "--"', () => {
    // 53 characters, then '-': the cut at 54 would end in '-'.
    const name = `${'a'.repeat(53)}-${'b'.repeat(20)}`;
    const short = cairnNodeName(name);
    expect(short).to.match(/^a{53}-[0-9a-f]{8}$/);
  });

  it('names a node whose name has no usable character at all by its hash', () => {
    expect(cairnNodeName('...')).to.match(/^node-[0-9a-f]{8}$/);
  });
});

describe('nodeIdentity()', () => {
  it("reads the zone from the node's topology.kubernetes.io/zone label", () => {
    const node = nodeObject('w1.example', { 'topology.kubernetes.io/zone': 'eu-west-1a', 'kubernetes.io/os': 'linux' });
    expect(nodeIdentity('w1.example', node)).to.deep.equal({ name: 'w1-example', zone: 'eu-west-1a' });
  });

  it('refuses a node without the label, saying which kubectl label to add', () => {
    expect(() => nodeIdentity('w1', nodeObject('w1', {}))).to.throw(
      'kubectl label node w1 topology.kubernetes.io/zone=<zone>',
    );
  });

  it('refuses a zone Cairn cannot use as a name rather than rewriting it', () => {
    const node = nodeObject('w1', { 'topology.kubernetes.io/zone': 'Zone_A' });
    expect(() => nodeIdentity('w1', node)).to.throw('zone "Zone_A", which Cairn cannot use');
  });

  it('refuses an answer that is not the node asked for', () => {
    expect(() => nodeIdentity('w1', nodeObject('w2', { 'topology.kubernetes.io/zone': 'a' }))).to.throw(
      'something other than Node "w1"',
    );
    expect(() => nodeIdentity('w1', null)).to.throw('something other than Node "w1"');
  });
});
