/**
 * NodeShardStore against a real cairnd process (and a real etcd it registers in): the whole
 * ShardStore contract over HTTP, and again over the node's binary connection (what frontends use
 * when the node advertises one), with corruption injected by flipping a byte of the shard file
 * in the node's data directory, so the client's end-to-end CRC check is what catches it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NodeShardStore, frameHeaderBytes } from '../../src/shard/index.js';
import { startCairnd, type CairndHandle } from '../harness/cairnd.js';
import { startEtcd, type EtcdHandle } from '../harness/etcd.js';
import { shardStoreContract } from '../support/shard_store_contract.js';

describe('NodeShardStore over a real cairnd', function () {
  let etcd: EtcdHandle;
  let node: CairndHandle;
  let store: NodeShardStore;
  let binary: NodeShardStore;

  before(async () => {
    etcd = await startEtcd();
    node = await startCairnd({ etcd: etcd.endpoint, name: 'store-1', zone: 'a' });
    store = new NodeShardStore({ name: node.name, address: node.address, timeoutMs: 10_000 });
    binary = new NodeShardStore({
      name: node.name,
      address: node.address,
      journalAddress: node.journalAddress,
      timeoutMs: 10_000,
    });
  });

  after(async () => {
    store?.close();
    binary?.close();
    await node?.stop();
    await etcd?.stop();
  });

  const corrupt = (key: string, dataOffset: number): Promise<void> => {
    const file = join(node.dataDir, ...key.split('/'));
    const bytes = readFileSync(file);
    const block = Math.floor(dataOffset / 4096);
    const at = frameHeaderBytes + block * 4100 + 4 + (dataOffset % 4096);
    bytes[at] = bytes[at]! ^ 1;
    writeFileSync(file, bytes);
    return Promise.resolve();
  };
  shardStoreContract('node (cairnd over HTTP)', async () => ({ store, corrupt }));
  shardStoreContract('node (cairnd over its binary connection)', async () => ({ store: binary, corrupt }));
});
