import { expect } from 'chai';
import { Etcd3 } from 'etcd3';
import { startEtcd, type EtcdHandle } from '../harness/etcd.js';
import { pidAlive } from '../../src/dev/index.js';

describe('test harness: real etcd', () => {
  let etcd: EtcdHandle;

  before(async () => {
    etcd = await startEtcd();
  });

  after(async () => {
    await etcd?.stop();
  });

  it('serves put, get and a compare-and-swap transaction on loopback', async () => {
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      await client.put('cairn/smoke').value('one');
      expect(await client.get('cairn/smoke').string()).to.equal('one');
      // Create-if-absent must fail now that the key exists: the primitive fencing will rest on.
      const result = await client
        .if('cairn/smoke', 'Create', '==', 0)
        .then(client.put('cairn/smoke').value('two'))
        .commit();
      expect(result.succeeded).to.equal(false);
      expect(await client.get('cairn/smoke').string()).to.equal('one');
    } finally {
      client.close();
    }
  });

  it('stops etcd by pid, leaving no process behind', async () => {
    const other = await startEtcd({ name: 'cairn-stop' });
    expect(pidAlive(other.pid)).to.equal(true);
    await other.stop();
    expect(pidAlive(other.pid)).to.equal(false);
  });
});
