/**
 * The client workload: what a seeded client asks of the volume next. Writes (aligned and not,
 * tiny, extent-sized and extent-spanning, at the last byte, empty), reads, trims, write-zeroes,
 * FLUSH, FUA, block status, crashes of the frontend, and probes of what a crash would reveal.
 *
 * What it keeps true: every range lies inside the volume; all choices come from the workload's
 * own stream, so faults and store behaviour never change which operations a seed runs.
 * What it leaves out: concurrency between client operations (the simulation runs one at a time;
 * background flushes and deletes still run between and during them).
 */
import type { ExtentGeometry } from '../extent/index.js';
import type { Prng } from './prng.js';

export type Op =
  | { readonly kind: 'write'; readonly offset: number; readonly data: Uint8Array; readonly fua: boolean }
  | { readonly kind: 'read'; readonly offset: number; readonly length: number }
  | { readonly kind: 'trim'; readonly offset: number; readonly length: number; readonly fua: boolean }
  | {
      readonly kind: 'zero';
      readonly offset: number;
      readonly length: number;
      readonly noHole: boolean;
      readonly fua: boolean;
    }
  | { readonly kind: 'flush' }
  | { readonly kind: 'status'; readonly offset: number; readonly length: number }
  | { readonly kind: 'crash' }
  | { readonly kind: 'probe' };

const blockBytes = 4096;

export class Workload {
  constructor(
    private readonly rng: Prng,
    private readonly g: ExtentGeometry,
  ) {}

  /** A range inside the volume, of one of several shapes. */
  range(): { offset: number; length: number } {
    const { sizeBytes, extentBytes } = this.g;
    const r = this.rng;
    const clamp = (offset: number, length: number) => {
      const o = Math.min(offset, sizeBytes);
      return { offset: o, length: Math.max(0, Math.min(length, sizeBytes - o)) };
    };
    switch (
      r.weighted<string>([
        ['tiny', 25],
        ['blocks', 20],
        ['extent', 12],
        ['span', 18],
        ['tail', 6],
        ['empty', 2],
        ['whole', 3],
        ['boundary', 14],
      ])
    ) {
      case 'tiny':
        return clamp(r.int(sizeBytes), r.range(1, 600));
      case 'blocks': {
        const blocks = Math.max(1, Math.floor(sizeBytes / blockBytes));
        return clamp(r.int(blocks) * blockBytes, r.range(1, 4) * blockBytes);
      }
      case 'extent': {
        const extents = Math.ceil(sizeBytes / extentBytes);
        return clamp(r.int(extents) * extentBytes, r.range(1, 2) * extentBytes);
      }
      case 'span':
        return clamp(r.int(sizeBytes), r.range(1, Math.floor(2.5 * extentBytes)));
      case 'tail': {
        // The last byte, or a short range ending exactly at the end of the volume.
        const length = r.chance(0.5) ? 1 : r.range(1, Math.min(sizeBytes, 3 * blockBytes));
        return { offset: sizeBytes - length, length };
      }
      case 'empty':
        return { offset: r.int(sizeBytes + 1), length: 0 };
      case 'whole':
        return { offset: 0, length: sizeBytes };
      default: {
        // Straddles an extent boundary by a few bytes either side.
        const extents = Math.ceil(sizeBytes / extentBytes);
        const boundary = r.range(1, Math.max(1, extents - 1)) * extentBytes;
        return clamp(Math.max(0, boundary - r.range(1, 300)), r.range(2, 600));
      }
    }
  }

  private data(length: number): Uint8Array {
    const r = this.rng;
    const kind = r.weighted<string>([
      ['random', 80],
      ['zeros', 8],
      ['fill', 12],
    ]);
    if (kind === 'zeros') return new Uint8Array(length);
    if (kind === 'fill') return new Uint8Array(length).fill(r.range(1, 255));
    return r.bytes(length);
  }

  next(): Op {
    const r = this.rng;
    const kind = r.weighted<Op['kind']>([
      ['write', 34],
      ['read', 26],
      ['trim', 5],
      ['zero', 5],
      ['flush', 11],
      ['status', 4],
      ['crash', 4],
      ['probe', 3],
    ]);
    switch (kind) {
      case 'write': {
        const { offset, length } = this.range();
        return { kind, offset, data: this.data(length), fua: r.chance(0.12) };
      }
      case 'read':
      case 'status':
        return { kind, ...this.range() };
      case 'trim':
        return { kind, ...this.range(), fua: r.chance(0.15) };
      case 'zero':
        return { kind, ...this.range(), noHole: r.chance(0.5), fua: r.chance(0.15) };
      default:
        return { kind };
    }
  }

  /** Simulated milliseconds the client waits before its next operation. */
  thinkMs(): number {
    const r = this.rng;
    switch (
      r.weighted<string>([
        ['none', 35],
        ['short', 40],
        ['long', 18],
        ['idle', 7],
      ])
    ) {
      case 'none':
        return 0;
      case 'short':
        return r.range(1, 50);
      case 'long':
        return r.range(100, 2000);
      default:
        return r.range(2000, 10_000);
    }
  }
}
