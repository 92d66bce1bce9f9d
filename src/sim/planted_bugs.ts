/**
 * Bugs planted on purpose, as BlockDevice wrappers around the cache, to prove the checker can
 * fail: a simulator that never reports anything proves nothing.
 *
 * - 'flip-read-byte': the first non-empty read after `afterReads` reads returns one flipped byte.
 * - 'skip-flush': FLUSH resolves at once without publishing anything (a cache that lies about
 *   durability); caught when a crash or a probe looks at what was published.
 *
 * What it keeps true: with no bug named, the device is the cache itself (no wrapper at all).
 * What it leaves out: bugs below the cache (those would need wrappers of the engine's ports).
 */
import type { BlockDevice, BlockDeviceCapabilities, BlockStatusRun, WriteOptions } from '../core/index.js';

export type PlantedBug = 'flip-read-byte' | 'skip-flush';

export const plantedBugs: readonly PlantedBug[] = ['flip-read-byte', 'skip-flush'];

class BuggyDevice implements BlockDevice {
  readonly sizeBytes: number;
  private reads = 0;
  private flipped = false;

  constructor(
    private readonly inner: BlockDevice,
    private readonly bug: PlantedBug,
    private readonly afterReads: number,
  ) {
    this.sizeBytes = inner.sizeBytes;
  }

  capabilities(): BlockDeviceCapabilities {
    return this.inner.capabilities();
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = await this.inner.read(offset, length);
    if (this.bug === 'flip-read-byte' && length > 0 && !this.flipped && this.reads++ >= this.afterReads) {
      this.flipped = true;
      out[length >> 1] = out[length >> 1]! ^ 0x10;
    }
    return out;
  }

  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    return this.inner.write(offset, data, options);
  }

  async flush(): Promise<void> {
    if (this.bug === 'skip-flush') return;
    return this.inner.flush();
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.inner.trim(offset, length, options);
  }

  writeZeroes(offset: number, length: number, options?: WriteOptions & { readonly noHole?: boolean }): Promise<void> {
    return this.inner.writeZeroes(offset, length, options);
  }

  blockStatus(offset: number, length: number): Promise<BlockStatusRun[]> {
    return this.inner.blockStatus(offset, length);
  }
}

/** `device` with `bug` planted, or `device` itself when bug is undefined. */
export function plantBug(device: BlockDevice, bug: PlantedBug | undefined, afterReads = 3): BlockDevice {
  return bug === undefined ? device : new BuggyDevice(device, bug, afterReads);
}
