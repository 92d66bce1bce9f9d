import { MemoryShardStore, frameHeaderBytes } from '../../../src/shard/index.js';
import { shardStoreContract } from '../../support/shard_store_contract.js';

shardStoreContract('memory', async () => {
  const store = new MemoryShardStore();
  return {
    store,
    async corrupt(key, dataOffset) {
      // Block b's data starts after the header and b CRCs plus the b blocks before it, + its own CRC.
      const block = Math.floor(dataOffset / 4096);
      store.corrupt(key, frameHeaderBytes + block * 4100 + 4 + (dataOffset % 4096));
    },
  };
});
